"""
GRPO for Skywork-R1V3 (paper §3.3, eqs. 4-7; ablations §5.2-5.5), by hand on torch.distributed.

    torchrun --nproc_per_node=8 grpo.py config/grpo_38b.py      # one node (a 38B run wants two)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
        grpo.py config/grpo_38b.py
    python grpo.py config/grpo_demo.py --steps=20    # CPU, tiny model, model.generate rollouts
    ... --resume                                     # continue exactly from out_dir's last step

One step (the paper's "episode"), the loop in main:
  1. P prompts, the same global list on every rank; rank r owns list positions r, r+W, r+2W, ... and
     samples their n rollouts, so every group lives whole on one rank (colocated vLLM, or model.generate),
     and rewards them (rewards.py, eqs. 1-3); dynamic sampling (§5.5) drops groups whose rewards are all
     equal and samples more prompts until P groups are left
  2. group-normalised advantages (eq. 6)
  3. the clipped surrogate (eq. 7) over mini-batches x PPO epochs, AdamW, gradient clipping
  4. the updated trainable weights go into the sampler (vLLM, or builtin's bf16 copy)
  5. metrics (metrics.jsonl + W&B), a progress line with ETA, an atomic checkpoint every save_every steps

Loss normalisation is global and exact. Eq. 7 is a mean over the mini-batch's sequences of a
per-sequence token mean ("seq-mean-token-mean", the paper's 1/|y| and 1/M) or, as an option, a mean
over all its tokens ("token-mean"). Each micro-batch contributes  sum(its terms) / N  where N, the
number of sequences (or tokens) in the whole mini-batch over all ranks, is all-reduced before the
first micro-batch. FSDP averages gradients over ranks, so the loss is multiplied by the world size.
The gradient is therefore the same for any world size and any micro-batch size (tests/test_grpo.py
checks 2 ranks against 1 process with other micro-batches).

The ratio is exactly 1 with the paper's settings: one mini-batch (32 prompts x 32 rollouts) and one
epoch means pi_old is the current policy, so old log-probs are the training forward's own, detached,
and the clip never acts (the update is REINFORCE with group-normalised advantages). The extra
no-grad old-log-prob pass only runs with mini_batches > 1 or ppo_epochs > 1, where clip and
clip-higher matter.

Mini-batch k holds the groups at global positions k, k+K, ... (the same split for any world size).
Under FSDP every rank must run the same number of forward/backward passes, so a rank with fewer
micro-batches runs dummy ones with loss weight 0.

Resume is exact: a checkpoint (train_utils.save_checkpoint) holds the weights in the model.py format
(loadable by model.py, eval.py and vLLM), every rank's AdamW shard and RNG state, the curriculum
stage and the data position. The LR is a pure function of the step (train_utils.lr_at), and the
builtin sampler draws from a generator seeded by (seed, step, round, rank), so N steps == N/2 steps
+ --resume + N/2 steps, bit for bit. (vLLM sampling is not bit-reproducible, verl#1683.)

Everything runs in eval mode: there is no dropout in R1V3, and drop-path in the ViT would make
pi_old and pi_theta different functions of the same weights.
"""
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as tdist

import data
import rewards
import sampling
import train_utils as tu
from entropy import (DEFAULT_CRITICAL_WORDS, critical_mask, critical_token_sequences,
                     entropy_metrics,
                     token_logprobs_and_entropy)
from model import ModelConfig, load_tokenizer

# -----------------------------------------------------------------------------
# config: paper values are the defaults (section numbers of the paper); config/grpo_38b.py is the full run


@dataclass
class Config:
    # model and data
    # the cold-start SFT checkpoint (§3.2), model.py format with its tokenizer
    init_from: str = "out/sft"
    # records JSONL or the K12 json (data.read_records)
    data: str = "../shared/data/mm-eureka-k12/k12.json"
    # §5.3: [(data, first_step), ...] replaces data
    curriculum: list[tuple[str, int]] = field(default_factory=list)
    out_dir: str = "out/grpo"
    resume: bool = False                # continue from the last checkpoint in out_dir
    # resume although the model, data or a run-defining setting changed
    allow_run_change: bool = False
    steps: int = 300                    # episodes; the paper does not give its count
    # rollouts: "each episode samples 1,024 rollouts, with 32 verifier-rewarded samples per prompt" (§3.3)
    prompts_per_step: int = 32
    rollouts_per_prompt: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    response_length_schedule: list[tuple[int, int]] = field(default_factory=lambda: [(0, 4096)])
    # ^ [(first_step, max response tokens)]: §3.3 grows it "from 4,096 to 8,192" (the step is not given)
    # longer prompts (image tokens included) are skipped and counted ...
    max_prompt_tokens: int = 4096
    skip_long_prompts: bool = True      # ... or, when False, an error naming the record
    mode: Literal["think", "nothink"] = "think"   # generation prompt opens <think> (§6.2)
    system_prompt: str = ""
    # image tiles per image; 0 = the model config's max_dynamic_patch
    max_tiles: int = 0
    # reward (§3.1): R = 0.8 R_accuracy + 0.2 R_format
    accuracy_weight: float = 0.8
    # R_theta of eq. 2 (OpenAI-compatible endpoint); rule-only when empty
    verifier_url: str = ""
    reward_workers: int = 2             # Math-Verify processes per rank (0 = in-process)
    # advantage and loss (eqs. 6-7)
    adv_eps: float = 1e-6               # eq. 6 denominator std + eps (verl's value)
    adv_scale_by_std: bool = True       # False: A = r - mean (Dr. GRPO)
    # eq. 7's 1/|y| per sequence
    loss_agg: Literal["seq-mean-token-mean", "token-mean"] = "seq-mean-token-mean"
    clip_eps_low: float = 0.2           # §3.3 clip 0.2
    clip_eps_high: float = 0.2          # §5.5 clip-higher: raise it (DAPO uses 0.28)
    # §3.3: "no KL divergence penalty"; > 0 loads a frozen reference model
    kl_beta: float = 0.0
    dynamic_sampling: bool = False      # §5.5: drop zero-variance groups, refill from new prompts
    max_sampling_rounds: int = 3        # rollout rounds per step at most when refilling
    # optimizer steps per epoch; §3.3: mini-batch 32 prompts = 1 step/episode
    mini_batches: int = 1
    ppo_epochs: int = 1
    # sequences per forward/backward on each rank (memory only, not the math)
    micro_batch_size: int = 2
    # > 0: prompt+response tokens per forward instead (next-fit, data order)
    micro_batch_tokens: int = 0
    # a micro-batch is one row without padding (position ids restart per
    packing: bool = True
                                        # sequence, no attention mask); False: right-padded rows with a mask
    # optimizer (§3.3 lr 1e-5; §5.4 compares 1e-6)
    lr: float = 1e-5
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    # verl's actor default (the paper trains with verl and does not say)
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    # §3.3 / §5.2 / Fig. 6
    trainable: list[str] = field(default_factory=lambda: ["vision", "connector", "llm"])
    # engines
    # auto: vllm when importable with a GPU
    rollout_backend: Literal["auto", "vllm", "builtin"] = "auto"
    rollout_batch_size: int = 64        # builtin: sequences per model.generate call
    rollout_dtype: Literal["auto", "bfloat16", "policy"] = "auto"
    # ^ builtin, one process: "bfloat16" samples from a bf16 copy of the policy refreshed after every optimizer
    #   step, "policy" from the policy itself (on one GPU a one-rank FSDP2 model that re-casts every weight at
    #   every decode step); auto: bfloat16 on one GPU with dtype=bfloat16, policy elsewhere
    vllm_tensor_parallel_size: int = 1
    # vLLM shares the GPUs with the sharded policy and its optimizer
    vllm_gpu_memory_utilization: float = 0.5
    vllm_max_images: int = 8            # limit_mm_per_prompt
    # compute dtype on GPU (fp32 master weights); CPU is fp32
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    activation_checkpointing: bool = False
    logprob_chunk_size: int = 1024      # rows of [rows, vocab] fp32 logits alive at once
    # logging and checkpoints
    save_every: int = 50
    keep_last: int = 3
    wandb_project: str = "skywork-r1v3-grpo"
    run_name: str = "grpo"
    critical_words: list[str] = field(default_factory=lambda: list(DEFAULT_CRITICAL_WORDS))   # §5.1
    # the thinking says it cannot see the image
    blind_phrases: list[str] = field(default_factory=lambda: [
        "can't see the image", "cannot see the image", "can not see the image",
                                                              "unable to see the image",
        "don't see the image", "do not see the image", "can't view the image",
                                                              "cannot view the image",
        "no image provided", "image is not provided", "image was not provided",
                                                              "image isn't provided",
        "without the image", "without seeing the image", "image is not available",
                                                              "not able to see the image",
        "don't have access to the image", "do not have access to the image",
                                                              "no image is attached"])
    seed: int = 1337


# settings a resume may change; every other field, the data files' contents and the model config define the run
# (train_utils.describe_run). steps is the stop point: with lr_schedule="cosine" a new value reshapes the LR from here
MAY_CHANGE = ("init_from", "data", "curriculum", "out_dir", "resume", "allow_run_change", "steps",
              "save_every",
              "keep_last", "wandb_project", "run_name", "micro_batch_size", "rollout_batch_size",
              "logprob_chunk_size",
              "activation_checkpointing", "rollout_backend", "vllm_tensor_parallel_size",
              "vllm_gpu_memory_utilization", "vllm_max_images", "reward_workers")

# -----------------------------------------------------------------------------
# advantages and loss (eqs. 6-7)


def group_advantages(rewards, eps=1e-6, scale_by_std=True):
    """rewards [G, n] (n rollouts of each of G prompts) -> advantages [G, n]. eq. 6: A = (r -
    mean(group)) / (std(group) + eps), std unbiased as in verl; scale_by_std=False: r - mean. A
    group whose rewards are all equal gets A = 0: it carries no signal (dynamic sampling drops it)."""
    if rewards.shape[1] < 2:
        raise ValueError(f"group advantages need >= 2 rollouts per prompt, got {rewards.shape[1]}")
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale_by_std:
        return centered
    return centered / (rewards.std(dim=1, keepdim=True) + eps)


def policy_loss(logp, old_logp, advantages, mask, normaliser, agg="seq-mean-token-mean",
                clip_low=0.2,
                clip_high=0.2, ref_logp=None, beta=0.0):
    """eq. 7 for one micro-batch, as its share of the mini-batch's loss. logp, old_logp, ref_logp [B,
    T]: log-probs of the response tokens under pi_theta, pi_old, pi_ref; advantages [B] (one per
    sequence, every token gets it); mask [B, T] (1 = response token); normaliser: sequences
    ("seq-mean-token-mean") or tokens ("token-mean") of the WHOLE mini-batch on all ranks, so that
    summing the returned loss over micro-batches and ranks gives the mini-batch mean exactly.
    Returns (loss, stats) with stats as sums (clipped tokens, approx-KL, KL to the reference,
    tokens)."""
    mask = mask.to(logp.dtype)
    # verl's guard: exp() stays finite after a wild update
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)
    ratio = log_ratio.exp()
    adv = advantages[:, None].to(logp.dtype)
    # clip-higher (§5.5): the ratio of a token with A > 0 may rise to 1 + clip_high before its gradient stops
    surrogate = torch.min(ratio * adv, ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * adv)
    per_token = -surrogate
    kl_ref = torch.zeros_like(logp)
    if beta > 0:
        # D in eq. 7 as the k3 estimator (GRPO, Shao et al. 2024): exp(ref - logp) - (ref - logp) - 1 >= 0,
        # whose expectation under pi_theta is KL(pi_theta || pi_ref)
        delta = ref_logp - logp
        kl_ref = delta.exp() - delta - 1.0
        per_token = per_token + beta * kl_ref
    if agg == "seq-mean-token-mean":   # 1/|y_ij| sum_t, then the mean over sequences (eq. 7)
        total = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum()
    # every token of the mini-batch weighs the same (DAPO / verl default)
    elif agg == "token-mean":
        total = (per_token * mask).sum()
    else:
        raise ValueError(f"loss_agg {agg!r} is not seq-mean-token-mean or token-mean")
    with torch.no_grad():
        clipped = ((adv > 0) & (ratio > 1.0 + clip_high)) | ((adv < 0) & (ratio < 1.0 - clip_low))
        stats = {"clipped": float((clipped * mask).sum()),
                 # k3 of pi_old vs pi_theta
                 "approx_kl": float((((ratio - 1.0) - log_ratio) * mask).sum()),
                 "kl_ref": float((kl_ref * mask).sum()), "tokens": float(mask.sum())}
    return total / normaliser, stats


def value_at(step, schedule):
    """schedule [(first_step, value), ...] sorted by step -> the value in force at `step` (length
    schedule)."""
    return [value for first, value in schedule if first <= step][-1]


def stage_at(step, stages):
    """stages [(data, first_step), ...] -> index of the curriculum stage in force at `step` (§5.3)."""
    return [i for i, (_, first) in enumerate(stages) if first <= step][-1]

# -----------------------------------------------------------------------------
# data: every prompt is encoded once at startup, so bad records fail before the first step


def load_stage_records(path, tokenizer, model_config, cfg, dist):
    """Records of one data file, minus the prompts longer than max_prompt_tokens. Every prompt is
    encoded once here (ranks share the work), which also checks every image: a missing or unreadable
    one names its path."""
    records = data.read_records(path)
    if not records:
        raise ValueError(f"{path}: no records")
    too_long = [r.id for r in records[dist.rank::dist.world_size]
                if encode(tokenizer, model_config, r, cfg) is None]
    if dist.world_size > 1:
        gathered = [None] * dist.world_size
        tdist.all_gather_object(gathered, too_long)
        too_long = [i for part in gathered for i in part]
    if too_long and not cfg.skip_long_prompts:
        where = next(r.where for r in records if r.id == too_long[0])
        raise ValueError(f"{where}: prompt of record {too_long[0]!r} is longer than max_prompt_tokens="
                         f"{cfg.max_prompt_tokens} ({len(too_long)} such records in {path}); "
                         f"raise it or set skip_long_prompts=True")
    skipped = set(too_long)
    kept = [r for r in records if r.id not in skipped]
    if len(kept) < cfg.prompts_per_step:
        raise ValueError(f"{path}: {len(kept)} usable records (of {len(records)}) < prompts_per_step "
                         f"{cfg.prompts_per_step}")
    if dist.is_main:
        print(f"{path}: {len(kept)} records, {len(skipped)} skipped (prompt > {cfg.max_prompt_tokens} tokens)")
    return kept, len(skipped)


def encode(tokenizer, model_config, record, cfg):
    return data.encode_prompt(tokenizer, model_config, record, mode=cfg.mode,
                              system=cfg.system_prompt or None,
                              max_prompt_tokens=cfg.max_prompt_tokens or None,
                              max_tiles=cfg.max_tiles or None)

# -----------------------------------------------------------------------------
# one step's pieces: a sampling round, micro-batches and their log-probs, metric sums


@dataclass
class Run:
    """What every step uses, built once by main (tests build their own)."""
    cfg: Config
    dist: tu.Dist
    tokenizer: object
    model_config: ModelConfig
    # sampling.make_sampler's, or a hook with its interface (sample, ranks, sleep, ...)
    sampler: object
    reward_fn: object    # (texts, records) -> [{"reward", "accuracy", "format"}]


def sample_groups(run, step, round_, records, indices, max_tokens):
    """One sampling round over the step's P prompts (records[indices[pos]], pos = 0..P-1): the groups
    this rank owns, each n sample dicts with their rewards (eqs. 1-3), and the seconds spent
    sampling and scoring."""
    cfg, dist, ranks = run.cfg, run.dist, run.sampler.ranks
    # the prompts of my sampler's ranks (vLLM: the engine's; builtin: mine), mine among them
    served = [pos for r in ranks for pos in range(r, cfg.prompts_per_step, dist.world_size)]
    prompts = [dict(encode(run.tokenizer, run.model_config, records[indices[pos]], cfg),
                    id=records[indices[pos]].id) for pos in served]
    t0 = time.time()
    # one seed per engine: tp workers agree
    seed = cfg.seed + 1_000_003 * step + 7919 * round_ + ranks[0]
    outputs = run.sampler.sample(prompts, cfg.rollouts_per_prompt, max_tokens, seed=seed)
    rollout_s = time.time() - t0
    groups = []
    for pos, prompt, outs in zip(served, prompts, outputs):
        if pos % dist.world_size == dist.rank:
            groups.append([{"pos": pos, "record": records[indices[pos]],
                            "prompt_ids": prompt["input_ids"],
                            "pixel_values": prompt["pixel_values"], "response_ids": o["token_ids"],
                            "rollout_logprobs": o["logprobs"],
                            "truncated": o["finish_reason"] == "length",
                            "text": run.tokenizer.decode(o["token_ids"], skip_special_tokens=False)}
                           for o in outs])
    t0 = time.time()
    samples = [s for g in groups for s in g]
    scores = run.reward_fn([s["text"] for s in samples], [s["record"] for s in samples])
    for s, score in zip(samples, scores):
        s.update(reward=float(score["reward"]), accuracy=float(score.get("accuracy", 0.0)),
                 format=float(score.get("format", 0.0)))
    return groups, rollout_s, time.time() - t0


def first_groups(groups, count, dist):
    """Dynamic sampling keeps exactly `count` groups over all ranks, the first ones in rank order;
    their positions are renumbered in that order (mini-batches split by position)."""
    counts = [len(groups)]
    if dist.world_size > 1:
        counts = [0] * dist.world_size
        tdist.all_gather_object(counts, len(groups))
    before = sum(counts[:dist.rank])
    groups = groups[:max(0, count - before)]
    for j, group in enumerate(groups):
        for s in group:
            s["pos"] = before + j
    return groups


def micro_batches(samples, cfg, dist, pad_id):
    """Chunks of micro_batch_tokens tokens (next-fit in order) when > 0, else of micro_batch_size
    sequences. Under FSDP every rank must run the same number of forward/backward passes, so a rank
    with fewer chunks runs dummy ones (one 2-token sequence, loss weight 0)."""
    if cfg.micro_batch_tokens > 0:
        lengths = [len(s["prompt_ids"]) + len(s["response_ids"]) for s in samples]
        groups = data.token_budget_groups(lengths, cfg.micro_batch_tokens)
        chunks = [[samples[i] for i in g] for g in groups]
    else:
        size = cfg.micro_batch_size
        chunks = [samples[i:i + size] for i in range(0, len(samples), size)]
    count = int(tu.all_reduce_max(float(len(chunks)), dist))
    dummy = {"prompt_ids": [pad_id], "response_ids": [pad_id], "pixel_values": None,
             "advantage": 0.0,
             "dummy": True}
    return chunks + [[dummy]] * (count - len(chunks))


def sequence_logprobs(model, samples, pad_id, image_size, chunk_size, with_grad, packing=True):
    """One forward over prompt + response of each sample -> (logp, entropy, mask) [B, L] over response
    tokens. packing: the sequences are one row [1, sum of lengths] with position ids restarting at
    each (data.pack_samples; transformers keeps them apart), else right-padded rows [B, T] with an
    attention mask. The same numbers. Log-probs come from the final hidden states through lm_head in
    chunks (entropy.py): no [N, V] fp32 logits."""
    device = next(model.parameters()).device
    seqs = [{"input_ids": s["prompt_ids"] + s["response_ids"], "pixel_values": s["pixel_values"]}
            for s in samples]
    lengths = [len(s["response_ids"]) for s in samples]
    if packing:
        total = sum(len(s["input_ids"]) for s in seqs)
        batch = data.pack_samples(seqs, total, pad_id, image_size)
        attention_mask, position_ids = None, batch["position_ids"].to(device)
        starts = [0] + torch.tensor([len(s["input_ids"]) for s in seqs]).cumsum(0).tolist()[:-1]
        # every sequence in row 0 ...
        rows = torch.zeros(sum(lengths), dtype=torch.long, device=device)
    else:
        batch = data.collate_right_padded(seqs, pad_id, image_size)
        attention_mask, position_ids = batch["attention_mask"].to(device), None
        starts = [0] * len(seqs)
        rows = torch.tensor([i for i, n in enumerate(lengths) for _ in range(n)], device=device)
    to_device = lambda t: None if t is None else t.to(device)
    hidden = model(batch["input_ids"].to(device), pixel_values=to_device(batch["pixel_values"]),
                   image_flags=to_device(batch["image_flags"]), attention_mask=attention_mask,
                   position_ids=position_ids, return_hidden=True)   # [B|1, T, D]
    # ... from its start: the state at position start + P + t - 1 predicts response token t (prompt length P)
    cols = torch.tensor([start + len(s["prompt_ids"]) - 1 + t for start, s in zip(starts, samples)
                         for t in range(len(s["response_ids"]))], dtype=torch.long, device=device)
    targets = torch.tensor([t for s in samples for t in s["response_ids"]], device=device)
    # FSDP2 leaves the root group (lm_head) unsharded from forward to the end of backward; should it be a
    # shard, full_tensor() gathers it, differentiably
    weight = sampling.full_tensor(model.language_model.get_output_embeddings().weight)   # [V, D]
    logp, ent = token_logprobs_and_entropy(hidden[rows, cols], weight, targets, chunk_size,
                                           with_grad=with_grad)   # [N], [N]
    mask = torch.arange(max(lengths), device=device)[None, :] < torch.tensor(lengths,
                                                                             device=device)[:, None]
    logp = logp.new_zeros(mask.shape).masked_scatter(mask, logp)   # [B, L], differentiable
    ent = ent.detach().new_zeros(mask.shape).masked_scatter(mask, ent.detach())
    return logp, ent, mask


def old_and_ref_logprobs(run, model, ref_model, minis):
    """pi_old (when mini_batches > 1 or ppo_epochs > 1) and pi_ref (kl_beta > 0) log-probs of every
    sample, from a no-grad pass before any update: s["old_logp"], s["ref_logp"] [len(response)]."""
    cfg, pad_id, size = run.cfg, run.tokenizer.pad_token_id, run.model_config.force_image_size
    nets = ([("old_logp", model)] if cfg.mini_batches > 1 or cfg.ppo_epochs > 1 else []) + \
        ([("ref_logp", ref_model)] if ref_model is not None else [])
    with torch.no_grad():
        for mini in minis:
            for micro in micro_batches(mini, cfg, run.dist, pad_id):
                for key, net in nets:
                    logp = sequence_logprobs(net, micro, pad_id, size, cfg.logprob_chunk_size,
                                             False,
                                             cfg.packing)[0]
                    for i, s in enumerate(micro):
                        s[key] = logp[i, :len(s["response_ids"])]


def padded(rows, mask):
    """per-sample 1-D tensors (or None -> 0) -> [B, L] aligned with mask."""
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    for i, row in enumerate(rows):
        if row is not None:
            out[i, :len(row)] = row.to(out.device)
    return out


# per-rank sums behind the step's metrics; all-reduced as one vector, so every rank lists the same keys
SAMPLE_SUMS = ("groups", "zero_var_groups", "rollouts", "reward", "reward_sq", "accuracy", "format",
               "response_tokens", "prompt_tokens", "truncated", "blind")
TRAIN_SUMS = ("loss", "clipped", "approx_kl", "kl_ref", "tokens", "ent_sum", "ent_high",
              "ent_tokens",
              "crit_sum", "crit_count", "lp_diff", "lp_diff_tokens", "groups_trained")


def add_sample_sums(sums, groups, blind_phrases):
    """Sums over every sampled rollout (dropped groups included) for reward/*, response/*."""
    blind = re.compile("|".join(re.escape(p.lower()) for p in blind_phrases)) if blind_phrases else None
    for group in groups:
        sums["groups"] += 1
        sums["zero_var_groups"] += len({s["reward"] for s in group}) == 1
        for s in group:
            thinking = s["text"].split("</think>")[0].lower().replace("\u2019", "'")
            for key in ("reward", "accuracy", "format", "truncated"):
                sums[key] += s[key]
            sums["rollouts"] += 1
            sums["reward_sq"] += s["reward"] ** 2
            sums["response_tokens"] += len(s["response_ids"])
            sums["prompt_tokens"] += len(s["prompt_ids"])
            # "I can't see the image", thinking
            sums["blind"] += bool(blind and blind.search(thinking))
            sums["response_max"] = max(sums["response_max"], len(s["response_ids"]))


def add_train_sums(sums, micro, forward, critical_seqs):
    """Sums of the first visit of each sample (epoch 0): the entropy of pi (§5.1) from the training
    forward (logp, ent, mask) itself, and the train/inference mismatch of the sampled tokens'
    log-probs."""
    logp, ent, mask = forward
    response = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
    response[mask] = torch.tensor([t for s in micro for t in s["response_ids"]], device=mask.device)
    em = entropy_metrics(ent, mask, critical_mask(response, critical_seqs))
    sums["ent_sum"] += em["mean_token_entropy"] * em["num_tokens"]
    sums["ent_high"] += em["high_entropy_frac"] * em["num_tokens"]
    sums["ent_tokens"] += em["num_tokens"]
    if em["critical_count"]:
        sums["crit_sum"] += em["critical_entropy_mean"] * em["critical_count"]
        sums["crit_count"] += em["critical_count"]
    for i, s in enumerate(micro):
        if len(s["rollout_logprobs"]) == len(s["response_ids"]):
            sampled = torch.tensor(s["rollout_logprobs"], device=logp.device)
            sums["lp_diff"] += float((logp[i, :len(sampled)].detach() - sampled).abs().sum())
            sums["lp_diff_tokens"] += len(sampled)


def step_metrics(sums, last, dist, info):
    """The step's metrics from this rank's sums (all-reduced here), the last optimizer step's values
    and `info` (data/*, time/*, already final). reward/* and response/* cover every rollout sampled
    this step, train/* the update."""
    local = torch.tensor([sums[k] for k in SAMPLE_SUMS + TRAIN_SUMS], dtype=torch.float64,
                         device=dist.device)
    g = dict(zip(SAMPLE_SUMS + TRAIN_SUMS, tu.all_reduce_sum(local, dist).tolist()))
    div = lambda a, b: a / b if b else float("nan")
    n, mean = g["rollouts"], g["reward"] / g["rollouts"]
    tokens_per_s = (g["response_tokens"] + g["prompt_tokens"]) / info["time/step"]
    return {
        "reward/mean": mean, "reward/std": math.sqrt(max(0.0, g["reward_sq"] / n - mean ** 2)),
        "reward/accuracy": g["accuracy"] / n, "reward/format": g["format"] / n,
        "reward/zero_var_groups": g["zero_var_groups"] / g["groups"],
        "response/len_mean": g["response_tokens"] / n,
        "response/len_max": tu.all_reduce_max(float(sums["response_max"]), dist),
        "response/truncated": g["truncated"] / n, "response/blind_phrase_rate": g["blind"] / n,
        "train/loss": g["loss"], "train/clip_frac": div(g["clipped"], g["tokens"]),
        "train/approx_kl": div(g["approx_kl"], g["tokens"]), "train/kl_ref": div(g["kl_ref"],
                                                                                 g["tokens"]),
        "train/grad_norm": last["grad_norm"], "train/lr": last["lr"],
            "train/skipped_updates": last["skipped"],
        "train/rollout_logprob_diff": div(g["lp_diff"], g["lp_diff_tokens"]),
        "entropy/mean": div(g["ent_sum"], g["ent_tokens"]),
        "entropy/high_frac": div(g["ent_high"], g["ent_tokens"]),
        "entropy/critical": div(g["crit_sum"], g["crit_count"]),
            "entropy/critical_count": g["crit_count"],
        **{k: v for k, v in info.items() if k.startswith("data/")},
        "data/sampling_rounds": sums["rounds"], "data/groups_trained": g["groups_trained"],
        **{k: v for k, v in info.items() if k.startswith("time/")},
        "perf/tokens_per_s": tokens_per_s,
            "perf/tokens_per_s_per_rank": tokens_per_s / dist.world_size,
    }


# -----------------------------------------------------------------------------


def check_config(cfg, world):
    P, K = cfg.prompts_per_step, cfg.mini_batches
    if P % world:
        raise ValueError(f"prompts_per_step {P} must be a multiple of the world size {world} (groups stay whole)")
    if cfg.rollouts_per_prompt < 2:
        raise ValueError(f"rollouts_per_prompt must be >= 2 for group advantages, got {cfg.rollouts_per_prompt}")
    if P % K:
        raise ValueError(f"prompts_per_step {P} must be a multiple of mini_batches {K}")
    for name, schedule in (("response_length_schedule", [(s, v) for s,
                                                         v in cfg.response_length_schedule]),
                           ("curriculum", [(s, d) for d, s in cfg.curriculum])):
        if schedule and (schedule[0][0] != 0 or [s for s, _ in schedule] != sorted(s for s,
                                                                                   _ in schedule)):
            raise ValueError(f"{name} must start at step 0 and be sorted by step, got {schedule}")


def rollout_sampler(cfg, dist, model, tokenizer, checkpoint):
    """sampling.make_sampler with this config. builtin, one process: rollout_dtype "bfloat16" samples a bf16
    copy of the policy (auto: on one GPU in bf16)."""
    one_gpu_bf16 = dist.device.type == "cuda" and dist.world_size == 1 and cfg.dtype == "bfloat16"
    longest = max(tokens for _, tokens in cfg.response_length_schedule)
    return sampling.make_sampler(
        cfg.rollout_backend, tokenizer, checkpoint, model, dist, temperature=cfg.temperature,
        top_p=cfg.top_p, seed=cfg.seed, batch_size=cfg.rollout_batch_size,
        bf16_copy=cfg.rollout_dtype == "bfloat16" or (cfg.rollout_dtype == "auto" and one_gpu_bf16),
        tensor_parallel_size=cfg.vllm_tensor_parallel_size, max_tiles=cfg.max_tiles,
        gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, max_images=cfg.vllm_max_images,
        max_model_len=cfg.max_prompt_tokens + longest)


def main(cfg, sampler=None, reward_fn=None):
    """The training run. Hooks for tests and forks: sampler (sampling.py's interface, with ranks, sleep
    and update_weights) and reward_fn(texts, records) -> [{"reward", "accuracy", "format"}]
    (default: rewards.score_batch, eqs. 1-3). Returns the per-step metrics (the same on every rank)."""
    # joins the process group when it is up already (several runs, one launch)
    dist = tu.setup_distributed()
    if dist.is_main:
        tu.print_config(cfg)
    existing = tu.find_last_checkpoint(cfg.out_dir)
    # starting over would mix two runs' checkpoints and metrics
    if existing is not None and not cfg.resume:
        raise ValueError(f"{cfg.out_dir} already has checkpoints ({existing.name}): "
                         f"pass --resume or another out_dir")
    if dist.is_main:
        # a partial checkpoint of a crash (on a full disk it blocks the resume)
        tu.remove_debris(cfg.out_dir)
    if not (Path(cfg.init_from) / "config.json").is_file():
        raise FileNotFoundError(f"init_from={cfg.init_from!r} has no config.json: give a model.py checkpoint "
                                f"dir (with its tokenizer), e.g. sft.py's out_dir/step_NNNNNN")
    check_config(cfg, dist.world_size)
    P, K, E = cfg.prompts_per_step, cfg.mini_batches, cfg.ppo_epochs
    tu.set_seed(cfg.seed + dist.rank)
    cuda = dist.device.type == "cuda"
    # bf16 compute through FSDP2's MixedPrecisionPolicy on any number of GPUs (one GPU: a one-rank group,
    # train_utils.wrap_fsdp): weights are cast once per forward, not at every op as under autocast
    param_dtype = torch.bfloat16 if cuda and cfg.dtype == "bfloat16" else None

    tokenizer = load_tokenizer(cfg.init_from)
    model_config = ModelConfig.from_json(Path(cfg.init_from) / "config.json")
    pad_id, image_size = tokenizer.pad_token_id, model_config.force_image_size
    stages = cfg.curriculum or [(cfg.data, 0)]
    loaded = [load_stage_records(path, tokenizer, model_config, cfg, dist) for path, _ in stages]
    stage_records, skipped = [records for records, _ in loaded], sum(n for _, n in loaded)

    # built on the meta device and sharded as it loads: a 38B model never exists in full on one rank
    model = tu.load_model_sharded(cfg.init_from, dist, cfg.trainable, param_dtype,
                                  cfg.activation_checkpointing).eval()
    ref_model = None
    if cfg.kl_beta > 0:
        ref_model = tu.load_model_sharded(cfg.init_from, dist, [], param_dtype).eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"trainable={cfg.trainable} leaves nothing to train")
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=cfg.betas,
                                  weight_decay=cfg.weight_decay)

    state = {"step": 0, "stage": 0, "data_state": (0, 0)}
    run_desc = tu.describe_run(cfg, MAY_CHANGE, [path for path, _ in stages], model_config)
    run_desc["curriculum_steps"] = [first for _, first in stages]
    resume_from = tu.find_resume_checkpoint(cfg.out_dir) if cfg.resume else None
    # weights, Adam moments, RNG, data position; refused if the run changed
    if resume_from is not None:
        state = tu.load_checkpoint(resume_from, model, optimizer, run_desc, cfg.allow_run_change)
        if dist.is_main:
            print(f"resumed from {resume_from} at step {state['step']}")
    logger = tu.RunLogger(cfg.out_dir, cfg, cfg.wandb_project, cfg.run_name, enabled=dist.is_main,
                          resume_step=state["step"] if resume_from is not None else None)
    sampler = sampler or rollout_sampler(cfg, dist, model, tokenizer, resume_from or cfg.init_from)
    if reward_fn is None:
        reward_cfg = rewards.RewardConfig(accuracy_weight=cfg.accuracy_weight,
                                          think_mode=cfg.mode == "think",
                                          verifier_url=cfg.verifier_url,
                                          num_workers=cfg.reward_workers)

        def reward_fn(texts, records):
            return rewards.score_batch(texts, [r.answer for r in records],
                                       [r.options for r in records],
                                       [r.question for r in records], reward_cfg)
    run = Run(cfg, dist, tokenizer, model_config, sampler, reward_fn)
    critical_seqs = critical_token_sequences(tokenizer, cfg.critical_words)
    history = []

    for step in range(state["step"], cfg.steps):
        t_step = time.time()
        stage = stage_at(step, stages)
        if stage != state["stage"]:   # §5.3: a new dataset starts from its own beginning
            state.update(stage=stage, data_state=(0, 0))
        records, max_tokens = stage_records[stage], value_at(step, cfg.response_length_schedule)
        sums = dict.fromkeys(SAMPLE_SUMS + TRAIN_SUMS + ("rollout_s", "reward_s", "rounds",
                                                         "response_max"), 0.0)

        # 1. rollouts and rewards (eqs. 1-3). §5.5 dynamic sampling: a group whose rollouts all got the same
        # reward has A = 0 everywhere; drop it and sample new prompts until P groups are left
        groups = []
        with torch.no_grad():
            for round_ in range(cfg.max_sampling_rounds if cfg.dynamic_sampling else 1):
                indices, state["data_state"] = data.next_batch(len(records), P,
                                                               cfg.seed + 1000 * stage,
                                                               state["data_state"])
                new, rollout_s, reward_s = sample_groups(run, step, round_, records, indices,
                                                         max_tokens)
                add_sample_sums(sums, new, cfg.blind_phrases)
                sums.update(rollout_s=sums["rollout_s"] + rollout_s,
                            reward_s=sums["reward_s"] + reward_s,
                            rounds=sums["rounds"] + 1)
                groups += [g for g in new if not cfg.dynamic_sampling or len({s["reward"] for s in g}) > 1]
                if not cfg.dynamic_sampling or tu.all_reduce_sum(float(len(groups)), dist) >= P:
                    break
        if cfg.dynamic_sampling:
            groups = first_groups(groups, P, dist)

        # 2. group-normalised advantages (eq. 6)
        for group in groups:
            adv = group_advantages(torch.tensor([[s["reward"] for s in group]],
                                                dtype=torch.float64),
                                   cfg.adv_eps, cfg.adv_scale_by_std)[0]
            for s, a in zip(group, adv.tolist()):
                s["advantage"] = a

        # 3. eq. 7 over K mini-batches x E epochs. Mini-batch k holds the groups at global positions k, k+K, ...
        # (the same split for any world size); its normaliser counts sequences or tokens on all ranks
        sampler.sleep()
        t0 = time.time()
        samples = [s for g in groups for s in g]
        minis = [[s for s in samples if s["pos"] % K == k] for k in range(K)]
        count = (lambda ss: float(len(ss))) if cfg.loss_agg == "seq-mean-token-mean" else \
            (lambda ss: float(sum(len(s["response_ids"]) for s in ss)))
        normalisers = [max(1.0, tu.all_reduce_sum(count(m), dist)) for m in minis]
        need_old = K > 1 or E > 1   # else pi_old is the training forward's own, detached: ratio 1
        if need_old or ref_model is not None:
            old_and_ref_logprobs(run, model, ref_model, minis)
        sums["groups_trained"] = float(len(groups))
        for epoch in range(E):
            for k, mini in enumerate(minis):
                for micro in micro_batches(mini, cfg, dist, pad_id):
                    forward = sequence_logprobs(model, micro, pad_id, image_size,
                                                cfg.logprob_chunk_size,
                                                True, cfg.packing)
                    logp, _, mask = forward
                    old = padded([s.get("old_logp") for s in micro],
                                 mask) if need_old else logp.detach()
                    ref = padded([s.get("ref_logp") for s in micro],
                                 mask) if ref_model is not None else None
                    adv = torch.tensor([s["advantage"] for s in micro], device=logp.device)
                    loss, stats = policy_loss(logp, old, adv, mask, normalisers[k], cfg.loss_agg,
                                              cfg.clip_eps_low, cfg.clip_eps_high, ref, cfg.kl_beta)
                    dummy = micro[0].get("dummy", False)
                    # FSDP averages gradients over ranks; the world size makes it the sum eq. 7 needs
                    (loss * (0.0 if dummy else dist.world_size)).backward()
                    if dummy:
                        continue
                    for key, value in stats.items():
                        sums[key] += value
                    # summed over ranks: mean per update
                    sums["loss"] += float(loss.detach()) / (K * E)
                    if epoch == 0:
                        add_train_sums(sums, micro, forward, critical_seqs)
                grad_norm = tu.clip_grad_norm(trainable, cfg.grad_clip)
                opt_step = (step * E + epoch) * K + k
                lr = tu.lr_at(opt_step, cfg.steps * K * E, cfg.lr, cfg.warmup_steps,
                              cfg.lr_schedule,
                              cfg.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if math.isfinite(grad_norm):
                    optimizer.step()
                else:   # one bad batch must not poison the weights and Adam moments
                    print(f"step {step}: non-finite grad norm, optimizer step skipped", flush=True)
                optimizer.zero_grad(set_to_none=True)
                last = {"grad_norm": grad_norm, "lr": lr,
                        "skipped": float(not math.isfinite(grad_norm))}
        train_s = time.time() - t0

        # 4. the new weights into the sampler (vLLM; builtin's bf16 copy)
        t0 = time.time()
        sampler.update_weights(model)
        sync_s = time.time() - t0

        # 5. metrics over all ranks, progress, checkpoint
        info = {"data/stage": stage, "data/epoch": state["data_state"][0],
                "data/max_response_tokens": max_tokens, "data/skipped_long_prompts": skipped,
                "time/rollout": sums["rollout_s"], "time/reward": sums["reward_s"],
                "time/train": train_s,
                "time/sync": sync_s, "time/step": time.time() - t_step}
        metrics = step_metrics(sums, last, dist, info)
        history.append(metrics)
        logger.log(step + 1, metrics)
        logger.progress(step + 1, cfg.steps, reward=metrics["reward/mean"],
                        acc=metrics["reward/accuracy"],
                        len=metrics["response/len_mean"], entropy=metrics["entropy/mean"])
        state["step"] = step + 1
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            tu.save_checkpoint(cfg.out_dir, step + 1, model, optimizer, model_config, tokenizer,
                               {k: v for k, v in state.items() if k != "step"},
                               keep_last=cfg.keep_last,
                               save_dtype=torch.bfloat16 if cuda else None, run=run_desc)
    logger.finish()
    return history


if __name__ == "__main__":
    main(tu.parse_config(Config))
    tu.cleanup_distributed()
