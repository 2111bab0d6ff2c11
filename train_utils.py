"""
Training utilities shared by sft.py, grpo.py and connector_tune.py, top to bottom (the config
parser is configurator.py): torchrun/distributed setup, FSDP2 wrapping, full state dicts,
atomic checkpoints with exact resume, RNG state, the LR schedule, logging (W&B + metrics.jsonl + ETA).

Checkpoint layout (out_dir/step_000123/), loadable by model.load_model, eval.py and vLLM as is:
    config.json, model*.safetensors[.index.json], tokenizer files   model.save_model, original names
    trainer_state.pt        step, world size, the script's train_state, RNG states of every rank
    optim_rank{r}.pt        rank r's optimizer shard (local tensors of its DTensors) and, when the
                            safetensors were written in a lower precision, its fp32 master weights
It is written into out_dir/.tmp_step_000123, every file and the directory fsynced, and renamed into place as the
very last operation, so a crash at any point leaves the older checkpoints untouched and no directory named step_*
half-written. Rotation renames a checkpoint to .deleting_step_* before deleting it, so a kill mid-delete leaves
debris, never a half-deleted step_*; remove_debris (at startup and before each save) deletes what crashes leave.
A full disk is "no space left on device while writing PATH", and the partial checkpoint is removed at once.
trainer_state.pt also holds what defines the run (describe_run); load_checkpoint refuses a resume that changes it
unless allow_run_change. find_resume_checkpoint validates the newest checkpoint and falls back to an older one.
"""
import contextlib
import dataclasses
import datetime
import errno
import functools
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import time
import zipfile
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
from model import (IMG_CONTEXT_TOKEN, ModelConfig, build_model, checkpoint_files, load_tokenizer, save_model,
                   set_trainable, tied_lm_head)

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


def cleanup_distributed():
    if tdist.is_initialized():
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


def clip_grad_norm(parameters, max_norm):
    """Clips (max_norm > 0) and returns the global grad norm as a float; under FSDP2 the norm is a DTensor."""
    parameters = [p for p in parameters if p.grad is not None]
    if not parameters:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm if max_norm > 0 else float("inf"))
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

# -----------------------------------------------------------------------------
# state dicts under the original parameter names

WRAPPER_PREFIX = re.compile(r"(^|\.)(_checkpoint_wrapped_module|_orig_mod|_fsdp_wrapped_module)\.")


def clean_name(name):
    return WRAPPER_PREFIX.sub(r"\1", name)


def _is_dtensor(t):
    return isinstance(t, DTensor)


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
        full = tensor.full_tensor() if _is_dtensor(tensor) else tensor
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
    master_weights: {name: this rank's local tensor}, taking precedence (see save_checkpoint)."""
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


def _param_names(model, optimizer):
    names = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), clean_name(name))
    try:
        return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]
    except KeyError:
        raise ValueError("the optimizer holds parameters that are not in the model") from None

# -----------------------------------------------------------------------------
# RNG state: python, numpy, torch CPU and the current CUDA device, per rank


def get_rng_state():
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])

# -----------------------------------------------------------------------------
# checkpoints

STEP_DIR = re.compile(r"^step_(\d+)$")


def _torch_save_durable(obj, path):
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_debris(out_dir):
    """Deletes what crashed saves and rotations leave in out_dir: temporary and half-deleted checkpoint dirs
    (.tmp_step_*, .deleting_step_*, save_model's .step_*.tmp-PID / .old-PID), temp files of metrics.jsonl and
    best.json, and step_* dirs without trainer_state.pt (a rotation killed mid-delete by an older version; the
    commit rename makes trainer_state.pt present in every complete one). Rank 0 only, before anything is written:
    on a disk filled by a partial checkpoint this is what lets --resume start."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    for p in out_dir.iterdir():
        half_deleted = STEP_DIR.match(p.name) and p.is_dir() and not (p / "trainer_state.pt").exists()
        if half_deleted or (p.name.startswith(".") and "step_" in p.name and p.is_dir()):
            if half_deleted:
                print(f"removing {p}: an incomplete checkpoint (no trainer_state.pt)", file=sys.stderr)
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith((".metrics.jsonl.tmp-", ".best.json.tmp-")) and p.is_file():
            p.unlink(missing_ok=True)


def _delete_checkpoint(path):
    # renamed first (atomic): a kill during rmtree leaves .deleting_step_*, which remove_debris deletes
    doomed = path.with_name(f".deleting_{path.name}")
    path.rename(doomed)
    shutil.rmtree(doomed)


def validate_checkpoint(path):
    """Cheap checks that a checkpoint can be resumed from (a power loss can leave empty or short files): the
    trainer state loads; every rank's optimizer shard is a complete zip; every safetensors file is as long as its
    header says. Raises ValueError naming the file; O(headers), not O(weights)."""
    path = Path(path)
    try:
        state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)
        for r in range(state["world_size"]):
            with zipfile.ZipFile(path / f"optim_rank{r}.pt") as z:   # the central directory sits at the end
                z.infolist()
        for file in checkpoint_files(path):
            with open(file, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(8)
                n = int.from_bytes(head, "little") if len(head) == 8 else -1
                header = json.loads(f.read(n)) if 0 < n <= size - 8 else None
            if header is None:
                raise ValueError(f"{file}: {size} bytes, no complete safetensors header")
            end = max([t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"], default=0)
            if size != 8 + n + end:
                raise ValueError(f"{file}: {size} bytes, the header needs {8 + n + end}")
    except ValueError:
        raise
    except Exception as e:   # FileNotFoundError, a torn zip, unpickling errors, bad JSON
        raise ValueError(f"{path}: {type(e).__name__}: {e}") from None


def find_resume_checkpoint(out_dir):
    """The newest checkpoint that passes validate_checkpoint; each newer one that does not is skipped with a
    warning naming the problem. None when there is none."""
    for _, path in reversed(list_checkpoints(out_dir)):
        try:
            validate_checkpoint(path)
            return path
        except ValueError as e:
            print(f"warning: cannot resume from {path}: {e}; trying the previous checkpoint", file=sys.stderr)
    return None


def describe_run(cfg, may_change=(), files=(), model_config=None):
    """What defines a run, stored in every checkpoint and compared on resume (load_checkpoint): every field of the
    dataclass cfg except `may_change` (paths, stop points, logging, memory knobs), the sha256 of each data file in
    `files` (so a moved file is fine and an edited one is not), and the model config."""
    run = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in may_change}
    for i, file in enumerate(files):
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        run[f"sha256 of data file {i}"] = digest.hexdigest()
    if model_config is not None:
        run["model_config"] = model_config.to_dict()
    return json.loads(json.dumps(run, default=str))   # tuples -> lists: compares equal after a save/load


def _flat(d, prefix=""):
    """{"model_config": {"llm_config": {"rope_theta": 50.0}}} -> {"model_config.llm_config.rope_theta": 50.0}"""
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _check_same_run(path, saved, run, allow_run_change):
    if saved is None:
        print(f"warning: {path} stores no run description (an older checkpoint): the resume is not checked",
              file=sys.stderr)
        return
    saved, run = _flat(saved), _flat(run)
    changed = [f"{k}: {saved.get(k)!r:.100} -> {run.get(k)!r:.100}" for k in sorted(set(saved) | set(run))
               if saved.get(k) != run.get(k)]
    if not changed:
        return
    message = f"{path} was written by another run: " + "; ".join(changed)
    if not allow_run_change:
        raise ValueError(message + ". Resume with the same settings, or pass --allow_run_change=True to continue "
                                   "with the new ones")
    print(f"warning: {message} (continuing: allow_run_change)", file=sys.stderr)


def _is_disk_full(e):
    while e is not None:   # torch reports it as "enforce fail ... unexpected pos", the OSError is chained
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def _writing(path, partial):
    """A full disk while writing `path`: delete the partial checkpoint `partial` (it would keep the disk full and
    block the resume) and say so plainly."""
    try:
        yield
    except Exception as e:
        if not _is_disk_full(e):
            raise
        shutil.rmtree(partial, ignore_errors=True)
        raise OSError(errno.ENOSPC, f"no space left on device while writing {path} (the partial checkpoint "
                                    f"{partial} was removed; free space, then --resume)") from e


def list_checkpoints(out_dir):
    """Complete checkpoints, oldest first: [(step, path)]. Temporary dirs (.tmp_step_*) never match."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for p in out_dir.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.pt").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_last_checkpoint(out_dir):
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def mark_best(out_dir, step, **info):
    """Records out_dir/step_{step} as the best checkpoint (best.json, written atomically); rotation keeps it."""
    path = Path(out_dir) / "best.json"
    tmp = path.with_name(f".best.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"step": step, "path": f"step_{step:06d}", **info}))
    os.replace(tmp, path)


def find_best_checkpoint(out_dir):
    path = Path(out_dir) / "best.json"
    if not path.is_file():
        return None
    best = Path(out_dir) / json.loads(path.read_text())["path"]
    return best if (best / "trainer_state.pt").is_file() else None


def save_checkpoint(out_dir, step, model, optimizer, model_config, tokenizer, train_state, keep_last=3,
                    save_dtype=None, run=None):
    """Writes out_dir/step_{step:06d} atomically (see the module docstring), then deletes the oldest
    checkpoints beyond keep_last (<= 0 keeps all), never the new one nor the one in best.json.
    save_dtype (e.g. torch.bfloat16) is the safetensors dtype; parameters held in another dtype also get
    their exact values saved per rank as master weights, so resuming stays bitwise exact.
    train_state: the script's own picklable state (data position, ...), taken from rank 0.
    run: describe_run(...) of this run, checked by load_checkpoint on resume.
    Collective: every rank must call it. out_dir must be on a filesystem shared by all nodes."""
    out_dir = Path(out_dir)
    rank, world_size = _rank(), _world_size()
    name = f"step_{step:06d}"
    final, tmp = out_dir / name, out_dir / f".tmp_{name}"
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_debris(out_dir)
    weights = full_state_dict(model, dtype=save_dtype)  # collective
    if rank == 0:
        # creates tmp (itself via a temp dir + rename): its own temp dir is ..tmp_step_N.tmp-PID
        with _writing(tmp, out_dir / f".{tmp.name}.tmp-{os.getpid()}"):
            save_model(tmp, weights, model_config, tokenizer)
    del weights
    _barrier()

    # per rank: the optimizer shard (DTensor state as local tensors) and master weights where lossy
    opt_state, dtensor_keys, param_names = None, {}, None
    if optimizer is not None:
        opt_state, param_names = optimizer.state_dict(), _param_names(model, optimizer)
        for idx, state in opt_state["state"].items():
            dtensor_keys[idx] = [k for k, v in state.items() if _is_dtensor(v)]
            opt_state["state"][idx] = {k: _local(v).detach().cpu().clone() if isinstance(v, torch.Tensor) else v
                                       for k, v in state.items()}  # a new dict: the optimizer's stays intact
    master = {}
    if save_dtype is not None:
        for names, t in _unique_state(model):
            if t.dtype != save_dtype and t.is_floating_point():
                master[names[0]] = _local(t).detach().cpu().clone()
    with _writing(tmp / f"optim_rank{rank}.pt", tmp):
        _torch_save_durable({"rank": rank, "world_size": world_size, "optimizer": opt_state,
                             "dtensor_keys": dtensor_keys, "param_names": param_names,
                             "master_weights": master}, tmp / f"optim_rank{rank}.pt")

    rng_states = [None] * world_size
    if world_size > 1:
        tdist.all_gather_object(rng_states, get_rng_state())
    else:
        rng_states[0] = get_rng_state()
    if rank == 0:
        with _writing(tmp / "trainer_state.pt", tmp):
            _torch_save_durable({"step": step, "world_size": world_size, "train_state": train_state,
                                 "rng": rng_states, "save_dtype": str(save_dtype), "time": time.time(),
                                 "run": run}, tmp / "trainer_state.pt")
    _barrier()  # every shard is on disk

    if rank == 0:
        absent = [r for r in range(world_size) if not (tmp / f"optim_rank{r}.pt").is_file()]
        if absent:
            raise RuntimeError(f"{tmp}: optimizer shards of ranks {absent} are missing: out_dir must be on a "
                               f"filesystem that every node writes to")
        _fsync_dir(tmp)
        old = out_dir / f".old_{name}"
        if final.exists():  # saving the same step again (e.g. right after a resume)
            final.rename(old)
        tmp.rename(final)  # the commit point
        _fsync_dir(out_dir)
        shutil.rmtree(old, ignore_errors=True)
        if keep_last > 0:
            best = find_best_checkpoint(out_dir)
            for _, path in list_checkpoints(out_dir)[:-keep_last]:
                if path != final and path != best:
                    _delete_checkpoint(path)
    _barrier()
    return final


def load_checkpoint(path, model, optimizer=None, run=None, allow_run_change=False):
    """Restores weights (into a plain or FSDP2-sharded model; each rank reads only the tensors it needs,
    one at a time, from the safetensors), the optimizer shard and this rank's RNG state.
    Returns the saved train_state with "step" added. The world size must equal the saving run's.
    run: describe_run(...) of this run; a checkpoint of a run described otherwise is a ValueError listing the
    differences (a warning with allow_run_change)."""
    path = Path(path)
    rank, world_size = _rank(), _world_size()
    trainer_state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)
    if run is not None:
        _check_same_run(path, trainer_state.get("run"), run, allow_run_change)
    if trainer_state["world_size"] != world_size:
        raise ValueError(f"{path} was written by {trainer_state['world_size']} ranks but this run has "
                         f"{world_size}: the optimizer shards only fit the same world size")
    shard = torch.load(path / f"optim_rank{rank}.pt", map_location="cpu", weights_only=False)
    reshard(model)  # else a group left unsharded by a no_grad forward would keep computing with stale values

    # weights: this rank's exact master weights where saved, the safetensors for the rest
    load_weights(path, model, master_weights=shard["master_weights"], warn_inexact=True)

    if optimizer is not None:
        if shard["optimizer"] is None:
            raise ValueError(f"{path} was saved without optimizer state (optimizer=None)")
        names = _param_names(model, optimizer)
        if names != shard["param_names"]:
            saved = [n for g in shard["param_names"] for n in g]
            now = [n for g in names for n in g]
            diff = sorted(set(saved) ^ set(now))[:10] or "(same names, different order or groups)"
            raise ValueError(f"{path}: the optimizer's parameters differ from the checkpoint's "
                             f"(trainable modules changed?): {diff}")
        params = [p for group in optimizer.param_groups for p in group["params"]]
        opt_state = shard["optimizer"]
        for idx, keys in shard["dtensor_keys"].items():
            p = params[idx]
            for k in keys:
                opt_state["state"][idx][k] = DTensor.from_local(
                    opt_state["state"][idx][k].to(p.device), p.device_mesh, p.placements, run_check=False,
                    shape=p.shape, stride=p.stride())
        optimizer.load_state_dict(opt_state)

    set_rng_state(trainer_state["rng"][rank])
    return {**trainer_state["train_state"], "step": trainer_state["step"]}

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
            kept = [json.dumps(row) for _, row in data.read_jsonl(self.metrics_path)
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
