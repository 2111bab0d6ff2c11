"""
GRPO for Skywork-R1V3 (paper §3.3, eqs. 4-7; ablations §5.2-5.5), by hand on torch.distributed.

    torchrun --nproc_per_node=8 grpo.py config/grpo_38b.py   # one node (a 38B run wants two)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
        grpo.py config/grpo_38b.py
    python grpo.py config/grpo_demo.py --steps=20             # CPU, tiny model, decode.generate
    ... --resume                                              # continue exactly from out_dir
    ... --plan [--plan_gpus=16]                               # the per-GPU memory plan only (memory_plan.py)

One step (the paper's "episode") is the loop in main: 1. rollouts of P prompts (rank r owns
positions r, r+W, ..., so every group lives whole on one rank; colocated vLLM or decode.generate,
sampling.py), their rewards (rewards.py, eqs. 1-3) and dynamic sampling (§5.5); 2. group-normalised
advantages (eq. 6); 3. the clipped surrogate (eq. 7) over mini-batches x PPO epochs, AdamW,
gradient clipping; 4. the new weights into the sampler; 5. metrics, progress, checkpoint.

Loss normalisation is global and exact: a micro-batch contributes sum(its terms) / N, N the
sequences (or tokens) of the whole mini-batch over all ranks, all-reduced first; FSDP averages
gradients over ranks, so the loss is multiplied by the world size. The gradient is the same for
any world size and micro-batch size (tests/test_grpo.py: 2 ranks against 1 process).
With the paper's settings (one mini-batch, one epoch) pi_old is the current policy: the ratio is
exactly 1, the clip never acts, and old log-probs are the training forward's own, detached.

Resume is exact (checkpoint.save_checkpoint: weights, every rank's AdamW shard and RNG state,
curriculum stage, data position; the LR is a function of the step, the builtin sampler is seeded
by (seed, step, round, rank)): N steps == N/2 + --resume + N/2, bit for bit (not with vLLM,
verl#1683). Everything runs in eval mode: R1V3 has no dropout, and drop-path in the ViT would
make pi_old and pi_theta different functions of the same weights.
"""
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as tdist

import checkpoint
import configurator
import data
import grpo_metrics
import logprobs
import memory_plan
import rewards
import sampling
import train_utils as tu
from chat import load_tokenizer
from model import ModelConfig
from token_entropy import DEFAULT_CRITICAL_WORDS, critical_token_sequences, high_entropy_threshold

# -----------------------------------------------------------------------------
# config: paper values are the defaults (sections of the paper); config/grpo_38b.py is the full run


@dataclass
class Config:
    # model and data
    init_from: str = "out/sft"          # the cold-start SFT checkpoint (§3.2) with its tokenizer
    data: str = "../shared/data/mm-eureka-k12/k12.json"   # records JSONL or the K12 json
    curriculum: list[tuple[str, int]] = field(default_factory=list)   # §5.3: [(data, first_step)]
    out_dir: str = "out/grpo"
    resume: bool = False                # continue from the last checkpoint in out_dir
    allow_run_change: bool = False      # resume although the model, data or a run setting changed
    steps: int = 300                    # episodes; the paper does not give its count
    schedule_steps: int = 0             # the LR schedule's length; 0 = steps. > steps: stop early on a longer
                                        # run's schedule (its first `steps` steps, bit for bit)
    # rollouts: "each episode samples 1,024 rollouts, with 32 verifier-rewarded samples per prompt"
    prompts_per_step: int = 32
    rollouts_per_prompt: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    # [(first_step, max response tokens)]: §3.3 grows it "from 4,096 to 8,192" (step not given)
    response_length_schedule: list[tuple[int, int]] = field(default_factory=lambda: [(0, 4096)])
    max_prompt_tokens: int = 4096       # longer prompts (image tokens counted) are skipped ...
    skip_long_prompts: bool = True      # ... or, when False, an error naming the record
    mode: Literal["think", "nothink"] = "think"   # generation prompt opens <think> (§6.2)
    system_prompt: str = ""
    max_tiles: int = 0                  # image tiles per image; 0 = the config's max_dynamic_patch
    # reward (§3.1): R = 0.8 R_accuracy + 0.2 R_format
    accuracy_weight: float = 0.8
    verifier_url: str = ""              # R_theta of eq. 2 (OpenAI-compatible); rule-only when empty
    verifier_api_key_env: str = ""      # name of the environment variable holding its API key (never the key)
    reward_workers: int = 2             # Math-Verify processes per rank (0 = in-process)
    # advantage and loss (eqs. 6-7)
    adv_eps: float = 1e-6               # eq. 6 denominator std + eps (verl's value)
    adv_scale_by_std: bool = True       # False: A = r - mean (Dr. GRPO)
    loss_agg: Literal["seq-mean-token-mean", "token-mean"] = "seq-mean-token-mean"   # eq. 7's 1/|y|
    clip_eps_low: float = 0.2           # §3.3 clip 0.2
    clip_eps_high: float = 0.2          # §5.5 clip-higher: raise it (DAPO uses 0.28)
    kl_beta: float = 0.0                # §3.3 "no KL divergence penalty"; > 0: a reference model
    dynamic_sampling: bool = False      # §5.5: drop zero-variance groups, refill from new prompts
    max_sampling_rounds: int = 3        # rollout rounds per step at most when refilling
    mini_batches: int = 1               # optimizer steps per epoch; §3.3: 1 step per episode
    ppo_epochs: int = 1
    micro_batch_size: int = 2           # sequences per forward/backward per rank (memory, not math)
    micro_batch_tokens: int = 0         # > 0: tokens per forward instead (next-fit, data order)
    packing: bool = True                # micro-batch = one row, no padding (positions restart per
                                        # sequence); False: right-padded rows with a mask
    shared_prefix: bool = True          # packing: a group's rollouts in one micro-batch share one copy of
                                        # their prompt (image and ViT included); False: each its own copy
    # optimizer (§3.3 lr 1e-5; §5.4 compares 1e-6)
    lr: float = 1e-5
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01          # verl's actor default (the paper trains with verl)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    max_nonfinite_steps: int = 3        # a NaN/inf loss or grad norm this many steps in a row stops the run
    trainable: list[str] = field(default_factory=lambda: ["vision", "connector", "llm"])   # §5.2
    # engines
    rollout_backend: Literal["auto", "vllm", "builtin"] = "auto"   # auto: vllm with a GPU
    rollout_batch_size: int = 64        # builtin: sequences per decode.generate call
    rollout_dtype: Literal["auto", "bfloat16", "policy"] = "auto"
    # ^ builtin, one process: "bfloat16" samples a bf16 copy refreshed after every optimizer step,
    #   "policy" the policy (one GPU: a one-rank FSDP2 model re-casting weights at every decode
    #   step); auto: bfloat16 on one GPU with dtype=bfloat16
    compile_decode: Literal["auto", "on", "off"] = "auto"   # builtin: torch.compile of the decode step
    # ^ auto: on a GPU; "on" also on CPU (pays over a long run: ~6 s of compile per process); never on an
    #   FSDP-wrapped model (decode.compiles_decode_step)
    vllm_tensor_parallel_size: int = 1
    vllm_gpu_memory_utilization: float = 0.5   # vLLM shares the GPUs with the policy and optimizer
    vllm_max_images: int = 8            # limit_mm_per_prompt
    dtype: Literal["bfloat16", "float32"] = "bfloat16"   # GPU compute (fp32 master); CPU is fp32
    activation_checkpointing: bool = False
    logprob_chunk_size: int = 1024      # rows of [rows, vocab] fp32 logits alive at once
    # logging and checkpoints
    save_every: int = 50
    keep_last: int = 3
    wandb_project: str = "skywork-r1v3-grpo"
    run_name: str = "grpo"
    critical_words: list[str] = field(default_factory=lambda: list(DEFAULT_CRITICAL_WORDS))  # §5.1
    blind_phrases: list[str] = field(default_factory=lambda: list(rewards.UNSEEN_IMAGE_PHRASES))
    seed: int = 1337
    # memory plan (memory_plan.py): printed at startup on a GPU, where a run that cannot fit is refused
    plan: bool = False                  # print it and exit, loading nothing (CPU too)
    plan_gpus: int = 0                  # GPUs to plan for; 0 = this launch's (torchrun's WORLD_SIZE)
    plan_gpu_gib: float = 0.0           # memory per GPU; 0 = this GPU's (79.19 GiB, an 80 GB H100, on CPU)

    def samples_bf16_copy(self, world, on_gpu):
        """rollout_dtype resolved: does the builtin sampler sample a bf16 copy of the policy (one process only;
        auto: on one GPU with dtype=bfloat16)? rollout_sampler and memory_plan.grpo_plan ask this."""
        return self.rollout_dtype == "bfloat16" or (
            self.rollout_dtype == "auto" and on_gpu and world == 1 and self.dtype == "bfloat16")


# settings a resume may change; every other field, the data files and the model config define
# the run (checkpoint.describe_run). steps is the stop point (a cosine LR reshapes from here unless
# schedule_steps, part of the run, fixes its length)
MAY_CHANGE = ("init_from", "data", "curriculum", "out_dir", "resume", "allow_run_change", "steps",
              "save_every", "keep_last", "wandb_project", "run_name", "micro_batch_size",
              "rollout_batch_size", "logprob_chunk_size", "activation_checkpointing",
              "rollout_backend", "vllm_tensor_parallel_size", "vllm_gpu_memory_utilization",
              "vllm_max_images", "reward_workers", "plan", "plan_gpus", "plan_gpu_gib", "max_nonfinite_steps",
              "verifier_api_key_env", "shared_prefix")

# -----------------------------------------------------------------------------
# advantages and loss (eqs. 6-7)


def group_advantages(rewards, eps=1e-6, scale_by_std=True):
    """rewards [G, n] (n rollouts of each of G prompts) -> advantages [G, n].
    eq. 6: A = (r - mean(group)) / (std(group) + eps), std unbiased as in verl;
    scale_by_std=False: r - mean. A group whose rewards are all equal gets A = 0."""
    if rewards.shape[1] < 2:
        raise ValueError(f"group advantages need >= 2 rollouts per prompt, got {rewards.shape[1]}")
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale_by_std:
        return centered
    return centered / (rewards.std(dim=1, keepdim=True) + eps)


def policy_loss(logp, old_logp, ref_logp, advantages, mask, cfg):
    """eq. 7's terms of one micro-batch, summed (main divides by the whole mini-batch's count).
    logp, old_logp, ref_logp [B, T]: response-token log-probs under pi_theta, pi_old, pi_ref (None
    when kl_beta = 0); advantages [B] (every token of a sequence gets its own); mask [B, T] (1 =
    response token); cfg: loss_agg, clip_eps_low/high, kl_beta.
    Returns (loss sum, stats), stats as sums (clipped tokens, approx-KL, KL to pi_ref, tokens)."""
    clip_low, clip_high, beta, agg = cfg.clip_eps_low, cfg.clip_eps_high, cfg.kl_beta, cfg.loss_agg
    mask = mask.to(logp.dtype)
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)   # verl's guard: exp() stays finite
    ratio = log_ratio.exp()
    adv = advantages[:, None].to(logp.dtype)
    # clip-higher (§5.5): a token with A > 0 may rise to 1 + clip_high before its gradient stops
    surrogate = torch.min(ratio * adv, ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * adv)
    per_token = -surrogate
    kl_ref = torch.zeros_like(logp)
    if beta > 0:
        # D in eq. 7 as the k3 estimator (GRPO, Shao et al. 2024): exp(ref - logp) - (ref - logp)
        # - 1 >= 0, whose expectation under pi_theta is KL(pi_theta || pi_ref)
        delta = ref_logp - logp
        kl_ref = delta.exp() - delta - 1.0
        per_token = per_token + beta * kl_ref
    if agg == "seq-mean-token-mean":   # 1/|y_ij| sum_t, then the mean over sequences (eq. 7)
        total = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum()
    elif agg == "token-mean":          # every token of the mini-batch weighs the same (DAPO, verl)
        total = (per_token * mask).sum()
    else:
        raise ValueError(f"loss_agg {agg!r} is not seq-mean-token-mean or token-mean")
    with torch.no_grad():
        clipped = ((adv > 0) & (ratio > 1.0 + clip_high)) | ((adv < 0) & (ratio < 1.0 - clip_low))
        stats = {"clipped": float((clipped * mask).sum()),
                 "approx_kl": float((((ratio - 1.0) - log_ratio) * mask).sum()),   # k3, pi_old
                 "kl_ref": float((kl_ref * mask).sum()), "tokens": float(mask.sum())}
    return total, stats


def stages_begun(run_desc, step):
    """A run description cut to the curriculum stages begun before `step`: a resume there is the same run whatever
    the later stages are (demo.sh's curriculum arm resumes from the main run's checkpoint at its switch step)."""
    n = sum(first < step for first in run_desc.get("curriculum_steps", []))
    return {k: v[:n] if k == "curriculum_steps" else v for k, v in run_desc.items()
            if not (k.startswith("sha256 of data file ") and int(k.rsplit(" ", 1)[1]) >= n)}

# -----------------------------------------------------------------------------
# one step's pieces: a sampling round, micro-batches (their log-probs: logprobs.sequence_logprobs)


def encode(tokenizer, model_config, record, cfg):
    """A record's prompt; every one is encoded once at startup too (data.read_prompt_records), so bad records
    fail before the first step."""
    return data.encode_prompt(tokenizer, model_config, record, mode=cfg.mode,
                              system=cfg.system_prompt or None,
                              max_prompt_tokens=cfg.max_prompt_tokens or None,
                              max_tiles=cfg.max_tiles or None)


@dataclass
class Run:
    """What every step uses, built once by main."""
    cfg: Config
    dist: tu.Dist
    tokenizer: object
    model_config: ModelConfig
    sampler: object      # sampling.make_sampler's, or a hook with its interface
    reward_fn: object    # (texts, records) -> [{"reward", "accuracy", "format"}]


def sample_groups(run, step, round_, records, indices, max_tokens):
    """One sampling round over the step's P prompts records[indices[pos]]: the groups this rank
    owns (n sample dicts each, rewarded by eqs. 1-3) and the seconds spent sampling, scoring."""
    cfg, dist, ranks = run.cfg, run.dist, run.sampler.ranks
    # the prompts of my sampler's ranks (vLLM: its engine's; builtin: mine), mine among them
    served = [pos for r in ranks for pos in range(r, cfg.prompts_per_step, dist.world_size)]
    prompts = [dict(encode(run.tokenizer, run.model_config, records[indices[pos]], cfg),
                    id=records[indices[pos]].id) for pos in served]
    t0 = time.time()
    seed = cfg.seed + 1_000_003 * step + 7919 * round_ + ranks[0]   # tp workers sample alike
    outputs = run.sampler.sample(prompts, cfg.rollouts_per_prompt, max_tokens, seed=seed)
    rollout_s, t0 = time.time() - t0, time.time()
    groups = [[{"pos": pos, "record": records[indices[pos]], "prompt_ids": prompt["input_ids"],
                "pixel_values": prompt["pixel_values"], "response_ids": o["token_ids"],
                "rollout_logprobs": o["logprobs"], "truncated": o["finish_reason"] == "length",
                "text": run.tokenizer.decode(o["token_ids"], skip_special_tokens=False)}
               for o in outs]
              for pos, prompt, outs in zip(served, prompts, outputs)
              if pos % dist.world_size == dist.rank]
    samples = [s for g in groups for s in g]
    scores = run.reward_fn([s["text"] for s in samples], [s["record"] for s in samples])
    for s, score in zip(samples, scores):
        s.update(reward=float(score["reward"]), accuracy=float(score.get("accuracy", 0.0)),
                 format=float(score.get("format", 0.0)))
    return groups, rollout_s, time.time() - t0


def micro_batches(samples, cfg, dist, pad_id):
    """Chunks of micro_batch_tokens tokens (next-fit in order) when > 0, else of micro_batch_size
    sequences. Under FSDP every rank runs the same number of forward/backward passes, so a rank
    with fewer chunks runs dummy ones (one 2-token sequence, loss weight 0)."""
    # with shared_prefix, a rollout after one of the same prompt adds only its response's tokens (a chunk that
    # starts inside a group pays that prompt again: up to one prompt over the budget)
    lengths = [len(s["response_ids"]) + len(s["prompt_ids"]) * (
        not (cfg.shared_prefix and cfg.packing and i and data.same_prompt(samples[i - 1], s)))
        for i, s in enumerate(samples)]
    size, budget = cfg.micro_batch_size, cfg.micro_batch_tokens
    groups = data.token_budget_groups(lengths, budget) if budget > 0 else \
        [range(i, min(i + size, len(samples))) for i in range(0, len(samples), size)]
    dummy = {"prompt_ids": [pad_id], "response_ids": [pad_id], "pixel_values": None,
             "advantage": 0.0, "dummy": True}
    return tu.lockstep_micro_batches([[samples[i] for i in g] for g in groups], [dummy], dist)

# -----------------------------------------------------------------------------
# startup: the config's checks and the sampler it asks for


def check_config(cfg, world):
    configurator.check_values(
        cfg, positive=("steps", "prompts_per_step", "rollouts_per_prompt", "mini_batches", "ppo_epochs",
                       "micro_batch_size", "rollout_batch_size", "save_every", "max_sampling_rounds",
                       "logprob_chunk_size", "max_nonfinite_steps", "vllm_tensor_parallel_size"),
        non_negative=("schedule_steps", "warmup_steps", "micro_batch_tokens", "max_tiles", "max_prompt_tokens",
                      "keep_last", "kl_beta", "reward_workers"),
        nonempty=("trainable",))
    P, n, K = cfg.prompts_per_step, cfg.rollouts_per_prompt, cfg.mini_batches
    if P % world:
        raise ValueError(f"prompts_per_step {P} must be a multiple of the world size {world} "
                         f"(groups stay whole)")
    if n < 2:
        raise ValueError(f"rollouts_per_prompt must be >= 2 for group advantages, got {n}")
    if P % K:
        raise ValueError(f"prompts_per_step {P} must be a multiple of mini_batches {K}")
    if cfg.schedule_steps and cfg.schedule_steps < cfg.steps:
        raise ValueError(f"schedule_steps ({cfg.schedule_steps}) must be 0 or >= steps ({cfg.steps})")
    configurator.check_schedule("response_length_schedule", [s for s, _ in cfg.response_length_schedule])
    configurator.check_schedule("curriculum", [s for _, s in cfg.curriculum])


def rollout_sampler(cfg, dist, model, tokenizer, checkpoint):
    """sampling.make_sampler with this config."""
    longest = max(tokens for _, tokens in cfg.response_length_schedule)
    return sampling.make_sampler(
        cfg.rollout_backend, tokenizer, checkpoint, model, dist, temperature=cfg.temperature,
        top_p=cfg.top_p, seed=cfg.seed, batch_size=cfg.rollout_batch_size, compile_decode=cfg.compile_decode,
        bf16_copy=cfg.samples_bf16_copy(dist.world_size, on_gpu=dist.device.type == "cuda"),
        tensor_parallel_size=cfg.vllm_tensor_parallel_size, max_tiles=cfg.max_tiles,
        gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, max_images=cfg.vllm_max_images,
        max_model_len=cfg.max_prompt_tokens + longest)


def main(cfg, sampler=None, reward_fn=None):
    """The training run. Hooks for tests and forks: sampler (sampling.py's interface) and
    reward_fn(texts, records) -> [{"reward", "accuracy", "format"}] (default: rewards.score_batch,
    eqs. 1-3). Returns the per-step metrics (the same on every rank); [] with --plan."""
    if cfg.plan:   # before anything is loaded or allocated
        print(memory_plan.format_plan(memory_plan.grpo_plan(cfg, memory_plan.plan_gpus(cfg), torch.device("cpu"))))
        return []
    dist = tu.setup_distributed()   # joins the process group when it is up already
    if dist.is_main:
        checkpoint.lock_out_dir(cfg.out_dir)   # one run per out_dir, before anything in it is touched
        configurator.print_config(cfg)
    existing = checkpoint.find_last_checkpoint(cfg.out_dir)
    if existing is not None and not cfg.resume:   # starting over would mix two runs' checkpoints
        raise ValueError(f"{cfg.out_dir} already has checkpoints ({existing.name}): "
                         f"pass --resume or another out_dir")
    if dist.is_main:
        checkpoint.remove_debris(cfg.out_dir)   # a crash's partial checkpoint (it would block a resume)
    if not (Path(cfg.init_from) / "config.json").is_file():
        raise FileNotFoundError(f"init_from={cfg.init_from!r} has no config.json: give a model.py "
                                f"checkpoint dir with its tokenizer, e.g. sft.py's "
                                f"out_dir/step_NNNNNN")
    check_config(cfg, dist.world_size)
    if dist.device.type == "cuda":   # the memory plan, before the model is loaded
        memory_plan.check_fits(memory_plan.grpo_plan(cfg, dist.world_size, dist.device),
                               f"grpo.py on {dist.world_size} GPUs", verbose=dist.is_main)
    P, K, E = cfg.prompts_per_step, cfg.mini_batches, cfg.ppo_epochs
    tu.set_seed(cfg.seed + dist.rank)
    cuda = dist.device.type == "cuda"
    # bf16 compute through FSDP2's MixedPrecisionPolicy on any number of GPUs (one GPU: a one-rank
    # group, train_utils.wrap_fsdp): weights are cast once per forward, not at every op
    param_dtype = torch.bfloat16 if cuda and cfg.dtype == "bfloat16" else None

    tokenizer = load_tokenizer(cfg.init_from)
    model_config = ModelConfig.from_json(Path(cfg.init_from) / "config.json")
    pad_id, image_size = tokenizer.pad_token_id, model_config.force_image_size
    stages = cfg.curriculum or [(cfg.data, 0)]
    loaded = [data.read_prompt_records(path, lambda r: encode(tokenizer, model_config, r, cfg), dist,
                                       cfg.max_prompt_tokens, cfg.skip_long_prompts, cfg.prompts_per_step)
              for path, _ in stages]
    stage_records, skipped = [records for records, _ in loaded], sum(n for _, n in loaded)

    # built on the meta device and sharded as it loads: a 38B model never exists whole on one rank
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

    # no_signal: steps without a learning signal, [all, in a row] (grpo_metrics), checkpointed with the run
    state = {"step": 0, "stage": 0, "data_state": (0, 0), "no_signal": [0, 0]}
    run_desc = checkpoint.describe_run(cfg, MAY_CHANGE, [path for path, _ in stages], model_config)
    run_desc["curriculum_steps"] = [first for _, first in stages]
    # init_from may move, but its content is the KL reference and the tokenizer of the whole run
    run_desc["sha256 of init_from"] = checkpoint.model_sha256(cfg.init_from)
    resume_from = checkpoint.find_resume_checkpoint(cfg.out_dir) if cfg.resume else None
    if resume_from is not None:   # weights, Adam moments, RNG, data position; refused if changed
        at = int(checkpoint.STEP_DIR.match(resume_from.name).group(1))
        state = checkpoint.load_checkpoint(resume_from, model, optimizer, stages_begun(run_desc, at),
                                           cfg.allow_run_change, trim=lambda saved: stages_begun(saved, at))
        state.setdefault("no_signal", [0, 0])   # a checkpoint of an older version
        if dist.is_main:
            print(f"resumed from {resume_from} at step {state['step']}")
    logger = tu.RunLogger(cfg.out_dir, cfg, cfg.wandb_project, cfg.run_name, enabled=dist.is_main,
                          resume_step=state["step"] if resume_from is not None else None)
    own_sampler = sampler is None   # closed at the end; a hook's belongs to its caller
    sampler = sampler or rollout_sampler(cfg, dist, model, tokenizer, resume_from or cfg.init_from)
    reward_cfg = rewards.RewardConfig(accuracy_weight=cfg.accuracy_weight,
                                      think_mode=cfg.mode == "think", verifier_url=cfg.verifier_url,
                                      verifier_api_key_env=cfg.verifier_api_key_env, num_workers=cfg.reward_workers)
    rewards.verifier_api_key(reward_cfg)   # a named but unset key variable fails now, not at the first step
    reward_fn = reward_fn or (lambda texts, records: rewards.score_batch(   # eqs. 1-3
        texts, [r.answer for r in records], [r.options for r in records],
        [r.question for r in records], reward_cfg))
    run = Run(cfg, dist, tokenizer, model_config, sampler, reward_fn)
    critical_seqs = critical_token_sequences(tokenizer, cfg.critical_words)
    # Fig. 10's "entropy above 6.8 nats", scaled to this vocabulary
    high_threshold = high_entropy_threshold(model_config.llm_config["vocab_size"])
    history, no_signal = [], state["no_signal"]   # steps without a learning signal: all, in a row (grpo_metrics)
    nonfinite = 0   # steps in a row with a NaN/inf loss or grad norm (their updates were skipped)

    for step in range(state["step"], cfg.steps):
        t_step = time.time()
        stage = configurator.stage_at(step, stages)
        if stage != state["stage"]:   # §5.3: a new dataset starts from its own beginning
            state.update(stage=stage, data_state=(0, 0))
        records, max_tokens = stage_records[stage], configurator.value_at(step, cfg.response_length_schedule)
        sums = dict.fromkeys(grpo_metrics.SUMS, 0.0)

        # 1. rollouts and rewards (eqs. 1-3). §5.5 dynamic sampling: a group whose rollouts all
        # got the same reward has A = 0 everywhere; drop it, sample new prompts until P are left
        groups = []
        with torch.no_grad():
            for round_ in range(cfg.max_sampling_rounds if cfg.dynamic_sampling else 1):
                indices, state["data_state"] = data.next_batch(
                    len(records), P, cfg.seed + 1000 * stage, state["data_state"])
                counted = rewards.total_stats.as_dict()
                new, rollout_s, reward_s = sample_groups(run, step, round_, records, indices,
                                                         max_tokens)
                for key in grpo_metrics.VERIFIER_SUMS:   # this round's score_batch calls (none: a hook)
                    sums[key] += getattr(rewards.total_stats, key) - counted[key]
                grpo_metrics.add_sample_sums(sums, new, cfg.blind_phrases)
                for key, value in (("rollout_s", rollout_s), ("reward_s", reward_s), ("rounds", 1)):
                    sums[key] += value
                groups += [g for g in new
                           if not cfg.dynamic_sampling or len({s["reward"] for s in g}) > 1]
                if not cfg.dynamic_sampling or tu.all_reduce_sum(float(len(groups)), dist) >= P:
                    break
        if cfg.dynamic_sampling:   # exactly P groups over all ranks: the first in rank order
            counts = [len(groups)]
            if dist.world_size > 1:
                counts = [0] * dist.world_size
                tdist.all_gather_object(counts, len(groups))
            before = sum(counts[:dist.rank])
            groups = groups[:max(0, P - before)]
            for j, group in enumerate(groups):   # positions renumbered in that order
                for s in group:
                    s["pos"] = before + j

        # 2. group-normalised advantages (eq. 6)
        for group in groups:
            rewards_ = torch.tensor([[s["reward"] for s in group]], dtype=torch.float64)
            adv = group_advantages(rewards_, cfg.adv_eps, cfg.adv_scale_by_std)[0]
            for s, a in zip(group, adv.tolist()):
                s["advantage"] = a

        # 3. eq. 7 over K mini-batches x E epochs. Mini-batch k holds the groups at global positions
        # k, k+K, ... (the same split for any world size); its normaliser counts over all ranks
        sampler.sleep()
        t0 = time.time()
        samples = [s for g in groups for s in g]
        minis = [[s for s in samples if s["pos"] % K == k] for k in range(K)]
        count = (lambda ss: float(len(ss))) if cfg.loss_agg == "seq-mean-token-mean" else \
            (lambda ss: float(sum(len(s["response_ids"]) for s in ss)))
        normalisers = [max(1.0, tu.all_reduce_sum(count(m), dist)) for m in minis]
        need_old = K > 1 or E > 1   # else pi_old is the training forward, detached: ratio 1
        nets = [("old_logp", model)] * need_old + [("ref_logp", ref_model)] * (cfg.kl_beta > 0)
        with torch.no_grad():   # pi_old, pi_ref log-probs of every sample, before any update
            for mini in minis if nets else []:
                for micro in micro_batches(mini, cfg, dist, pad_id):
                    for key, net in nets:
                        logp = logprobs.sequence_logprobs(net, micro, pad_id, image_size, cfg, False)[0]
                        for i, s in enumerate(micro):
                            s[key] = logp[i, :len(s["response_ids"])]
        sums["groups_trained"] = float(len(groups))
        skipped_updates = 0
        for epoch in range(E):
            for k, mini in enumerate(minis):
                for micro in micro_batches(mini, cfg, dist, pad_id):
                    forward = logprobs.sequence_logprobs(model, micro, pad_id, image_size, cfg, True)
                    logp, _, mask = forward
                    old = logprobs.padded([s.get("old_logp") for s in micro], mask) if need_old \
                        else logp.detach()
                    ref = logprobs.padded([s.get("ref_logp") for s in micro], mask) if ref_model else None
                    adv = torch.tensor([s["advantage"] for s in micro], device=logp.device)
                    loss, stats = policy_loss(logp, old, ref, adv, mask, cfg)
                    loss = loss / normalisers[k]   # eq. 7's mean over the whole mini-batch
                    dummy = micro[0].get("dummy", False)
                    # FSDP averages gradients over ranks; the world size makes it eq. 7's sum
                    (loss * (0.0 if dummy else dist.world_size)).backward()
                    if dummy:
                        continue
                    for key, value in stats.items():
                        sums[key] += value
                    sums["loss"] += float(loss.detach()) / (K * E)   # over ranks: mean per update
                    if epoch == 0:
                        grpo_metrics.add_train_sums(sums, micro, forward, critical_seqs,
                                                    high_threshold)
                grad_norm = tu.clip_grad_norm(trainable, cfg.grad_clip)
                lr = tu.lr_at((step * E + epoch) * K + k, (cfg.schedule_steps or cfg.steps) * K * E, cfg.lr,
                              cfg.warmup_steps, cfg.lr_schedule, cfg.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if math.isfinite(grad_norm):
                    optimizer.step()
                else:   # one bad batch must not poison the weights and Adam moments
                    print(f"step {step}: non-finite grad norm, optimizer step skipped", flush=True)
                    skipped_updates += 1
                optimizer.zero_grad(set_to_none=True)
                last = {"grad_norm": grad_norm, "lr": lr, "skipped": float(skipped_updates)}
        train_s = time.time() - t0

        # 4. the new weights into the sampler (vLLM; builtin's bf16 copy)
        t0 = time.time()
        sampler.update_weights(model)
        sync_s = time.time() - t0

        # 5. metrics over all ranks, progress, checkpoint
        sums["verifier_circuit_open"] = float(rewards.verifier_circuit_open(reward_cfg))
        info = {"data/stage": stage, "data/epoch": state["data_state"][0],
                "data/max_response_tokens": max_tokens, "data/skipped_long_prompts": skipped,
                "time/rollout": sums["rollout_s"], "time/reward": sums["reward_s"],
                "time/train": train_s, "time/sync": sync_s, "time/step": time.time() - t_step}
        metrics = grpo_metrics.step_metrics(sums, last, dist, info)
        grpo_metrics.count_no_signal(metrics, no_signal, step, cfg.out_dir, dist.is_main)
        history.append(metrics)
        logger.log(step + 1, metrics)
        logger.progress(step + 1, cfg.steps, reward=metrics["reward/mean"],
                        acc=metrics["reward/accuracy"], len=metrics["response/len_mean"],
                        entropy=metrics["entropy/mean"])
        state["step"] = step + 1
        # with K x E updates per step, any skipped one makes the step non-finite
        grad_norm = float("nan") if skipped_updates else metrics["train/grad_norm"]
        nonfinite = tu.nonfinite_streak(nonfinite, step + 1, metrics["train/loss"], grad_norm,
                                        cfg.max_nonfinite_steps, cfg.out_dir, cfg.lr)
        if nonfinite and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            print(f"step {step + 1}: non-finite loss or grad norm, no checkpoint", file=sys.stderr, flush=True)
        elif (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            tu.require_finite_weights(model, dist, step + 1)
            checkpoint.save_checkpoint(cfg.out_dir, step + 1, model, optimizer, model_config, tokenizer,
                                       {k: v for k, v in state.items() if k != "step"},
                                       keep_last=cfg.keep_last, run=run_desc,
                                       save_dtype=torch.bfloat16 if cuda else None)
    if no_signal[0] >= grpo_metrics.NO_SIGNAL_WARNING and dist.is_main:
        print(f"WARNING: {cfg.out_dir}: {no_signal[0]} of {state['step']} steps had no learning "
              "signal; this arm barely trained", file=sys.stderr, flush=True)
    logger.finish()
    if own_sampler:   # vLLM's shutdown needs the process groups that cleanup_distributed destroys
        sampler.close()
    return history


if __name__ == "__main__":
    main(configurator.parse_config(Config))
    tu.cleanup_distributed()
