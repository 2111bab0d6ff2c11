"""
Supervised finetuning of the InternVL / Skywork-R1V3 chat model (its data: reject.py, rejection sampling).

  cold-start SFT (paper §2, §3.2)   torchrun --nproc_per_node=8 sft.py config/sft_38b.py --data=coldstart.jsonl
  SFT arm of RL vs SFT (§6.1)       the same on math data distilled from the RL model (Table 3)
  connector-only tuning (§3.4)      connector_tune.py: this file's train() with other defaults (Table 2)
  rejection sampling (§2)           reject.py

One optimizer step of train():
  1. A global batch of `global_batch_size` samples comes from data position (epoch, offset) (data.next_batch).
     Each rank tokenises its strided share. Over-long samples are truncated or skipped, and both are counted.
  2. The share is cut into micro-batches (by sample count, or by token budget with micro_batch_tokens):
     right-padded, or packed (one row, no padding: each sample attends only to itself, positions restart at 0).
  3. loss = sum of -log p(token) over assistant tokens / number of assistant tokens in the GLOBAL batch.
     The token count is all-reduced before the first backward, so the update is the same for any world size
     and micro-batch size.
  4. AdamW steps on the trainable modules (vision / connector / llm) with a cosine schedule and warmup.
  5. Every eval_every steps the validation loss is computed. Early stopping with `patience` keeps the best
     checkpoint (out_dir/best.json names it).
Checkpoints (checkpoint.py) hold weights, optimizer shards, RNG states and the data position, so --resume=True
continues bit-exactly. On a GPU the per-GPU memory plan (memory_plan.py) is printed first and a run that cannot fit
is refused; --plan prints it and exits, loading nothing (CPU too).
"""
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import chat
import checkpoint
import configurator
import data
import logprobs
import memory_plan
import train_utils as tu


@dataclass
class Config:
    checkpoint: str = ""                 # model.py checkpoint dir: the model to finetune
    data: str = ""                       # chat JSONL (data.read_chat_jsonl)
    val_data: str = ""                   # chat JSONL for the validation loss
    val_fraction: float = 0.0            # else hold out this share of `data` (seeded) for validation
    out_dir: str = "out/sft"
    # sequences
    max_seq_len: int = 16384             # tokens per sample, image tokens included (§3.4)
    overflow: str = "truncate"           # over-long samples: truncate | skip (both counted and logged)
    max_tiles: int = 0                   # image tiles per image; 0 = the checkpoint's max_dynamic_patch
    packing: bool = False                # one row per micro-batch, no padding, attention within each sample
    # optimisation: §3.4 and §6.1 give batch 64, lr 1e-5, cosine, warmup ratio 0.03
    trainable: list[str] = field(default_factory=lambda: ["vision", "connector", "llm"])
    epochs: float = 2.0
    max_steps: int = 0                   # > 0: this many steps instead of epochs (smoke runs)
    global_batch_size: int = 64          # samples per optimizer step = ranks x micro-batches x micro_batch_size
    micro_batch_size: int = 1            # samples per forward on one rank (when micro_batch_tokens = 0)
    micro_batch_tokens: int = 0          # > 0: tokens per forward instead (next-fit, data order); packing with 0:
                                         # max_seq_len x micro_batch_size
    lr: float = 1e-5
    schedule: str = "cosine"             # cosine | constant
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.05           # not in the paper; InternVL's finetune scripts use 0.05 (matrices only)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0               # not in the paper; 0 = off
    max_nonfinite_steps: int = 3         # a NaN/inf loss or grad norm this many steps in a row stops the run
    loss_chunk_tokens: int = 4096        # lm_head + log-softmax over this many tokens at a time, never [T, V]
    # validation, early stopping, checkpoints
    eval_every: int = 0                  # steps between validation losses; 0 = once per epoch
    patience: int = 0                    # stop after this many evaluations without a new best; 0 = never stop
    save_every: int = 0                  # steps between checkpoints; 0 = only the best and the last
    keep_last: int = 2                   # older step_* dirs are deleted, never the best one
    save_dtype: str = "bfloat16"         # safetensors dtype (released: bf16); exact fp32 goes to the optim shards
    resume: bool = False                 # continue from the last checkpoint in out_dir
    allow_run_change: bool = False       # resume although the model, data or a run-defining setting changed
    # system
    seed: int = 0
    compute_dtype: str = "auto"          # auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32; FSDP2 mixed
                                         # precision, so >1 rank only: one process computes in fp32
    activation_checkpointing: bool = False
    log_every: int = 1
    wandb: bool = True
    wandb_project: str = "r1v3-sft"
    run_name: str = ""
    # memory plan (memory_plan.py): printed at startup on a GPU, where a run that cannot fit is refused
    plan: bool = False                   # print it and exit, loading nothing (CPU too)
    plan_gpus: int = 0                   # GPUs to plan for; 0 = this launch's (torchrun's WORLD_SIZE)
    plan_gpu_gib: float = 0.0            # memory per GPU; 0 = this GPU's (79.19 GiB, an 80 GB H100, on CPU)


# settings a resume may change; every other field, the data files' contents and the model config define the run
# (checkpoint.describe_run). max_steps / epochs are the stop point: a new value also reshapes the cosine LR
MAY_CHANGE = ("checkpoint", "data", "val_data", "out_dir", "resume", "allow_run_change", "max_steps", "epochs",
              "micro_batch_size", "activation_checkpointing", "loss_chunk_tokens", "log_every", "wandb",
              "wandb_project", "run_name", "save_every", "keep_last", "patience", "plan", "plan_gpus",
              "plan_gpu_gib", "max_nonfinite_steps")

# -----------------------------------------------------------------------------
# batches


def tokenize_share(samples, indices, cfg, tokenizer, model_config, dist):
    """This rank's strided share of `indices`, tokenised -> (tokenised samples, n skipped, n truncated)."""
    out, skipped, truncated = [], 0, 0
    for i in data.shard_indices(indices, dist.rank, dist.world_size):
        s = data.tokenize_chat(tokenizer, model_config, samples[i], cfg.max_seq_len, cfg.overflow,
                               cfg.max_tiles or None)
        if s is None:  # over-long with overflow=skip, or truncation left no assistant token
            skipped += 1
            continue
        truncated += s["truncated"]
        out.append(s)
    return out, skipped, truncated


def micro_batches(samples, cfg, pad_id, image_size):
    """Tokenised samples -> model inputs with labels, in data order. Grouped by micro_batch_tokens (next-fit
    token budget) when > 0, else micro_batch_size samples. Right-padded [B,T] with an attention mask, or packed:
    one row without padding, position_ids restarting per sample and no mask (data.pack_samples)."""
    lengths = [len(s["input_ids"]) for s in samples]
    budget = cfg.micro_batch_tokens or (cfg.max_seq_len * cfg.micro_batch_size if cfg.packing else 0)
    size = cfg.micro_batch_size
    groups = data.token_budget_groups(lengths, budget) if budget else \
        [list(range(i, min(i + size, len(samples)))) for i in range(0, len(samples), size)]
    if cfg.packing:
        return [data.pack_samples([samples[i] for i in g], sum(lengths[i] for i in g), pad_id, image_size)
                for g in groups]
    return [data.collate_right_padded([samples[i] for i in g], pad_id, image_size) for g in groups]


def pad_micro_batches(batches, dist, pad_id, image_size):
    """tu.lockstep_micro_batches with sft's dummy: one pad token, no label, a zero dummy tile so the ViT runs too;
    it adds exactly 0 to the loss."""
    dummy = data.collate_right_padded([{"input_ids": [pad_id], "labels": [data.IGNORE_INDEX]}], pad_id, image_size)
    return tu.lockstep_micro_batches(batches, dummy, dist)


def num_targets(batch):
    return int((batch["labels"][:, 1:] != data.IGNORE_INDEX).sum())


def nll_and_entropy(net, batch, device, chunk_tokens):
    """-> (sum of -log p over the labelled next tokens, sum of their entropies (detached), in fp32).
    Position t predicts token t+1; only the labelled positions go through lm_head, chunk by chunk."""
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    hidden = net(batch["input_ids"], pixel_values=batch["pixel_values"], image_flags=batch["image_flags"],
                 attention_mask=batch.get("attention_mask"), position_ids=batch.get("position_ids"),
                 return_hidden=True)                                        # [B,T,D]
    targets = batch["labels"][:, 1:]                                        # [B,T-1]
    keep = targets != data.IGNORE_INDEX
    weight = net.language_model.get_output_embeddings().weight
    if hasattr(weight, "full_tensor"):  # wrap_fsdp keeps the root group (lm_head) unsharded until backward ends
        raise RuntimeError("lm_head.weight is sharded after forward: the FSDP2 root must not reshard after "
                           "forward (train_utils.wrap_fsdp)")
    logp, ent = logprobs.token_logprobs_and_entropy(hidden[:, :-1][keep], weight, targets[keep], chunk_tokens,
                                                   with_grad=torch.is_grad_enabled())
    return -logp.sum(), ent.detach().sum()


def train_step(net, optimizer, batches, dist, cfg):
    """One optimizer step over this rank's micro-batches -> (global mean loss, mean entropy, tokens, grad norm).
    Returns None (and does not step) when the global batch has no labelled token at all. A NaN/inf loss or grad
    norm skips the update (the same on every rank: both are global), so the weights and Adam moments stay finite."""
    n_tokens = int(tu.all_reduce_sum(float(sum(num_targets(b) for b in batches)), dist))
    if n_tokens == 0:
        return None
    nll_sum = ent_sum = 0.0
    for batch in batches:
        nll, ent = nll_and_entropy(net, batch, dist.device, cfg.loss_chunk_tokens)
        # global token mean: FSDP2 averages gradients over ranks, the world_size factor turns that into a sum
        (nll * dist.world_size / n_tokens).backward()
        nll_sum, ent_sum = nll_sum + nll.item(), ent_sum + ent.item()
    grad_norm = tu.clip_grad_norm([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
    loss, ent = (tu.all_reduce_sum(v, dist) / n_tokens for v in (nll_sum, ent_sum))
    if math.isfinite(loss) and math.isfinite(grad_norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, ent, n_tokens, grad_norm


@torch.no_grad()
def validation_loss(net, val_set, cfg, tokenizer, model_config, dist):
    """Token-mean loss over the whole validation set (every rank scores its strided share)."""
    net.eval()
    samples, _, _ = tokenize_share(val_set, list(range(len(val_set))), cfg, tokenizer, model_config, dist)
    image_size = model_config.force_image_size
    batches = pad_micro_batches(micro_batches(samples, cfg, tokenizer.pad_token_id, image_size), dist,
                                tokenizer.pad_token_id, image_size)
    nll_sum = 0.0
    for batch in batches:
        nll_sum += nll_and_entropy(net, batch, dist.device, cfg.loss_chunk_tokens)[0].item()
    n_tokens = tu.all_reduce_sum(float(sum(num_targets(b) for b in batches)), dist)
    tu.reshard(net)  # no backward ran to free the gathered root group
    net.train()
    return tu.all_reduce_sum(nll_sum, dist) / max(n_tokens, 1.0)

# -----------------------------------------------------------------------------
# the training loop (connector_tune.py runs this with its own Config)


def read_splits(cfg):
    samples = data.read_chat_jsonl(cfg.data)
    if cfg.val_data:
        return samples, data.read_chat_jsonl(cfg.val_data)
    if cfg.val_fraction > 0:
        order = np.random.default_rng(cfg.seed).permutation(len(samples))
        n_val = max(1, round(cfg.val_fraction * len(samples)))
        held_out = set(order[:n_val].tolist())
        return ([s for i, s in enumerate(samples) if i not in held_out],
                [s for i, s in enumerate(samples) if i in held_out])
    return samples, []


def train(cfg, dist=None):
    """Runs (or resumes) the SFT loop described in the module docstring -> summary dict (also written to
    out_dir/summary.json). dist: from tu.setup_distributed(); None sets it up (single process or torchrun)."""
    for key, allowed in (("overflow", ("truncate", "skip")), ("schedule", ("cosine", "constant")),
                         ("compute_dtype", ("auto", "bfloat16", "float32")),
                         ("save_dtype", ("bfloat16", "float32"))):
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"--{key}={getattr(cfg, key)!r}: expected one of {allowed}")
    configurator.check_values(cfg, positive=("global_batch_size", "micro_batch_size", "max_seq_len", "epochs",
                                             "loss_chunk_tokens", "log_every", "max_nonfinite_steps"),
                              non_negative=("max_steps", "save_every", "eval_every", "patience", "keep_last",
                                            "micro_batch_tokens", "max_tiles", "warmup_ratio", "val_fraction"),
                              nonempty=("trainable",))
    if not cfg.checkpoint or not cfg.data:
        raise ValueError("--checkpoint (model to finetune) and --data (chat JSONL) are required")
    dist = dist or tu.setup_distributed()
    if dist.device.type == "cuda":   # the memory plan, before anything is loaded
        memory_plan.check_fits(memory_plan.sft_plan(cfg, dist.world_size, dist.device),
                               f"sft.py on {dist.world_size} GPUs", verbose=dist.is_main)
    tu.set_seed(cfg.seed)
    out_dir = Path(cfg.out_dir)
    if dist.is_main:
        checkpoint.lock_out_dir(out_dir)   # one run per out_dir, before anything in it is touched
    train_set, val_set = read_splits(cfg)
    data.check_images(train_set + val_set, decode=True)   # now, not at the step that first draws a bad one
    G, world = cfg.global_batch_size, dist.world_size
    if G % world:
        raise ValueError(f"global_batch_size {G} is not a multiple of the {world} ranks")
    if len(train_set) < G:
        raise ValueError(f"{cfg.data}: {len(train_set)} training samples, fewer than global_batch_size {G}")
    if cfg.patience and not val_set:
        raise ValueError("--patience needs validation data (--val_data or --val_fraction)")
    steps_per_epoch = len(train_set) // G  # data.next_batch drops an epoch's short tail
    total_steps = cfg.max_steps or max(1, round(cfg.epochs * steps_per_epoch))
    warmup_steps = math.ceil(cfg.warmup_ratio * total_steps)
    eval_every = cfg.eval_every or steps_per_epoch
    if dist.is_main:
        print(f"sft: {len(train_set)} train / {len(val_set)} val samples, {total_steps} steps "
              f"({steps_per_epoch}/epoch, warmup {warmup_steps}); global batch {G} = {world} ranks x "
              f"{G // world} samples in micro-batches of "
              f"{f'{cfg.micro_batch_tokens} tokens' if cfg.micro_batch_tokens else cfg.micro_batch_size}"
              f"{' (packed)' if cfg.packing else ''}")

    tokenizer = chat.load_tokenizer(cfg.checkpoint)
    # built on the meta device, sharded, then each rank reads only its slices: no rank holds the whole model
    compute_dtype = {"auto": torch.bfloat16 if dist.device.type == "cuda" else None,
                     "bfloat16": torch.bfloat16, "float32": None}[cfg.compute_dtype]
    net = tu.load_model_sharded(cfg.checkpoint, dist, cfg.trainable, param_dtype=compute_dtype,
                                activation_checkpointing=cfg.activation_checkpointing).train()
    model_config = net.config
    decay = [p for p in net.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.requires_grad and p.dim() < 2]  # norms, biases, ls1/ls2
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)
    state = {"data_state": (0, 0), "best_val": math.inf, "best_step": None, "bad_evals": 0, "stopped": False,
             "skipped": 0, "truncated": 0, "tokens": 0, "val_history": [], "loss": None}
    step, last = 0, checkpoint.find_last_checkpoint(out_dir)
    if last is not None and not cfg.resume:
        raise ValueError(f"{out_dir} already has checkpoints ({last.name}): pass --resume=True or another out_dir")
    if dist.is_main:
        checkpoint.remove_debris(out_dir)   # a partial checkpoint of a crash (on a full disk it blocks the resume)
    run = checkpoint.describe_run(cfg, MAY_CHANGE, [cfg.data] + ([cfg.val_data] if cfg.val_data else []), model_config)
    run["sha256 of checkpoint"] = checkpoint.model_sha256(cfg.checkpoint)   # may move; its tokenizer is the run's
    if last is not None:
        last = checkpoint.find_resume_checkpoint(out_dir)   # the newest one that is complete on disk
    if last is not None:
        state = checkpoint.load_checkpoint(last, net, optimizer, run, cfg.allow_run_change)
        step = state.pop("step")
        if dist.is_main:
            print(f"resumed from {last} at step {step}, data position {state['data_state']}")
            if state["best_step"] is not None:  # a crash between saving the best and marking it
                best = out_dir / f"step_{state['best_step']:06d}"
                try:   # never mark a corrupt checkpoint best (the resumed one was checked already)
                    if state["best_step"] != step:
                        checkpoint.model_sha256(best)   # checks its model files against checksums.json
                    checkpoint.mark_best(out_dir, state["best_step"], val_loss=state["best_val"])
                except ValueError as e:
                    print(f"warning: not marking {best} as the best checkpoint: {e}", file=sys.stderr)
    logger = tu.RunLogger(out_dir, cfg, cfg.wandb_project, cfg.run_name or None, enabled=dist.is_main,
                          use_wandb=cfg.wandb, resume_step=step if last is not None else None)
    save_dtype = {"bfloat16": torch.bfloat16, "float32": None}[cfg.save_dtype]
    saved_step = step if last is not None else None
    nonfinite = 0   # steps in a row with a NaN/inf loss or grad norm (their updates were skipped)

    def save():
        """Checkpoint of this step unless it exists -> True when step_{step} is on disk. Never a non-finite one:
        not after a non-finite step (the last finite checkpoint stays "last" and best), never NaN/inf weights."""
        nonlocal saved_step
        if nonfinite:
            print(f"step {step}: non-finite loss or grad norm, no checkpoint", file=sys.stderr)
            return False
        if saved_step != step:
            tu.require_finite_weights(net, dist, step)
            checkpoint.save_checkpoint(out_dir, step, net, optimizer, model_config, tokenizer, dict(state),
                                       keep_last=cfg.keep_last, save_dtype=save_dtype, run=run)
            saved_step = step
        return True

    image_size, pad_id = model_config.force_image_size, tokenizer.pad_token_id
    while step < total_steps and not state["stopped"]:
        t0 = time.time()
        indices, state["data_state"] = data.next_batch(len(train_set), G, cfg.seed, state["data_state"])
        samples, skipped, truncated = tokenize_share(train_set, indices, cfg, tokenizer, model_config, dist)
        batches = pad_micro_batches(micro_batches(samples, cfg, pad_id, image_size), dist, pad_id, image_size)
        lr = tu.lr_at(step, total_steps, cfg.lr, warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        result = train_step(net, optimizer, batches, dist, cfg)
        step += 1
        state["skipped"] += int(tu.all_reduce_sum(float(skipped), dist))
        state["truncated"] += int(tu.all_reduce_sum(float(truncated), dist))
        if result is None:
            print(f"step {step}: no assistant token in the global batch (all skipped?), no update", file=sys.stderr)
        else:
            state["loss"], mean_entropy, n_tokens, grad_norm = result
            state["tokens"] += n_tokens
            seq_tokens = tu.all_reduce_sum(float(sum(len(s["input_ids"]) for s in samples)), dist)
            metrics = {"train/loss": state["loss"], "train/entropy": mean_entropy, "train/lr": lr,
                       "train/grad_norm": grad_norm, "train/target_tokens": n_tokens,
                       "train/tokens_per_s": seq_tokens / (time.time() - t0), "data/epoch": state["data_state"][0],
                       "data/skipped_total": state["skipped"], "data/truncated_total": state["truncated"]}
            logger.log(step, metrics)
            nonfinite = tu.nonfinite_streak(nonfinite, step, state["loss"], grad_norm, cfg.max_nonfinite_steps,
                                            out_dir, cfg.lr)
            if step % cfg.log_every == 0 or step == total_steps:
                logger.progress(step, total_steps, loss=state["loss"], lr=lr, grad_norm=grad_norm,
                                skipped=state["skipped"], truncated=state["truncated"])

        if val_set and (step % eval_every == 0 or step == total_steps):
            val = validation_loss(net, val_set, cfg, tokenizer, model_config, dist)
            state["val_history"].append((step, val))
            improved = val < state["best_val"]
            if improved:
                state["best_val"], state["best_step"], state["bad_evals"] = val, step, 0
            else:
                state["bad_evals"] += 1
                state["stopped"] = bool(cfg.patience) and state["bad_evals"] >= cfg.patience
            # logged before the best checkpoint is saved: a crash after the save resumes past this line and keeps
            # it; a crash before resumes from an earlier step, drops it and logs it again
            logger.log(step, {"val/loss": val, "val/best_loss": state["best_val"], "val/bad_evals": state["bad_evals"]})
            if improved and save() and dist.is_main:
                checkpoint.mark_best(out_dir, step, val_loss=val)
            if dist.is_main:
                stop = f"; early stop: {cfg.patience} evaluations without improvement" if state["stopped"] else ""
                best_text = f"best {state['best_val']:.4f} at step {state['best_step']}"
                print(f"step {step}: val loss {val:.4f} ({best_text}){stop}")
        if cfg.save_every and step % cfg.save_every == 0:
            save()
    save()  # the last state, so a finished or early-stopped run resumes as finished

    best = out_dir / f"step_{state['best_step']:06d}" if state["best_step"] is not None else None
    summary = {"steps": step, "total_steps": total_steps, "stopped_early": state["stopped"],
               "train_loss": state["loss"], "best_val_loss": state["best_val"] if val_set else None,
               "best_step": state["best_step"], "best_checkpoint": str(best) if best else None,
               "last_checkpoint": str(out_dir / f"step_{saved_step:06d}") if saved_step is not None else None,
               "val_history": state["val_history"],
               "skipped": state["skipped"], "truncated": state["truncated"], "target_tokens": state["tokens"],
               "trainable": list(cfg.trainable), "world_size": world}
    if dist.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    logger.finish()
    return summary

# -----------------------------------------------------------------------------


def main(argv=None, config_cls=Config):
    cfg = configurator.parse_config(config_cls, argv)
    if cfg.plan:   # before anything is loaded or allocated
        print(memory_plan.format_plan(memory_plan.sft_plan(cfg, memory_plan.plan_gpus(cfg), torch.device("cpu"))))
        return 0
    dist = tu.setup_distributed()
    try:
        summary = train(cfg, dist)
    except BaseException:
        tu.cleanup_distributed(wait_for_peers=False)
        raise
    tu.cleanup_distributed()
    if dist.is_main:
        print(json.dumps({k: v for k, v in summary.items() if k != "val_history"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
