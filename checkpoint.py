"""
Checkpoints of sft.py, grpo.py and connector_tune.py: atomic, durable writes and exact resume. Top to bottom:
durable writes, weights-only loads, the out_dir lock and debris, checksums, validation and the resume choice, the
run description and model identity, the full-disk guard, the last/best lookups (best.json), then save_checkpoint
and load_checkpoint. The state dicts and RNG state they store come from train_utils.py.

Checkpoint layout (out_dir/step_000123/), loadable by model.load_model, eval.py and vLLM as is:
    config.json, model*.safetensors[.index.json], tokenizer files   model.save_model, original names
    trainer_state.pt        step, world size, the script's train_state, RNG states of every rank
    optim_rank{r}.pt        rank r's optimizer shard (local tensors of its DTensors) and, when the
                            safetensors were written in a lower precision, its fp32 master weights
    checksums.json          {file name: sha256} of every other file, written last, before the commit rename
The .pt files hold tensors and plain Python values only and load with torch.load(weights_only=True): a checkpoint
is input, and a pickle in it would run code at the resume (a payload is refused, naming the file).
Checksums: one flipped byte in the tensor data keeps every size and header intact, so validate_checkpoint compares
each file's sha256 with checksums.json. Measured on this box (AMD EPYC with SHA-NI, hashlib, 1 MiB blocks, GB per
CPU-second, so the 2 shared cores' load does not enter): in memory sha256 1.78, sha1 1.91, blake2b 0.89, md5 0.75,
zlib.crc32 3.36; file_sha256 of a 512 MiB file in the page cache 1.31 (the read's copy included). crc32 would be
2.5x cheaper, but these digests also identify a model by content (model_sha256: eval's resume, grpo's init_from),
where a collision must not be findable, so it is sha256, whole files (no per-tensor scheme: per-file is what the
size-keeping corruption needs). At 38B: 77 GB bf16 safetensors + 456 GB of fp32 Adam moments and master weights
(8 + 4 bytes per parameter) = 533 GB, ~410 s on one core. So the work is split: at a save each rank hashes its own
optimizer shard (7 GB on 64 ranks: ~5 s, from the page cache) and rank 0 the safetensors it wrote (77 GB: ~60 s,
next to the minutes of writing them, once per save_every steps); at a resume the files are dealt out round-robin
to the ranks (~6-12 s of hashing each on 64 ranks; the reads are those the load makes next), which agree before
anyone loads (find_resume_checkpoint). A corrupt checkpoint is refused naming the file and sha256s, and --resume
falls back to the newest valid one; model_sha256 checks the model a run starts from against its checksums.json.
It is written into out_dir/.tmp_step_000123, every file and the directory fsynced, and renamed into place as the
very last operation, so a crash at any point leaves the older checkpoints untouched and no directory named step_*
half-written. Rotation renames a checkpoint to .deleting_step_* before deleting it, so a kill mid-delete leaves
debris, never a half-deleted step_*; remove_debris (at startup and before each save) deletes what crashes leave.
A full disk is "no space left on device while writing PATH", and the partial checkpoint is removed at once.
trainer_state.pt also holds what defines the run (describe_run); load_checkpoint refuses a resume that changes it
unless allow_run_change. find_resume_checkpoint validates the newest checkpoint and falls back to an older one.
Resume restores the weights (this rank's exact fp32 master weights where saved), the optimizer shard and each
rank's own RNG state, and returns the script's train_state: the world size must equal the saving run's.
"""
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import pickle
import re
import shutil
import socket
import sys
import time
import zipfile
from pathlib import Path

import torch
import torch.distributed as tdist
from torch.distributed.tensor import DTensor

from model import checkpoint_files, save_model
from train_utils import (_barrier, _is_dtensor, _local, _rank, _unique_state, _world_size, clean_name,
                         full_state_dict, get_rng_state, load_weights, reshard, set_rng_state)

STEP_DIR = re.compile(r"^step_(\d+)$")


def _param_names(model, optimizer):
    names = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), clean_name(name))
    try:
        return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]
    except KeyError:
        raise ValueError("the optimizer holds parameters that are not in the model") from None


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _torch_load(path):
    """torch.load of our own .pt files: tensors and plain Python values only (weights_only=True, the allowlist of
    torch/_weights_only_unpickler.py: tensors, dicts, lists, tuples, sets, str/int/float/bool/None, torch dtypes),
    so a pickled payload is refused, never executed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refused to load: it holds objects other than tensors and plain values (a pickle "
                         f"could run code; torch.load weights_only=True says: {str(e).splitlines()[0]})") from None


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


_HELD_LOCKS = {}   # resolved out_dir -> its open lock file, held until the process ends


def lock_out_dir(out_dir):
    """One run per out_dir: an exclusive advisory fcntl.flock on out_dir/.lock, taken before anything in out_dir is
    read or deleted (remove_debris would otherwise delete a running run's temporary checkpoint) and held until the
    process ends. A second run gets a RuntimeError naming the holder (pid, host, command, start time, written into
    the lock file). The kernel drops a flock with its process, kill -9 included, so a lock file left by a dead run is
    simply taken over. Taken again in the same process (a test, a script calling main twice), it is a no-op.
    Rank 0 only: it is the one rank that writes out_dir's shared files (metrics.jsonl, best.json, the commit renames,
    remove_debris); the other ranks write only their optimizer shard into rank 0's temporary directory. Across nodes
    on NFS, Linux emulates flock with byte-range locks that the server arbitrates (nfs(5), "local_lock"), so a
    second job on another node is refused as well."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = str(out_dir.resolve())
    if key in _HELD_LOCKS:
        return
    f = open(out_dir / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "(it has not written its details yet)"
        f.close()
        raise RuntimeError(f"{out_dir} is in use by another run: {holder}. Wait for it to end, or use another "
                           f"out_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on host {socket.gethostname()}, command {' '.join(sys.argv)!r}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
    f.flush()
    _HELD_LOCKS[key] = f


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


_TRAINING_STATE = re.compile(r"^(trainer_state\.pt|optim_rank\d+\.pt|checksums\.json|\..*)$")


def _read_sums(path):
    """path's checksums.json as {file name: sha256}; {} when it has none (an older checkpoint, a released model)."""
    file = path / "checksums.json"
    if not file.is_file():
        return {}
    try:
        sums = json.loads(file.read_text())
        assert isinstance(sums, dict) and all(isinstance(v, str) for v in sums.values())
        return sums
    except (ValueError, AssertionError) as e:
        raise ValueError(f"{file}: not a {{file name: sha256}} object ({type(e).__name__}: {e})") from None


def _checked_sha256(file, want=None):
    got = file_sha256(file)
    if want is not None and got != want:
        raise ValueError(f"{file}: corrupt: sha256 {got[:16]}... differs from checksums.json's {want[:16]}...")
    return got


def _check_sums(path, rank=0, world_size=1):
    """Compares the sha256 of this rank's share of path's files (round-robin over the sorted names in
    checksums.json) with checksums.json. ValueError naming the file."""
    for i, (name, want) in enumerate(sorted(_read_sums(path).items())):
        if i % world_size != rank:
            continue
        if not (path / name).is_file():
            raise ValueError(f"{path / name}: missing (listed in checksums.json)")
        _checked_sha256(path / name, want)


def validate_checkpoint(path, rank=0, world_size=1):
    """Checks that a checkpoint can be resumed from: the sha256 of every file against checksums.json (this rank's
    share of the files when rank/world_size are given; see the module docstring), and the cheap checks a checkpoint
    without checksums.json (an older version) also gets: the trainer state loads; every rank's optimizer shard is a
    complete zip; every safetensors file is as long as its header says. Raises ValueError naming the file."""
    path = Path(path)
    try:
        if _read_sums(path):
            _check_sums(path, rank, world_size)
        else:
            print(f"warning: {path} has no checksums.json (an older checkpoint): sizes checked, not contents",
                  file=sys.stderr)
        state = _torch_load(path / "trainer_state.pt")
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
    warning naming the problem. None when out_dir has no checkpoint; a ValueError when it has some and none passes
    (starting over beside them would mix two runs). Collective under torchrun: each rank checks its share of the
    files and all ranks agree on the answer."""
    rank, world_size = _rank(), _world_size()
    found = list_checkpoints(out_dir)
    for _, path in reversed(found):
        try:
            validate_checkpoint(path, rank, world_size)
            error = None
        except ValueError as e:
            error = str(e)
        errors = [error]
        if world_size > 1:
            errors = [None] * world_size
            tdist.all_gather_object(errors, error)
        errors = [e for e in errors if e]
        if not errors:
            return path
        if rank == 0:
            print(f"warning: cannot resume from {path}: {'; '.join(errors)}; trying the previous checkpoint",
                  file=sys.stderr)
    if found:
        raise ValueError(f"{out_dir}: none of its {len(found)} checkpoints can be resumed from (warnings above): "
                         f"move them away or use another out_dir")
    return None


def describe_run(cfg, may_change=(), files=(), model_config=None):
    """What defines a run, stored in every checkpoint and compared on resume (load_checkpoint): every field of the
    dataclass cfg except `may_change` (paths, stop points, logging, memory knobs), the sha256 of each data file in
    `files` (so a moved file is fine and an edited one is not), and the model config."""
    run = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in may_change}
    for i, file in enumerate(files):
        run[f"sha256 of data file {i}"] = file_sha256(file)
    if model_config is not None:
        run["model_config"] = model_config.to_dict()
    return json.loads(json.dumps(run, default=str))   # tuples -> lists: compares equal after a save/load


def model_sha256(path):
    """A model directory identified by content: the sha256 of the list of (file name, sha256) of its files
    (config, safetensors, tokenizer, remote code), leaving out the training state (trainer_state.pt,
    optim_rank*.pt, checksums.json) and hidden files. A moved or copied checkpoint keeps it; retrained weights or
    another tokenizer at the same path change it. The files are hashed, not looked up in checksums.json (a file
    replaced by hand would keep a stale entry), and checked against it where it lists them: the model that grpo.py
    (--init_from), sft.py (--checkpoint) and eval.py start from is verified too (a ValueError naming a corrupt
    file). 77 GB of bf16 weights at 38B take ~60 s of one core (module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model directory")
    sums = _read_sums(path)
    listing = "".join(f"{p.name}\t{_checked_sha256(p, sums.get(p.name))}\n" for p in sorted(path.iterdir())
                      if p.is_file() and not _TRAINING_STATE.match(p.name))
    return hashlib.sha256(listing.encode()).hexdigest()


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

    per_rank = [None] * world_size   # (RNG state, sha256 of the optimizer shard) of every rank
    if world_size > 1:
        tdist.all_gather_object(per_rank, (get_rng_state(), file_sha256(tmp / f"optim_rank{rank}.pt")))
    else:
        per_rank[0] = (get_rng_state(), file_sha256(tmp / f"optim_rank{rank}.pt"))
    if rank == 0:
        with _writing(tmp / "trainer_state.pt", tmp):
            _torch_save_durable({"step": step, "world_size": world_size, "train_state": train_state,
                                 "rng": [r for r, _ in per_rank], "save_dtype": str(save_dtype),
                                 "time": time.time(), "run": run}, tmp / "trainer_state.pt")
        sums = {p.name: file_sha256(p) for p in tmp.iterdir() if p.is_file() and not p.name.startswith("optim_")}
        sums.update({f"optim_rank{r}.pt": digest for r, (_, digest) in enumerate(per_rank)})
        with _writing(tmp / "checksums.json", tmp), open(tmp / "checksums.json", "w") as f:
            f.write(json.dumps(sums, indent=1, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
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


def load_checkpoint(path, model, optimizer=None, run=None, allow_run_change=False, trim=None):
    """Restores weights (into a plain or FSDP2-sharded model; each rank reads only the tensors it needs,
    one at a time, from the safetensors), the optimizer shard and this rank's RNG state.
    Returns the saved train_state with "step" added. The world size must equal the saving run's.
    run: describe_run(...) of this run; a checkpoint of a run described otherwise is a ValueError listing the
    differences (a warning with allow_run_change). trim(saved description) -> the part compared with run."""
    path = Path(path)
    rank, world_size = _rank(), _world_size()
    trainer_state = _torch_load(path / "trainer_state.pt")
    if run is not None:
        saved = trainer_state.get("run")
        _check_same_run(path, trim(saved) if trim and saved is not None else saved, run, allow_run_change)
    if trainer_state["world_size"] != world_size:
        raise ValueError(f"{path} was written by {trainer_state['world_size']} ranks but this run has "
                         f"{world_size}: the optimizer shards only fit the same world size")
    shard = _torch_load(path / f"optim_rank{rank}.pt")
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
