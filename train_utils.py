"""
Training utilities shared by sft.py, grpo.py and connector_tune.py, top to bottom (the config
parser is configurator.py): torchrun/distributed setup, FSDP2 wrapping, full state dicts and sharded
weight loading, RNG state, the LR schedule, logging (W&B + metrics.jsonl + ETA).
Checkpoints (atomic writes, exact resume) are checkpoint.py, built on the state dicts and RNG state here.
"""
import dataclasses
import datetime
import functools
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
import torch.utils.checkpoint
from safetensors import safe_open
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

import data
from chat import IMG_CONTEXT_TOKEN, load_tokenizer
from model import ModelConfig, build_model, checkpoint_files, set_trainable, tied_lm_head

# -----------------------------------------------------------------------------
# distributed: everything comes from torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), so
# multi-node is `torchrun --nnodes=N --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT ...` with no code change


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self):
        return self.rank == 0


def setup_distributed(timeout_minutes=60):
    """One process per GPU (nccl) or per CPU worker (gloo). Without torchrun's env: a single process.
    The generous timeout covers ranks waiting for the slowest rank's rollouts. A process group that is already
    up (several runs in one torchrun launch, as the tests do) is joined, not started again."""
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if tdist.is_initialized():
        return Dist(tdist.get_rank(), tdist.get_world_size(), local_rank, device)
    if cuda:
        torch.cuda.set_device(device)
    if "RANK" not in os.environ:
        return Dist(local_rank=local_rank, device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    tdist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes),
                             device_id=device if cuda else None)
    return Dist(rank, world_size, local_rank, device)


def cleanup_distributed(wait_for_peers=True):
    """Tear the process group down. wait_for_peers: a barrier first, so that no rank destroys its group while a
    peer still works (rank 0 writing the last checkpoint or the results): in CI a gloo rank that left early
    aborted at exit ("terminate called without an active exception", SIGABRT) while rank 0 was still busy.
    False after an exception: the peers may be inside a collective this rank will never join (waiting would
    hang until the timeout); torchrun stops them once this rank exits."""
    if tdist.is_initialized():
        if wait_for_peers and tdist.get_world_size() > 1:
            tdist.barrier()
        tdist.destroy_process_group()


def _rank():
    return tdist.get_rank() if tdist.is_initialized() else 0


def _world_size():
    return tdist.get_world_size() if tdist.is_initialized() else 1


def _barrier():
    if tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.barrier()


def _all_reduce(value, dist, op):
    if dist.world_size == 1:
        return value
    if isinstance(value, torch.Tensor):
        tdist.all_reduce(value, op=op)  # in place
        return value
    t = torch.tensor(float(value), dtype=torch.float64, device=dist.device)
    tdist.all_reduce(t, op=op)
    return t.item()


def all_reduce_sum(value, dist):
    """Sum over ranks of a float (returns a float) or a tensor (reduced in place and returned).
    E.g. the global token count that makes the loss normalisation independent of the world size."""
    return _all_reduce(value, dist, tdist.ReduceOp.SUM)


def all_reduce_max(value, dist):
    return _all_reduce(value, dist, tdist.ReduceOp.MAX)


DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def torch_dtype(name, device="cpu"):
    """The one dtype mapping: "bfloat16" | "float32" | "float16" -> torch dtype; "auto": bfloat16 on a GPU,
    float32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r}: expected auto or one of {sorted(DTYPES)}")
    return DTYPES[name]


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device

# -----------------------------------------------------------------------------
# FSDP2: one fully_shard group per transformer block, so at most one block is all-gathered at a time

BLOCK_LISTS = ("vision_model.encoder.layers", "language_model.model.layers")


def transformer_blocks(model):
    blocks = []
    for path in BLOCK_LISTS:
        try:
            blocks.extend(model.get_submodule(path))
        except AttributeError:
            pass
    if not blocks:
        raise ValueError(f"{type(model).__name__} has none of the block lists {BLOCK_LISTS}")
    return blocks


def checkpoint_block(block):
    """Activation checkpointing by wrapping the block's forward: parameter names stay unchanged (unlike
    checkpoint_wrapper's `_checkpoint_wrapped_module.`), so state dicts and vLLM weight names still match."""
    forward = block.forward

    @functools.wraps(forward)
    def checkpointed_forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)  # generation / no_grad: nothing to save
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = checkpointed_forward


def wrap_fsdp(model, dist, param_dtype=None, activation_checkpointing=False, reshard_after_forward=True):
    """FSDP2 per vision block and per LLM block, the rest (embeddings, mlp1, norms, lm_head) in the root
    group. param_dtype=torch.bfloat16: bf16 compute, fp32 sharded master weights and fp32 grad
    reduction. Frozen parameters need nothing special: FSDP2 all-gathers them for compute and only
    reduce-scatters the gradients that exist (mixed requires_grad inside one group works, tested).
    Activation checkpointing also applies with one process. One process with param_dtype: FSDP2 over a
    one-rank group, for its cast: each group's weights become param_dtype once per forward (the "all-gather"
    is a copy), where autocast would cast every weight at every op; fp32 master weights and gradients stay."""
    blocks = transformer_blocks(model)
    if activation_checkpointing:
        for block in blocks:
            checkpoint_block(block)
    if dist.world_size == 1 and param_dtype is None:
        return model
    if not tdist.is_initialized():   # one process without torchrun: a one-rank group, no rendezvous
        tdist.init_process_group("nccl" if dist.device.type == "cuda" else "gloo", store=tdist.HashStore(),
                                 rank=0, world_size=1)
    mesh = init_device_mesh(dist.device.type, (dist.world_size,))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    # root (None = FSDP2's root default): stays unsharded from forward until the end of backward, so
    # lm_head.weight can be used outside forward (chunked log-probs on return_hidden=True outputs).
    # mlp1 stays in it: a group of its own returns a view and makes FSDP2 warn about in-place ops on it
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=None if reshard_after_forward else False)
    return model


def lockstep_micro_batches(micro_batches, dummy, dist):
    """FSDP2 needs the same number of forward/backward passes on every rank (each one all-gathers with the other
    ranks): a rank with fewer micro-batches than the most any rank has runs `dummy` ones, which the caller makes
    add exactly 0 to the loss."""
    n = int(all_reduce_max(float(len(micro_batches)), dist))
    return micro_batches + [dummy] * (n - len(micro_batches))


def clip_grad_norm(parameters, max_norm):
    """Clips (max_norm > 0) and returns the global grad norm as a float; under FSDP2 the norm is a DTensor."""
    parameters = [p for p in parameters if p.grad is not None]
    if not parameters:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm if max_norm > 0 else float("inf"))
    return float(full_tensor(norm))


def nonfinite_streak(streak, step, loss, grad_norm, limit, out_dir, lr):
    """-> the steps in a row with a NaN/inf loss or grad norm, this one counted (0 after a finite one). The
    limit-th stops the run with an error naming the step and the values: sft.py and grpo.py skip such updates and
    save no checkpoint after them, so the last checkpoint in out_dir is a finite one."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return 0
    if streak + 1 >= limit:
        raise RuntimeError(f"step {step}: train/loss {loss} and train/grad_norm {grad_norm}: a NaN/inf loss or grad "
                           f"norm {streak + 1} steps in a row (max_nonfinite_steps={limit}), run stopped; the last "
                           f"finite checkpoint in {out_dir} stays. Lower --lr={lr}?")
    return streak + 1


def require_finite_weights(model, dist, step):
    """Raises when any rank's parameters (their local shards) hold NaN/inf: called before every checkpoint save,
    so a non-finite checkpoint is never written."""
    bad = not all(bool(torch.isfinite(p.to_local() if isinstance(p, DTensor) else p).all())
                  for p in model.parameters())
    if all_reduce_sum(float(bad), dist):
        raise RuntimeError(f"step {step}: the weights hold NaN/inf, no checkpoint written (a learning rate too high?)")

# -----------------------------------------------------------------------------
# state dicts under the original parameter names

WRAPPER_PREFIX = re.compile(r"(^|\.)(_checkpoint_wrapped_module|_orig_mod|_fsdp_wrapped_module)\.")


def clean_name(name):
    return WRAPPER_PREFIX.sub(r"\1", name)


def _is_dtensor(t):
    return isinstance(t, DTensor)


def full_tensor(t):
    """A whole tensor from an FSDP2 shard (a collective: every rank calls it in the same order), else t."""
    return t.full_tensor() if _is_dtensor(t) else t


def reshard(model):
    """Frees the all-gathered parameters of every FSDP2 group. Useful after no_grad forwards (sampling,
    reference-model log-probs), which leave the root group unsharded; a no-op without FSDP2.
    (While unsharded, model.parameters() are the gathered tensors: build optimizers before any forward.)"""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def full_state_dict(model, dtype=None):
    """{original name: full CPU tensor} on rank 0 ({} on the others). One tensor is gathered at a time, and
    cast to `dtype` on the way, so rank 0 needs host memory for one copy of the weights in `dtype`.
    Collective under FSDP2: every rank must call it."""
    rank = _rank()
    out = {}
    for name, tensor in model.state_dict().items():
        full = full_tensor(tensor)
        if rank == 0:
            out[clean_name(name)] = full.detach().to("cpu", dtype=dtype or full.dtype, copy=True)
        del full
    return out


def _local(t):
    return t.to_local() if _is_dtensor(t) else t


def _unique_state(model):
    """[(names, tensor)] of model.state_dict(keep_vars=True), tied tensors (embed/lm_head) listed once."""
    groups = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), ([], tensor))[0].append(clean_name(name))
    return list(groups.values())


def _copy_into(param, value):
    """param (plain, or an FSDP2 DTensor: this rank's slice is cut from the full value) <- full value."""
    with torch.no_grad():
        if _is_dtensor(param):
            value = value.to(device=param.device, dtype=param.dtype)
            value = distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
            param.to_local().copy_(value.to_local())
        else:
            param.copy_(value)


def load_weights(path, model, master_weights=None, warn_inexact=False):
    """A model.py checkpoint's weights into a plain or FSDP2-sharded model. Each rank reads one tensor at a
    time (safetensors, lazily) and keeps its own slice. Tied tensors (embed/lm_head) load from either name.
    master_weights: {name: this rank's local tensor}, taking precedence (see checkpoint.save_checkpoint)."""
    master_weights = master_weights or {}
    files = {}
    for file in checkpoint_files(path):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            files.update({key: file for key in f.keys()})
    wanted, missing = set(), []
    for names, tensor in _unique_state(model):
        wanted.update(names)
        name = next((n for n in names if n in files), None)
        if names[0] in master_weights:
            with torch.no_grad():
                _local(tensor).copy_(master_weights[names[0]])
        elif name is not None:
            with safe_open(str(files[name]), framework="pt", device="cpu") as f:
                value = f.get_tensor(name)
            if tuple(value.shape) != tuple(tensor.shape):
                raise ValueError(f"{files[name]}: {name} has shape {list(value.shape)}, the model "
                                 f"{list(tensor.shape)}")
            if warn_inexact and value.dtype != tensor.dtype and tensor.is_floating_point():
                print(f"load_checkpoint: warning: {name} is {value.dtype} in {path} but {tensor.dtype} in the "
                      f"model and has no master copy: the resume is not bitwise exact", file=sys.stderr)
            _copy_into(tensor, value)
        else:
            missing.append(names[0])
    unexpected = sorted(set(files) - wanted)
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the model: missing {missing[:10]}, "
                         f"unexpected {unexpected[:10]}")


def load_model_sharded(path, dist, trainable, param_dtype=None, activation_checkpointing=False):
    """model.load_model for training: built on the meta device, trainable modules set, wrapped with FSDP2
    (world_size > 1), allocated on dist.device and filled by load_weights, so no rank ever holds the whole
    model. Parameters are float32 (the master weights); param_dtype is the compute dtype under FSDP2."""
    path = Path(path)
    config = ModelConfig.from_json(path / "config.json")
    if tied_lm_head(config) and dist.world_size > 1:
        raise ValueError(f"{path}: tie_word_embeddings=True is not supported with FSDP2 meta-device loading "
                         f"(R1V3-38B and InternVL3 are untied); use model.load_model")
    net = build_model(config, device="meta")
    with_buffers = [name for name, m in net.named_modules() if any(True for _ in m.buffers(recurse=False))]
    set_trainable(net, trainable, verbose=dist.is_main)
    wrap_fsdp(net, dist, param_dtype=param_dtype, activation_checkpointing=activation_checkpointing)
    net.to_empty(device=dist.device)
    if tied_lm_head(config):  # to_empty gave lm_head its own tensor
        net.language_model.lm_head.weight = net.language_model.get_input_embeddings().weight
    for name in with_buffers:  # non-persistent buffers (rotary inv_freq) are in no checkpoint: recompute
        parent, _, attr = name.rpartition(".")
        module = net.get_submodule(name)
        with torch.device(dist.device):
            setattr(net.get_submodule(parent), attr, type(module)(config=module.config))
    load_weights(path, net)
    if (path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists():
        net.img_context_token_id = load_tokenizer(path).convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    return net

# -----------------------------------------------------------------------------
# RNG state: python, numpy, torch CPU and the current CUDA device, per rank


def get_rng_state():
    """Tensors and plain Python values only, so checkpoints load with torch.load(weights_only=True): numpy's
    ("MT19937", uint32 keys [624], pos, has_gauss, cached_gaussian) keeps its keys as an int64 tensor."""
    name, keys, *rest = np.random.get_state()
    return {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), *rest),
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_state(state):
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])

# -----------------------------------------------------------------------------
# LR schedule


def lr_at(step, total_steps, base_lr, warmup_steps=0, schedule="cosine", min_lr_ratio=0.0):
    """LR of optimizer step `step` (0-based). Linear warmup over warmup_steps: (step+1)/warmup_steps * base,
    so the first step already learns; then constant, or cosine from base to min_lr_ratio*base at total_steps."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown lr schedule {schedule!r} (constant or cosine)")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if total_steps <= warmup_steps:
        raise ValueError(f"cosine schedule needs total_steps ({total_steps}) > warmup_steps ({warmup_steps})")
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    min_lr = base_lr * min_lr_ratio
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

# -----------------------------------------------------------------------------
# logging: W&B (optional), metrics.jsonl (always), a progress line with ETA


class RunLogger:
    """Only the main rank logs (enabled=dist.is_main). metrics.jsonl gets one JSON line per log() call;
    on resume (resume_step=S) lines with step > S, from the interrupted run, are dropped first, and the
    W&B run id stored in out_dir is reused. A fresh run (resume_step=None) starts an empty metrics.jsonl."""

    def __init__(self, out_dir, config, project, run_name=None, enabled=True, use_wandb=True, resume_step=None):
        self.enabled, self.wandb = enabled, None
        self.start_time, self.start_step = time.time(), resume_step or 0
        if not enabled:
            return
        config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = out_dir / "metrics.jsonl"
        kept = []
        if resume_step is not None and self.metrics_path.exists():
            # data.read_jsonl's policy: the crash's torn last line is dropped, any other bad line is an
            # error naming file:line; json.dumps gives back the very text that log() wrote
            kept = [json.dumps(row) for _, row in data.read_jsonl(self.metrics_path, appended_log=True)
                    if row.get("step", 0) <= resume_step]
        tmp = self.metrics_path.with_name(f".metrics.jsonl.tmp-{os.getpid()}")
        try:
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.metrics_path)
        finally:
            tmp.unlink(missing_ok=True)   # a full disk must not leave it behind
        self.metrics_file = open(self.metrics_path, "a")
        if use_wandb and os.environ.get("WANDB_MODE", "").lower() != "disabled":
            try:   # imported here: wandb is optional (a missing package only turns W&B logging off)
                import wandb
                id_path = out_dir / "wandb_run_id.txt"
                run_id = id_path.read_text().strip() if resume_step is not None and id_path.exists() else None
                # the mode is passed explicitly: wandb reads WANDB_MODE only once per process
                self.wandb = wandb.init(project=project, name=run_name, config=config, dir=str(out_dir),
                                        id=run_id, resume="allow" if run_id else None,
                                        mode=os.environ.get("WANDB_MODE") or None)
                id_path.write_text(self.wandb.id)
            except Exception as e:  # missing package, no API key, no network: keep training, say so
                print(f"RunLogger: warning: W&B disabled ({type(e).__name__}: {e}); metrics go to "
                      f"{self.metrics_path} only", file=sys.stderr)
                self.wandb = None

    def log(self, step, metrics):
        if not self.enabled:
            return
        metrics = {k: v.item() if isinstance(v, torch.Tensor) and v.numel() == 1
                   or isinstance(v, (np.ndarray, np.generic)) and v.size == 1 else v for k, v in metrics.items()}
        # W&B-only objects (histograms, tables) are not written to the jsonl
        row = {k: v for k, v in metrics.items() if v is None or isinstance(v, (bool, int, float, str))}
        self.metrics_file.write(json.dumps({"step": step, **row}) + "\n")
        self.metrics_file.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def progress(self, step, total, **fields):
        """`step 12/100 | 1.20 s/step | elapsed 0:00:14 | eta 0:01:45 | loss 0.1234`; the rate counts only the
        steps of this process (after a resume too)."""
        if not self.enabled:
            return
        elapsed = time.time() - self.start_time
        done = step - self.start_step
        per_step = elapsed / done if done > 0 else float("nan")
        parts = [f"step {step}/{total}", f"{per_step:.2f} s/step" if done > 0 else "? s/step",
                 f"elapsed {_hms(elapsed)}", f"eta {_hms(per_step * (total - step))}"]
        for k, v in fields.items():
            v = v.item() if isinstance(v, torch.Tensor) else v
            parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
        print(" | ".join(parts), flush=True)

    def finish(self):
        if not self.enabled:
            return
        self.metrics_file.close()
        if self.wandb is not None:
            self.wandb.finish()


def _hms(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
