"""
GRPO for Skywork-R1V3 (paper §3.3, eqs. 4-7; ablations §5.2-5.5), written by hand on torch.distributed.

    torchrun --nproc_per_node=8 grpo.py config/grpo_38b.py              # one node (a 38B run wants two, below)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 grpo.py config/grpo_38b.py
    python grpo.py config/grpo_demo.py --steps=20                         # CPU, tiny model, model.generate rollouts
    ... --resume                                                          # continue exactly from out_dir's last step

One step (the paper's "episode"):
  1. P prompts, the same global list on every rank; rank r owns list positions r, r+W, r+2W, ... and samples
     their n rollouts, so every group lives whole on one rank (colocated vLLM, or model.generate on CPU)
  2. rewards (rewards.py, eqs. 1-3) and group-normalised advantages (eq. 6); dynamic sampling (§5.5) drops
     groups whose rewards are all equal and samples more prompts until P groups are left
  3. the clipped surrogate (eq. 7) over mini-batches x PPO epochs, AdamW, gradient clipping
  4. the updated trainable weights go into vLLM (nothing to do for model.generate, which samples the policy)
  5. metrics (metrics.jsonl + W&B), a progress line with ETA, an atomic checkpoint every save_every steps

Loss normalisation is global and exact. Eq. 7 is a mean over the mini-batch's sequences of a per-sequence token
mean ("seq-mean-token-mean", the paper's 1/|y| and 1/M) or, as an option, a mean over all its tokens
("token-mean"). Each micro-batch contributes  sum(its terms) / N  where N, the number of sequences (or tokens) in
the whole mini-batch over all ranks, is all-reduced before the first micro-batch. FSDP averages gradients over
ranks, so the loss is multiplied by the world size. The gradient is therefore the same for any world size and
any micro-batch size (tests/test_grpo.py checks 2 ranks against 1 process with other micro-batches).

The ratio is exactly 1 with the paper's settings: one mini-batch (32 prompts x 32 rollouts) and one epoch means
pi_old is the current policy, so old log-probs are the training forward's own, detached, and the clip never
acts (the update is REINFORCE with group-normalised advantages). The extra no-grad old-log-prob pass only runs
with mini_batches > 1 or ppo_epochs > 1, where clip and clip-higher matter.

Mini-batch k holds the groups at global positions k, k+K, ... (the same split for any world size). Under FSDP
every rank must run the same number of forward/backward passes, so a rank with fewer micro-batches runs dummy
ones with loss weight 0.

Resume is exact: a checkpoint (train_utils.save_checkpoint) holds the weights in the model.py format (loadable
by model.py, eval.py and vLLM), every rank's AdamW shard and RNG state, the curriculum stage and the data
position. The LR is a pure function of the step (train_utils.lr_at), and the builtin sampler draws from a
generator seeded by (seed, step, round, rank), so N steps == N/2 steps + --resume + N/2 steps, bit for bit.
(vLLM sampling is not bit-reproducible, verl#1683.)

Everything runs in eval mode: there is no dropout in R1V3, and drop-path in the ViT would make pi_old and
pi_theta different functions of the same weights.
"""
import inspect
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as tdist
from torch.distributed.tensor import DTensor

import data
import rewards
import sampling
import train_utils as tu
from entropy import DEFAULT_CRITICAL_WORDS, HIGH_ENTROPY_THRESHOLD, critical_mask, critical_token_sequences, \
    entropy_metrics, high_entropy_threshold, token_logprobs_and_entropy
from model import ModelConfig, build_model, load_tokenizer, materialize_buffers, set_tensor, tied_lm_head

# -----------------------------------------------------------------------------
# config: paper values are the defaults (section numbers of the paper); config/grpo_38b.py is the full run


@dataclass
class Config:
    # model and data
    init_from: str = "out/sft"          # the cold-start SFT checkpoint (§3.2), model.py format with its tokenizer
    data: str = "../shared/data/mm-eureka-k12/k12.json"   # records JSONL or the K12 json (data.read_records)
    curriculum: list[tuple[str, int]] = field(default_factory=list)   # §5.3: [(data, first_step), ...] replaces data
    out_dir: str = "out/grpo"
    resume: bool = False                # continue from the last checkpoint in out_dir
    allow_run_change: bool = False      # resume although the model, data or a run-defining setting changed
    steps: int = 300                    # episodes; the paper does not give its count
    # rollouts: "each episode samples 1,024 rollouts, with 32 verifier-rewarded samples per prompt" (§3.3)
    prompts_per_step: int = 32
    rollouts_per_prompt: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    response_length_schedule: list[tuple[int, int]] = field(default_factory=lambda: [(0, 4096)])
    # ^ [(first_step, max response tokens)]: §3.3 grows it "from 4,096 to 8,192" (the step is not given)
    max_prompt_tokens: int = 4096       # longer prompts (image tokens included) are skipped and counted ...
    skip_long_prompts: bool = True      # ... or, when False, an error naming the record
    mode: Literal["think", "nothink"] = "think"   # generation prompt opens <think> (§6.2)
    system_prompt: str = ""
    max_tiles: int = 0                  # image tiles per image; 0 = the model config's max_dynamic_patch
    # reward (§3.1): R = 0.8 R_accuracy + 0.2 R_format
    accuracy_weight: float = 0.8
    verifier_url: str = ""              # R_theta of eq. 2 (OpenAI-compatible endpoint); rule-only when empty
    reward_workers: int = 2             # Math-Verify processes per rank (0 = in-process)
    # advantage and loss (eqs. 6-7)
    adv_eps: float = 1e-6               # eq. 6 denominator std + eps (verl's value)
    adv_scale_by_std: bool = True       # False: A = r - mean (Dr. GRPO)
    loss_agg: Literal["seq-mean-token-mean", "token-mean"] = "seq-mean-token-mean"   # eq. 7's 1/|y| per sequence
    clip_eps_low: float = 0.2           # §3.3 clip 0.2
    clip_eps_high: float = 0.2          # §5.5 clip-higher: raise it (DAPO uses 0.28)
    kl_beta: float = 0.0                # §3.3: "no KL divergence penalty"; > 0 loads a frozen reference model
    dynamic_sampling: bool = False      # §5.5: drop zero-variance groups, refill from new prompts
    max_sampling_rounds: int = 3        # rollout rounds per step at most when refilling
    mini_batches: int = 1               # optimizer steps per epoch; §3.3: mini-batch 32 prompts = 1 step/episode
    ppo_epochs: int = 1
    micro_batch_size: int = 2           # sequences per forward/backward on each rank (memory only, not the math)
    micro_batch_tokens: int = 0         # > 0: prompt+response tokens per forward instead (next-fit, data order)
    packing: bool = True                # a micro-batch is one row without padding (position ids restart per
                                        # sequence, no attention mask); False: right-padded rows with a mask
    # optimizer (§3.3 lr 1e-5; §5.4 compares 1e-6)
    lr: float = 1e-5
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01          # verl's actor default (the paper trains with verl and does not say)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    trainable: list[str] = field(default_factory=lambda: ["vision", "connector", "llm"])   # §3.3 / §5.2 / Fig. 6
    # engines
    rollout_backend: Literal["auto", "vllm", "builtin"] = "auto"   # auto: vllm when importable with a GPU
    rollout_batch_size: int = 64        # builtin: sequences per model.generate call
    rollout_dtype: Literal["auto", "bfloat16", "policy"] = "auto"
    # ^ builtin, one process: "bfloat16" samples from a bf16 copy of the policy refreshed after every optimizer
    #   step, "policy" from the policy itself (on one GPU a one-rank FSDP2 model that re-casts every weight at
    #   every decode step); auto: bfloat16 on one GPU with dtype=bfloat16, policy elsewhere
    vllm_tensor_parallel_size: int = 1
    vllm_gpu_memory_utilization: float = 0.5   # vLLM shares the GPUs with the sharded policy and its optimizer
    vllm_max_images: int = 8            # limit_mm_per_prompt
    dtype: Literal["bfloat16", "float32"] = "bfloat16"   # compute dtype on GPU (fp32 master weights); CPU is fp32
    activation_checkpointing: bool = False
    logprob_chunk_size: int = 1024      # rows of [rows, vocab] fp32 logits alive at once
    # logging and checkpoints
    save_every: int = 50
    keep_last: int = 3
    wandb_project: str = "skywork-r1v3-grpo"
    run_name: str = "grpo"
    critical_words: list[str] = field(default_factory=lambda: list(DEFAULT_CRITICAL_WORDS))   # §5.1
    blind_phrases: list[str] = field(default_factory=lambda: list(rewards.UNSEEN_IMAGE_PHRASES))   # in the thinking
    seed: int = 1337


# settings a resume may change; every other field, the data files' contents and the model config define the run
# (train_utils.describe_run). steps is the stop point: with lr_schedule="cosine" a new value reshapes the LR from here
MAY_CHANGE = ("init_from", "data", "curriculum", "out_dir", "resume", "allow_run_change", "steps", "save_every",
              "keep_last", "wandb_project", "run_name", "micro_batch_size", "rollout_batch_size", "logprob_chunk_size",
              "activation_checkpointing", "rollout_backend", "vllm_tensor_parallel_size",
              "vllm_gpu_memory_utilization", "vllm_max_images", "reward_workers")

# -----------------------------------------------------------------------------
# advantages and loss (eqs. 6-7)


def group_advantages(rewards, eps=1e-6, scale_by_std=True):
    """rewards [G, n] (n rollouts of each of G prompts) -> advantages [G, n].
    eq. 6: A = (r - mean(group)) / (std(group) + eps), std unbiased as in verl; scale_by_std=False: r - mean.
    A group whose rewards are all equal gets A = 0: it carries no signal (dynamic sampling drops it)."""
    if rewards.shape[1] < 2:
        raise ValueError(f"group advantages need >= 2 rollouts per prompt, got {rewards.shape[1]}")
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale_by_std:
        return centered
    return centered / (rewards.std(dim=1, keepdim=True) + eps)


def policy_loss(logp, old_logp, advantages, mask, normaliser, agg="seq-mean-token-mean", clip_low=0.2,
                clip_high=0.2, ref_logp=None, beta=0.0):
    """eq. 7 for one micro-batch, as its share of the mini-batch's loss.
    logp, old_logp, ref_logp [B, T]: log-probs of the response tokens under pi_theta, pi_old, pi_ref;
    advantages [B] (one per sequence, every token gets it); mask [B, T] (1 = response token);
    normaliser: sequences ("seq-mean-token-mean") or tokens ("token-mean") of the WHOLE mini-batch on all ranks,
    so that summing the returned loss over micro-batches and ranks gives the mini-batch mean exactly.
    Returns (loss, stats) with stats as sums (clipped tokens, approx-KL, KL to the reference, tokens)."""
    mask = mask.to(logp.dtype)
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)   # verl's guard: exp() stays finite after a wild update
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
    elif agg == "token-mean":          # every token of the mini-batch weighs the same (DAPO / verl default)
        total = (per_token * mask).sum()
    else:
        raise ValueError(f"loss_agg {agg!r} is not seq-mean-token-mean or token-mean")
    with torch.no_grad():
        clipped = ((adv > 0) & (ratio > 1.0 + clip_high)) | ((adv < 0) & (ratio < 1.0 - clip_low))
        stats = {"clipped": float((clipped * mask).sum()),
                 "approx_kl": float((((ratio - 1.0) - log_ratio) * mask).sum()),   # k3 of pi_old vs pi_theta
                 "kl_ref": float((kl_ref * mask).sum()), "tokens": float(mask.sum())}
    return total / normaliser, stats


def value_at(step, schedule):
    """schedule [(first_step, value), ...] sorted by step -> the value in force at `step` (length schedule)."""
    return [value for first, value in schedule if first <= step][-1]


def stage_at(step, stages):
    """stages [(data, first_step), ...] -> index of the curriculum stage in force at `step` (§5.3)."""
    return [i for i, (_, first) in enumerate(stages) if first <= step][-1]

# -----------------------------------------------------------------------------
# rollout engines (sampling.py's samplers and what training needs around them), one interface:
#   ranks                  the ranks whose prompts this engine samples (a vLLM tensor-parallel group: all of them)
#   generate(prompts, n, max_tokens, seed) -> per prompt, n dicts {token_ids, logprobs, finish_reason}
#   sleep()                before the policy update: give the GPU memory back
#   update_weights(model)  after the optimizer step: sample from the new policy from now on


class BuiltinRollout:
    """sampling.BuiltinSampler on the policy (CPU, tests, small models) or, with bf16_copy (one process), on a
    bf16 copy of it: the fp32 policy would be re-cast to bf16 at every decode step (fp32 weights under autocast
    decoded 3.7x slower than bf16 weights on an H200, issue 11). The copy is built as
    model.load_model builds (meta device, rotary buffers in fp32) and its trainable tensors are refreshed after
    every optimizer step, so it is always bf16(master weights): the fp32 policy is untouched and a resumed run
    samples as the uninterrupted one. Under FSDP every rank runs the same number of forwards (sync_ranks), and
    image-free batches carry a dummy tile so every rank runs the ViT."""

    def __init__(self, model, tokenizer, cfg, dist, bf16_copy=False):
        self.ranks, self.copy = [dist.rank], None
        if bf16_copy:
            if dist.world_size > 1:
                raise ValueError("rollout_dtype=bfloat16 needs one process (FSDP already samples in param_dtype)")
            self.copy = build_model(model.config, device="meta")
            for key, t in model.state_dict().items():   # one GPU in bf16: a one-rank FSDP2 model (DTensors)
                t = t.full_tensor() if isinstance(t, DTensor) else t
                set_tensor(self.copy, tu.clean_name(key), t.detach().to(torch.bfloat16 if t.is_floating_point() else t.dtype,
                                                           copy=True))
            if tied_lm_head(model.config):
                self.copy.language_model.lm_head.weight = self.copy.language_model.get_input_embeddings().weight
            materialize_buffers(self.copy, next(model.parameters()).device)
            self.copy.img_context_token_id = model.img_context_token_id
            self.copy.eval().requires_grad_(False)
            model = self.copy
        self.sampler = sampling.BuiltinSampler(model, tokenizer, cfg.temperature, cfg.top_p, cfg.rollout_batch_size,
                                               sync_ranks=dist.world_size > 1)

    def generate(self, prompts, n, max_tokens, seed):
        self.sampler.generator.manual_seed(seed)
        return self.sampler.sample(prompts, n, max_tokens)

    def sleep(self):
        pass

    def update_weights(self, model):
        if self.copy is not None:
            copied = dict(self.copy.named_parameters())
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if param.requires_grad:   # frozen ones never change
                        copied[tu.clean_name(name)].copy_(param.full_tensor() if isinstance(param, DTensor) else param)


class VLLMRollout:
    """vLLM colocated with the trainer, SPMD: each rank hosts one tensor-parallel worker of an engine in its own
    process (distributed_executor_backend="external_launcher"); ranks r // tp form one engine and submit the same
    prompts (the union of their members' prompts), then each keeps its own. Sleep level 1 moves vLLM's weights
    to CPU and frees the KV cache for the training phase; after each optimizer step only the trainable
    parameters are pushed, one FSDP parameter gathered at a time, under the checkpoint names that vLLM's
    InternVL / SkyworkR1V load_weights expects."""

    def __init__(self, checkpoint, cfg, dist, tokenizer, max_model_len):
        # the engine lives in this process (no V1 engine-core process): apply_model runs our function on its model
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        tp = cfg.vllm_tensor_parallel_size
        if dist.world_size % tp:
            raise ValueError(f"vllm_tensor_parallel_size {tp} does not divide the world size {dist.world_size}")
        self.ranks = list(range(dist.rank // tp * tp, dist.rank // tp * tp + tp))
        # sampling.build_vllm restores this process's RNGs, which the engine reseeds with its seed
        self.llm = sampling.build_vllm(sampling.vllm_engine_kwargs(
            checkpoint, tp, cfg.vllm_gpu_memory_utilization, max_model_len, cfg.vllm_max_images, cfg.max_tiles,
            seed=cfg.seed + dist.rank // tp,   # one seed per engine: its tp workers must sample identically
            distributed_executor_backend="external_launcher", enable_sleep_mode=True))
        # prompts carry our input_ids too: the sampler checks that vLLM's expansion of <image> gives the same
        self.sampler = sampling.VLLMSampler(self.llm, tokenizer, cfg.temperature, cfg.top_p)

    def generate(self, prompts, n, max_tokens, seed):
        # the same seed on every rank of the engine (collect_groups adds ranks[0]): tp workers sample alike
        return self.sampler.sample(prompts, n, max_tokens, seed=seed)

    def sleep(self):
        # level 1: weights to CPU, KV cache freed. It also clears the prefix, multimodal and encoder caches (stale
        # after a ViT update): LLMEngine.sleep -> renderer.clear_mm_cache, EngineCore.sleep -> pause_scheduler ->
        # _reset_caches (v1/engine/llm_engine.py:418-421; v1/engine/core.py:898-919, 959-974)
        self.llm.sleep(level=1)

    def update_weights(self, model):
        self.llm.wake_up(tags=["weights"])   # the KV cache stays free while the weights come in (llm.py:869)
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue   # frozen modules are identical in vLLM already
            full = param.full_tensor() if isinstance(param, DTensor) else param   # collective: same order everywhere
            weights = [(tu.clean_name(name), full.detach().to(torch.bfloat16))]
            # LLM.apply_model runs fn(model) on this rank's worker, in-process with external_launcher, nothing
            # pickled (entrypoints/llm.py:605-615 -> v1/engine/core.py:1073-1080 -> v1/executor/uniproc_executor.py
            # :90-106 -> v1/worker/worker_base.py:160-162). load_weights maps the checkpoint names (q/k/v ->
            # qkv_proj, TP slices) and returns the vLLM names it filled
            loaded = self.llm.apply_model(lambda m, w=weights: m.load_weights(w))[0]
            if not loaded:
                raise ValueError(f"vLLM's load_weights took nothing for {weights[0][0]}")
            del full, weights
        self.llm.wake_up(tags=["kv_cache"])   # fully awake: the scheduler resumes (v1/engine/core.py:997-1019)


def make_rollout(cfg, dist, model, tokenizer, checkpoint):
    if sampling.pick_backend(cfg.rollout_backend) == "builtin":
        one_gpu_bf16 = dist.device.type == "cuda" and dist.world_size == 1 and cfg.dtype == "bfloat16"
        return BuiltinRollout(model, tokenizer, cfg, dist, bf16_copy=cfg.rollout_dtype == "bfloat16" or
                              (cfg.rollout_dtype == "auto" and one_gpu_bf16))
    longest = max(tokens for _, tokens in cfg.response_length_schedule)
    return VLLMRollout(checkpoint, cfg, dist, tokenizer, max_model_len=cfg.max_prompt_tokens + longest)

# -----------------------------------------------------------------------------
# data: every prompt is encoded once at startup, so bad records fail before the first step


def load_stage_records(path, tokenizer, model_config, cfg, dist):
    """Records of one data file, minus the prompts longer than max_prompt_tokens. Every prompt is encoded once
    here (ranks share the work), which also checks every image: a missing or unreadable one names its path."""
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
    return data.encode_prompt(tokenizer, model_config, record, mode=cfg.mode, system=cfg.system_prompt or None,
                              max_prompt_tokens=cfg.max_prompt_tokens or None, max_tiles=cfg.max_tiles or None)

# -----------------------------------------------------------------------------
# one step's pieces: rollouts + rewards, then the policy update


# per-rank sums behind the step's metrics; all-reduced as one vector, so every rank lists the same keys
DEAD_STEPS_WARNING = 10   # this many steps in a row without a learning signal -> a warning in the log
SAMPLE_SUMS = ("groups", "zero_var_groups", "rollouts", "reward", "reward_sq", "accuracy", "format",
               "response_tokens", "prompt_tokens", "truncated", "blind")
TRAIN_SUMS = ("loss", "clipped", "approx_kl", "kl_ref", "tokens", "ent_sum", "ent_high", "ent_tokens", "crit_sum",
              "crit_count", "lp_diff", "lp_diff_tokens", "groups_trained")


def collect_groups(step, records, data_state, data_seed, cfg, dist, rollout, tokenizer, model_config, reward_fn,
                   max_tokens):
    """Samples prompts and their rollouts until the step has its P groups. Returns (groups owned by this rank,
    each a list of n sample dicts; the next data position; sums over every sampled rollout for the metrics)."""
    P, n, world = cfg.prompts_per_step, cfg.rollouts_per_prompt, dist.world_size
    kept = []
    sums = dict.fromkeys(SAMPLE_SUMS + ("rollout_s", "reward_s", "rounds", "response_max"), 0.0)
    for round_ in range(cfg.max_sampling_rounds if cfg.dynamic_sampling else 1):
        indices, data_state = data.next_batch(len(records), P, data_seed, data_state)
        served = [pos for r in rollout.ranks for pos in range(r, P, world)]   # my engine's prompts, mine among them
        prompts = [dict(encode(tokenizer, model_config, records[indices[pos]], cfg), id=records[indices[pos]].id)
                   for pos in served]
        t0 = time.time()
        outputs = rollout.generate(prompts, n, max_tokens, seed=cfg.seed + 1_000_003 * step + 7919 * round_ +
                                   rollout.ranks[0])   # builtin: this rank; vLLM: the engine's first rank
        sums["rollout_s"] += time.time() - t0
        groups = []
        for pos, prompt, outs in zip(served, prompts, outputs):
            if pos % world != dist.rank:
                continue
            record = records[indices[pos]]
            groups.append([{"pos": pos, "record": record, "prompt_ids": prompt["input_ids"],
                            "pixel_values": prompt["pixel_values"], "response_ids": o["token_ids"],
                            "rollout_logprobs": o["logprobs"], "truncated": o["finish_reason"] == "length",
                            "text": tokenizer.decode(o["token_ids"], skip_special_tokens=False)} for o in outs])
        t0 = time.time()
        samples = [s for g in groups for s in g]
        scores = reward_fn([s["text"] for s in samples], [s["record"] for s in samples])
        for s, score in zip(samples, scores):
            s.update(reward=float(score["reward"]), accuracy=float(score.get("accuracy", 0.0)),
                     format=float(score.get("format", 0.0)))
        sums["reward_s"] += time.time() - t0
        sums["rounds"] += 1
        for group in groups:
            group_rewards = [s["reward"] for s in group]
            sums["groups"] += 1
            sums["zero_var_groups"] += max(group_rewards) == min(group_rewards)
            for s in group:
                sums["rollouts"] += 1
                sums["reward"] += s["reward"]
                sums["reward_sq"] += s["reward"] ** 2
                sums["accuracy"] += s["accuracy"]
                sums["format"] += s["format"]
                sums["response_tokens"] += len(s["response_ids"])
                sums["prompt_tokens"] += len(s["prompt_ids"])
                sums["truncated"] += s["truncated"]
                sums["blind"] += rewards.claims_unseen_image(s["text"], cfg.blind_phrases)
                sums["response_max"] = max(sums["response_max"], len(s["response_ids"]))
        if not cfg.dynamic_sampling:
            kept = groups
            break
        # §5.5 dynamic sampling: a group whose rollouts all got the same reward has A = 0 everywhere
        kept += [g for g in groups if len({s["reward"] for s in g}) > 1]
        if tu.all_reduce_sum(float(len(kept)), dist) >= P:
            break
    if cfg.dynamic_sampling:
        # keep exactly P groups over all ranks, the first ones in rank order; positions renumbered in that order
        counts = [0] * world
        if world > 1:
            tdist.all_gather_object(counts, len(kept))
        else:
            counts = [len(kept)]
        before = sum(counts[:dist.rank])
        kept = kept[:max(0, P - before)]
        for j, group in enumerate(kept):
            for s in group:
                s["pos"] = before + j
    return kept, data_state, sums


def micro_batches(samples, cfg, dist, pad_id):
    """Chunks of micro_batch_tokens tokens (next-fit in order) when > 0, else of micro_batch_size sequences.
    Under FSDP every rank must run the same number of forward/backward passes, so a rank with fewer chunks runs
    dummy ones (one 2-token sequence, loss weight 0)."""
    if cfg.micro_batch_tokens > 0:
        lengths = [len(s["prompt_ids"]) + len(s["response_ids"]) for s in samples]
        chunks = [[samples[i] for i in g] for g in data.token_budget_groups(lengths, cfg.micro_batch_tokens)]
    else:
        size = cfg.micro_batch_size
        chunks = [samples[i:i + size] for i in range(0, len(samples), size)]
    count = int(tu.all_reduce_max(float(len(chunks)), dist))
    dummy = {"prompt_ids": [pad_id], "response_ids": [pad_id], "pixel_values": None, "advantage": 0.0,
             "dummy": True}
    return chunks + [[dummy]] * (count - len(chunks))


def sequence_logprobs(model, samples, pad_id, image_size, chunk_size, with_grad, packing=True):
    """One forward over prompt + response of each sample -> (logp, entropy, mask) [B, L] over response tokens.
    packing: the sequences are one row [1, sum of lengths] with position ids restarting at each (data.pack_samples;
    transformers keeps them apart), else right-padded rows [B, T] with an attention mask. The same numbers.
    Log-probs come from the final hidden states through lm_head in chunks (entropy.py): no [N, V] fp32 logits."""
    device = next(model.parameters()).device
    seqs = [{"input_ids": s["prompt_ids"] + s["response_ids"], "pixel_values": s["pixel_values"]} for s in samples]
    lengths = [len(s["response_ids"]) for s in samples]
    if packing:
        total = sum(len(s["input_ids"]) for s in seqs)
        batch = data.pack_samples(seqs, total, pad_id, image_size)
        attention_mask, position_ids = None, batch["position_ids"].to(device)
        starts = [0] + torch.tensor([len(s["input_ids"]) for s in seqs]).cumsum(0).tolist()[:-1]
        rows = torch.zeros(sum(lengths), dtype=torch.long, device=device)   # every sequence in row 0 ...
    else:
        batch = data.collate_right_padded(seqs, pad_id, image_size)
        attention_mask, position_ids = batch["attention_mask"].to(device), None
        starts = [0] * len(seqs)
        rows = torch.tensor([i for i, n in enumerate(lengths) for _ in range(n)], device=device)
    pixel_values = batch["pixel_values"].to(device) if batch["pixel_values"] is not None else None
    image_flags = batch["image_flags"].to(device) if batch["image_flags"] is not None else None
    hidden = model(batch["input_ids"].to(device), pixel_values=pixel_values, image_flags=image_flags,
                   attention_mask=attention_mask, position_ids=position_ids, return_hidden=True)   # [B|1, T, D]
    # ... from its start: the state at position start + P + t - 1 predicts response token t (prompt length P)
    cols = torch.tensor([start + len(s["prompt_ids"]) - 1 + t for start, s in zip(starts, samples)
                         for t in range(len(s["response_ids"]))], dtype=torch.long, device=device)
    targets = torch.tensor([t for s in samples for t in s["response_ids"]], device=device)
    # FSDP2 leaves the root group (lm_head) unsharded from forward to the end of backward; should it be a shard,
    # full_tensor() gathers it, differentiably
    weight = model.language_model.get_output_embeddings().weight   # [V, D]
    weight = weight.full_tensor() if hasattr(weight, "full_tensor") else weight
    logp, ent = token_logprobs_and_entropy(hidden[rows, cols], weight, targets, chunk_size,
                                           with_grad=with_grad)   # [N], [N]
    mask = torch.arange(max(lengths), device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    logp = logp.new_zeros(mask.shape).masked_scatter(mask, logp)   # [B, L], differentiable
    ent = ent.detach().new_zeros(mask.shape).masked_scatter(mask, ent.detach())
    return logp, ent, mask


def update_policy(model, ref_model, optimizer, groups, step, cfg, dist, pad_id, image_size, critical_seqs,
                  high_threshold=HIGH_ENTROPY_THRESHOLD):
    """eq. 7 over mini-batches x epochs on this rank's groups (advantages set). Returns metric sums / values."""
    K, E = cfg.mini_batches, cfg.ppo_epochs
    samples = [s for g in groups for s in g]
    # mini-batch k holds the groups at global positions k, k+K, ... : the same split for any world size
    minis = [[s for s in samples if s["pos"] % K == k] for k in range(K)]
    count = (lambda ss: float(len(ss))) if cfg.loss_agg == "seq-mean-token-mean" else \
        (lambda ss: float(sum(len(s["response_ids"]) for s in ss)))
    normalisers = [max(1.0, tu.all_reduce_sum(count(m), dist)) for m in minis]   # whole mini-batch, all ranks
    world = dist.world_size   # FSDP averages gradients over ranks; this factor makes it the sum eq. 7 needs
    chunk = cfg.logprob_chunk_size

    # pi_old and pi_ref: a no-grad pass before any update, only when they differ from the training forward
    need_old = K > 1 or E > 1
    if need_old or cfg.kl_beta > 0:
        with torch.no_grad():
            for mini in minis:
                for micro in micro_batches(mini, cfg, dist, pad_id):
                    if need_old:
                        logp, _, _ = sequence_logprobs(model, micro, pad_id, image_size, chunk, False, cfg.packing)
                        for i, s in enumerate(micro):
                            s["old_logp"] = logp[i, :len(s["response_ids"])]
                    if ref_model is not None:
                        logp, _, _ = sequence_logprobs(ref_model, micro, pad_id, image_size, chunk, False, cfg.packing)
                        for i, s in enumerate(micro):
                            s["ref_logp"] = logp[i, :len(s["response_ids"])]

    sums, last = dict.fromkeys(TRAIN_SUMS, 0.0), {}
    sums["groups_trained"] = float(len(groups))
    opt_step = step * K * E
    for epoch in range(E):
        for k, mini in enumerate(minis):
            for micro in micro_batches(mini, cfg, dist, pad_id):
                logp, ent, mask = sequence_logprobs(model, micro, pad_id, image_size, chunk, True, cfg.packing)
                old = padded([s.get("old_logp") for s in micro], mask) if need_old else logp.detach()   # ratio 1
                ref = padded([s.get("ref_logp") for s in micro], mask) if ref_model is not None else None
                adv = torch.tensor([s["advantage"] for s in micro], device=logp.device)
                loss, stats = policy_loss(logp, old, adv, mask, normalisers[k], cfg.loss_agg, cfg.clip_eps_low,
                                          cfg.clip_eps_high, ref, cfg.kl_beta)
                dummy = micro[0].get("dummy", False)
                (loss * (0.0 if dummy else world)).backward()
                if dummy:
                    continue
                for key, value in stats.items():
                    sums[key] += value
                sums["loss"] += float(loss.detach()) / (K * E)   # summed over ranks: the mean loss per update
                if epoch == 0:   # entropy of pi at the first visit of each sample, from this same forward (§5.1)
                    response = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
                    response[mask] = torch.tensor([t for s in micro for t in s["response_ids"]], device=mask.device)
                    em = entropy_metrics(ent, mask, critical_mask(response, critical_seqs), high_threshold)
                    sums["ent_sum"] += em["mean_token_entropy"] * em["num_tokens"]
                    sums["ent_high"] += em["high_entropy_frac"] * em["num_tokens"]
                    sums["ent_tokens"] += em["num_tokens"]
                    if em["critical_count"]:
                        sums["crit_sum"] += em["critical_entropy_mean"] * em["critical_count"]
                        sums["crit_count"] += em["critical_count"]
                    for i, s in enumerate(micro):   # train/inference mismatch of the sampled tokens' log-probs
                        if len(s["rollout_logprobs"]) == len(s["response_ids"]):
                            sampled = torch.tensor(s["rollout_logprobs"], device=logp.device)
                            sums["lp_diff"] += float((logp[i, :len(sampled)].detach() - sampled).abs().sum())
                            sums["lp_diff_tokens"] += len(sampled)
            params = [p for p in model.parameters() if p.requires_grad]
            grad_norm = tu.clip_grad_norm(params, cfg.grad_clip)
            lr = tu.lr_at(opt_step, cfg.steps * K * E, cfg.lr, cfg.warmup_steps, cfg.lr_schedule, cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if math.isfinite(grad_norm):
                optimizer.step()
            else:   # one bad batch must not poison the weights and Adam moments
                print(f"step {step}: non-finite grad norm, optimizer step skipped", flush=True)
            optimizer.zero_grad(set_to_none=True)
            opt_step += 1
            last = {"grad_norm": grad_norm, "lr": lr, "skipped": float(not math.isfinite(grad_norm))}
    return sums, last


def padded(rows, mask):
    """per-sample 1-D tensors (or None -> 0) -> [B, L] aligned with mask."""
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    for i, row in enumerate(rows):
        if row is not None:
            out[i, :len(row)] = row.to(out.device)
    return out


# -----------------------------------------------------------------------------


def main(cfg, rollout=None, reward_fn=None):
    """The training run. Hooks for tests and forks: rollout (an engine with the interface above) and
    reward_fn(texts, records) -> [{"reward", "accuracy", "format"}] (default: rewards.score_batch, eqs. 1-3).
    Returns the per-step metrics (the same on every rank)."""
    dist = tu.setup_distributed()   # joins the process group when it is up already (several runs, one launch)
    if dist.is_main:
        tu.print_config(cfg)
    existing = tu.find_last_checkpoint(cfg.out_dir)
    if existing is not None and not cfg.resume:   # starting over would mix two runs' checkpoints and metrics
        raise ValueError(f"{cfg.out_dir} already has checkpoints ({existing.name}): pass --resume or another out_dir")
    if dist.is_main:
        tu.remove_debris(cfg.out_dir)   # a partial checkpoint of a crash (on a full disk it blocks the resume)
    if not (Path(cfg.init_from) / "config.json").is_file():
        raise FileNotFoundError(f"init_from={cfg.init_from!r} has no config.json: give a model.py checkpoint dir "
                                f"(with its tokenizer), e.g. sft.py's out_dir/step_NNNNNN")
    P, n, W = cfg.prompts_per_step, cfg.rollouts_per_prompt, dist.world_size
    if P % W:
        raise ValueError(f"prompts_per_step {P} must be a multiple of the world size {W} (groups stay whole)")
    if n < 2:
        raise ValueError(f"rollouts_per_prompt must be >= 2 for group advantages, got {n}")
    if P % cfg.mini_batches:
        raise ValueError(f"prompts_per_step {P} must be a multiple of mini_batches {cfg.mini_batches}")
    for name, schedule in (("response_length_schedule", [(s, v) for s, v in cfg.response_length_schedule]),
                           ("curriculum", [(s, d) for d, s in cfg.curriculum])):
        if schedule and (schedule[0][0] != 0 or [s for s, _ in schedule] != sorted(s for s, _ in schedule)):
            raise ValueError(f"{name} must start at step 0 and be sorted by step, got {schedule}")
    tu.set_seed(cfg.seed + dist.rank)
    cuda = dist.device.type == "cuda"
    param_dtype = torch.bfloat16 if cuda and cfg.dtype == "bfloat16" else None
    # bf16 compute through FSDP2's MixedPrecisionPolicy on any number of GPUs (one GPU: a one-rank group,
    # train_utils.wrap_fsdp): weights are cast once per forward, not at every op as under autocast

    tokenizer = load_tokenizer(cfg.init_from)
    model_config = ModelConfig.from_json(Path(cfg.init_from) / "config.json")
    image_size = model_config.force_image_size
    stages = cfg.curriculum or [(cfg.data, 0)]
    stage_records, skipped = [], 0
    for path, _ in stages:
        records, n_skipped = load_stage_records(path, tokenizer, model_config, cfg, dist)
        stage_records.append(records)
        skipped += n_skipped

    # built on the meta device and sharded as it loads: a 38B model never exists in full on one rank
    model = tu.load_model_sharded(cfg.init_from, dist, cfg.trainable, param_dtype, cfg.activation_checkpointing)
    model.eval()
    ref_model = tu.load_model_sharded(cfg.init_from, dist, [], param_dtype).eval() if cfg.kl_beta > 0 else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"trainable={cfg.trainable} leaves nothing to train")
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    state = {"step": 0, "stage": 0, "data_state": (0, 0)}
    run = tu.describe_run(cfg, MAY_CHANGE, [path for path, _ in stages], model_config)
    run["curriculum_steps"] = [first for _, first in stages]
    resume_from = tu.find_resume_checkpoint(cfg.out_dir) if cfg.resume else None
    if resume_from is not None:   # weights, Adam moments, RNG, data position; refused if the run changed
        state = tu.load_checkpoint(resume_from, model, optimizer, run, cfg.allow_run_change)
        if dist.is_main:
            print(f"resumed from {resume_from} at step {state['step']}")
    logger = tu.RunLogger(cfg.out_dir, cfg, cfg.wandb_project, cfg.run_name, enabled=dist.is_main,
                          resume_step=state["step"] if resume_from is not None else None)
    rollout = rollout or make_rollout(cfg, dist, model, tokenizer, resume_from or cfg.init_from)
    if reward_fn is None:
        reward_cfg = rewards.RewardConfig(accuracy_weight=cfg.accuracy_weight, think_mode=cfg.mode == "think",
                                          verifier_url=cfg.verifier_url, num_workers=cfg.reward_workers)

        def reward_fn(texts, records):
            return rewards.score_batch(texts, [r.answer for r in records], [r.options for r in records],
                                       [r.question for r in records], reward_cfg)
    critical_seqs = critical_token_sequences(tokenizer, cfg.critical_words)
    history = []
    dead_steps, dead_run = 0, 0   # steps with no learning signal: every group's rewards equal, or a zero gradient

    for step in range(state["step"], cfg.steps):
        t_step = time.time()
        stage = stage_at(step, stages)
        if stage != state["stage"]:   # §5.3: a new dataset starts from its own beginning
            state.update(stage=stage, data_state=(0, 0))
        max_tokens = value_at(step, cfg.response_length_schedule)

        # 1-2. rollouts, rewards (eqs. 1-3), advantages (eq. 6)
        with torch.no_grad():
            groups, state["data_state"], sums = collect_groups(
                step, stage_records[stage], state["data_state"], cfg.seed + 1000 * stage, cfg, dist, rollout,
                tokenizer, model_config, reward_fn, max_tokens)
        for group in groups:
            adv = group_advantages(torch.tensor([[s["reward"] for s in group]], dtype=torch.float64),
                                   cfg.adv_eps, cfg.adv_scale_by_std)[0]
            for s, a in zip(group, adv.tolist()):
                s["advantage"] = a

        # 3. policy update (eq. 7)
        rollout.sleep()
        t0 = time.time()
        train_sums, last = update_policy(model, ref_model, optimizer, groups, step, cfg, dist,
                                         tokenizer.pad_token_id, image_size, critical_seqs,
                                         high_entropy_threshold(model_config.llm_config["vocab_size"]))
        train_s = time.time() - t0

        # 4. the new weights into the rollout engine
        t0 = time.time()
        rollout.update_weights(model)
        sync_s = time.time() - t0

        # 5. metrics over all ranks, progress, checkpoint
        local = [sums[k] for k in SAMPLE_SUMS] + [train_sums[k] for k in TRAIN_SUMS]
        totals = tu.all_reduce_sum(torch.tensor(local, dtype=torch.float64, device=dist.device), dist).tolist()
        g = dict(zip(SAMPLE_SUMS + TRAIN_SUMS, totals))
        response_max = tu.all_reduce_max(float(sums["response_max"]), dist)
        step_s = time.time() - t_step
        rollouts_ = g["rollouts"]
        mean_reward = g["reward"] / rollouts_
        div = lambda a, b: a / b if b else float("nan")
        metrics = {   # reward/* and response/* over every rollout sampled this step, train/* over the update
            "reward/mean": mean_reward,
            "reward/std": math.sqrt(max(0.0, g["reward_sq"] / rollouts_ - mean_reward ** 2)),
            "reward/accuracy": g["accuracy"] / rollouts_, "reward/format": g["format"] / rollouts_,
            "reward/zero_var_groups": g["zero_var_groups"] / g["groups"],
            "response/len_mean": g["response_tokens"] / rollouts_, "response/len_max": response_max,
            "response/truncated": g["truncated"] / rollouts_, "response/blind_phrase_rate": g["blind"] / rollouts_,
            "train/loss": g["loss"], "train/clip_frac": div(g["clipped"], g["tokens"]),
            "train/approx_kl": div(g["approx_kl"], g["tokens"]), "train/kl_ref": div(g["kl_ref"], g["tokens"]),
            "train/grad_norm": last["grad_norm"], "train/lr": last["lr"], "train/skipped_updates": last["skipped"],
            "train/rollout_logprob_diff": div(g["lp_diff"], g["lp_diff_tokens"]),
            "entropy/mean": div(g["ent_sum"], g["ent_tokens"]),
            "entropy/high_frac": div(g["ent_high"], g["ent_tokens"]),
            "entropy/critical": div(g["crit_sum"], g["crit_count"]), "entropy/critical_count": g["crit_count"],
            "data/stage": stage, "data/epoch": state["data_state"][0], "data/max_response_tokens": max_tokens,
            "data/sampling_rounds": sums["rounds"], "data/groups_trained": g["groups_trained"],
            "data/skipped_long_prompts": skipped,
            "time/rollout": sums["rollout_s"], "time/reward": sums["reward_s"], "time/train": train_s,
            "time/sync": sync_s, "time/step": step_s,
            "perf/tokens_per_s": (g["response_tokens"] + g["prompt_tokens"]) / step_s,
            "perf/tokens_per_s_per_rank": (g["response_tokens"] + g["prompt_tokens"]) / step_s / W,
        }
        # an arm that cannot learn says so loudly: when every group's rewards are equal, eq. 6's advantages are all
        # 0 and the update is 0 (e.g. GRPO from a model that never writes the rewarded format)
        dead = metrics["reward/zero_var_groups"] == 1.0 or metrics["train/grad_norm"] == 0.0
        dead_steps, dead_run = dead_steps + dead, (dead_run + 1) * dead
        if dead_run == DEAD_STEPS_WARNING and dist.is_main:
            print(f"WARNING: {cfg.out_dir}: no learning signal for {dead_run} steps in a row "
                  f"(steps {step + 2 - dead_run}-{step + 1}): every group's rewards are equal (reward/mean {mean_reward:.3f}) or the gradient is 0",
                  file=sys.stderr, flush=True)
        metrics["train/no_signal_steps"] = dead_steps
        history.append(metrics)
        logger.log(step + 1, metrics)
        logger.progress(step + 1, cfg.steps, reward=metrics["reward/mean"], acc=metrics["reward/accuracy"],
                        len=metrics["response/len_mean"], entropy=metrics["entropy/mean"])
        state["step"] = step + 1
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            tu.save_checkpoint(cfg.out_dir, step + 1, model, optimizer, model_config, tokenizer,
                               {k: v for k, v in state.items() if k != "step"}, keep_last=cfg.keep_last,
                               save_dtype=torch.bfloat16 if cuda else None, run=run)
    if dead_steps >= DEAD_STEPS_WARNING and dist.is_main:
        print(f"WARNING: {cfg.out_dir}: {dead_steps} of {len(history)} steps had no learning signal; this arm "
              "barely trained", file=sys.stderr, flush=True)
    logger.finish()
    return history


if __name__ == "__main__":
    main(tu.parse_config(Config))
    tu.cleanup_distributed()
