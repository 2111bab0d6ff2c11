"""Tests for checkpoint.py: atomic saves, exact resume, rotation, crashes and a full disk, the run check. Also the
crash worker: `python tests/test_checkpoint.py crash POINT OUT_DIR` (launched by test_sigkill_* below). The toy
model and its training loop are test_train_utils.py's (its torchrun worker tests checkpoints under FSDP2)."""
import builtins
import dataclasses
import errno
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import types
import zipfile
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import chat
import checkpoint
import eval as evaluate
import grpo
import model
import sft
import train_utils as tu
from test_train_utils import FROZEN, SINGLE, TOY_CONFIG, build_toy, optimizer_tensors, state_equal, train_toy

# -----------------------------------------------------------------------------
# save, load, resume (single process)


@pytest.mark.parametrize("save_dtype", [None, torch.bfloat16])
def test_save_load_resume_is_exact(tmp_path, save_dtype):
    m, opt = build_toy(SINGLE, 0)
    frozen = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(FROZEN)}
    train_toy(m, opt, SINGLE, 2)
    path = checkpoint.save_checkpoint(tmp_path, 2, m, opt, TOY_CONFIG, None, {"epoch": 1, "pos": [3, 4]},
                                      keep_last=2, save_dtype=save_dtype)
    assert path == tmp_path / "step_000002" and checkpoint.find_last_checkpoint(tmp_path) == path
    assert sorted(p.name for p in path.iterdir()) == ["checksums.json", "config.json",
                                                      "configuration_internvl_chat.py",   # servable
                                                      "model.safetensors", "optim_rank0.pt", "trainer_state.pt"]
    on_disk = load_file(path / "model.safetensors")
    assert set(on_disk) == set(m.state_dict())
    assert on_disk["mlp1.1.weight"].dtype == (save_dtype or torch.float32)
    expected_next = train_toy(m, opt, SINGLE, 2, start=2)  # the uninterrupted run

    torch.manual_seed(123)  # another init and other RNG states, all overwritten by the load
    m2, opt2 = build_toy(SINGLE, 7)
    train_state = checkpoint.load_checkpoint(path, m2, opt2)
    assert train_state == {"epoch": 1, "pos": [3, 4], "step": 2}
    assert all(torch.equal(m2.state_dict()[k], v) for k, v in frozen.items())  # frozen: untouched by training
    assert train_toy(m2, opt2, SINGLE, 2, start=2) == expected_next  # bitwise: losses and grad norms
    assert state_equal(m2.state_dict(), m.state_dict())
    assert all(i == j and k == l and torch.equal(v, w) for (i, k, v), (j, l, w)
               in zip(optimizer_tensors(opt2), optimizer_tensors(opt)))


def test_crash_mid_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    m, opt = build_toy(SINGLE, 0)
    first = checkpoint.save_checkpoint(tmp_path, 1, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    train_toy(m, opt, SINGLE, 1)

    def crash(obj, path):  # model weights are written, the optimizer shard is not
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_torch_save_durable", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(tmp_path, 2, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    assert (tmp_path / ".tmp_step_000002" / "model.safetensors").exists()  # the half-written one
    assert not (tmp_path / "step_000002").exists()
    assert checkpoint.find_last_checkpoint(tmp_path) == first
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before  # keep_last=1 did not touch it
    monkeypatch.undo()
    second = checkpoint.save_checkpoint(tmp_path, 2, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000002"]  # debris and the old one gone
    assert checkpoint.find_last_checkpoint(tmp_path) == second


def test_keep_last_rotation_keeps_best(tmp_path):
    m, opt = build_toy(SINGLE, 0)
    for step in range(1, 6):
        checkpoint.save_checkpoint(tmp_path, step, m, opt, TOY_CONFIG, None, {}, keep_last=2)
        if step == 2:
            checkpoint.mark_best(tmp_path, 2, val_loss=0.5)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [2, 4, 5]
    assert checkpoint.find_best_checkpoint(tmp_path) == tmp_path / "step_000002"
    (tmp_path / "step_000009").mkdir()  # no trainer_state.pt: not a checkpoint
    assert checkpoint.find_last_checkpoint(tmp_path) == tmp_path / "step_000005"
    assert checkpoint.find_last_checkpoint(tmp_path / "missing") is None


def test_load_rejects_other_world_size_and_other_trainables(tmp_path):
    m, opt = build_toy(SINGLE, 0)
    train_toy(m, opt, SINGLE, 1)
    path = checkpoint.save_checkpoint(tmp_path, 1, m, opt, TOY_CONFIG, None, {}, keep_last=0)
    other = torch.optim.AdamW([p for p in m.parameters()], lr=1e-3)  # every parameter trainable now
    with pytest.raises(ValueError, match=r"optimizer's parameters differ.*vision_model\.embeddings\.bias"):
        checkpoint.load_checkpoint(path, m, other)
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    state["world_size"] = 2
    torch.save(state, path / "trainer_state.pt")
    with pytest.raises(ValueError, match="written by 2 ranks but this run has 1"):
        checkpoint.load_checkpoint(path, m, opt)


# kill points inside save_checkpoint(step 2, keep_last=1) -> the step a resume continues from
KILL_POINTS = {"in save_model": 1, "optimizer shard written": 1, "before the commit rename": 1,
               "after the commit rename": 2, "mid-rotation": 2}


def _crash_worker(point, out):
    """Subprocess: 1 toy step, save; 1 step, save with keep_last=1, SIGKILLed at `point` (by patching the
    function that reaches it, as a kill at that instant would land); exits 3 if the point was never reached."""
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    m, opt = build_toy(SINGLE, 0)
    train_toy(m, opt, SINGLE, 1)
    checkpoint.save_checkpoint(out, 1, m, opt, TOY_CONFIG, None, {"pos": 1}, keep_last=1)
    train_toy(m, opt, SINGLE, 1, start=1)
    if point == "in save_model":   # the safetensors file is written, config and tokenizer are not
        real_save_file = safetensors.torch.save_file
        safetensors.torch.save_file = lambda *a, **k: (real_save_file(*a, **k), die())
    elif point in ("optimizer shard written", "before the commit rename"):
        real_save = checkpoint._torch_save_durable
        name = "optim_rank0.pt" if point.startswith("optim") else "trainer_state.pt"
        checkpoint._torch_save_durable = lambda obj, path: (real_save(obj, path), Path(path).name == name and die())
    elif point == "after the commit rename":
        real_rename = pathlib.Path.rename
        pathlib.Path.rename = lambda self, target: (real_rename(self, target), Path(target).name == "step_000002"
                                                    and die())[0]
    elif point == "mid-rotation":   # rmtree of step_000001 has removed one file (ext4 order: trainer_state.pt)
        real_rmtree = shutil.rmtree

        def rmtree(path, *args, **kwargs):
            if "step_000001" in str(path) and (Path(path) / "trainer_state.pt").exists():
                (Path(path) / "trainer_state.pt").unlink()
                die()
            return real_rmtree(path, *args, **kwargs)
        shutil.rmtree = rmtree
    checkpoint.save_checkpoint(out, 2, m, opt, TOY_CONFIG, None, {"pos": 2}, keep_last=1)
    sys.exit(3)


def test_sigkill_during_save_then_resume_is_exact(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}   # bitwise equal to this process
    procs = {point: subprocess.Popen([sys.executable, __file__, "crash", point, str(tmp_path / point[:6])], env=env,
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for point in KILL_POINTS}
    m, opt = build_toy(SINGLE, 0)
    train_toy(m, opt, SINGLE, 4)   # the uninterrupted run
    for point, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, (point, err[-2000:])
        # never a step_* directory without its trainer state (launch.sh and evals list step_*)
        out = tmp_path / point[:6]
        assert all((p / "trainer_state.pt").is_file() for p in out.glob("step_*")), (point, os.listdir(out))
    for point, resume_step in KILL_POINTS.items():
        out = tmp_path / point[:6]
        checkpoint.remove_debris(out)   # what grpo.py / sft.py do at startup
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [], point
        m2, opt2 = build_toy(SINGLE, 7)
        state = checkpoint.load_checkpoint(checkpoint.find_resume_checkpoint(out), m2, opt2)
        assert state == {"pos": resume_step, "step": resume_step}, point
        train_toy(m2, opt2, SINGLE, 4 - resume_step, start=resume_step)
        assert state_equal(m2.state_dict(), m.state_dict()), point
        assert all(i == j and k == l and torch.equal(v, w) for (i, k, v), (j, l, w)
                   in zip(optimizer_tensors(opt2), optimizer_tensors(opt))), point
        checkpoint.save_checkpoint(out, 4, m2, opt2, TOY_CONFIG, None, {}, keep_last=1)
        assert sorted(os.listdir(out)) == ["step_000004"], point


class _FullDisk:
    """A file that takes `room` bytes, then raises ENOSPC, as a full filesystem does."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, b):
        if len(b) > self.room:
            self.f.write(bytes(b[:self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_disk_full_names_the_file_removes_the_partial_checkpoint_and_resume_starts(tmp_path, monkeypatch):
    m, opt = build_toy(SINGLE, 0)
    train_toy(m, opt, SINGLE, 1)
    first = checkpoint.save_checkpoint(tmp_path, 1, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    train_toy(m, opt, SINGLE, 1, start=1)
    # the optimizer shard hits the full disk (torch's own error is "enforce fail ... unexpected pos")
    monkeypatch.setattr(checkpoint, "open", lambda path, mode="r", *a, **k:
                        _FullDisk(builtins.open(path, mode, *a, **k), 3000) if "w" in mode
                        else builtins.open(path, mode, *a, **k), raising=False)
    with pytest.raises(OSError, match=r"^\[Errno 28\] no space left on device while writing .*/\.tmp_step_000002/"
                                      r"optim_rank0\.pt") as e:
        checkpoint.save_checkpoint(tmp_path, 2, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    assert e.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "step_000001"]   # the partial write is gone
    monkeypatch.undo()
    # the safetensors write hits it (safetensors' message names no path)

    def full_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"x" * 100)
        raise SafetensorError("Error while serializing: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_save_file)
    with pytest.raises(OSError, match=r"no space left on device while writing .*/\.tmp_step_000002 "):
        checkpoint.save_checkpoint(tmp_path, 2, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "step_000001"]
    monkeypatch.undo()
    # the resume starts: the last complete checkpoint loads, the metrics are rewritten, no temp file is left
    assert checkpoint.find_resume_checkpoint(tmp_path) == first
    assert checkpoint.load_checkpoint(first, *build_toy(SINGLE, 3))["step"] == 1
    tu.RunLogger(tmp_path, {}, "p", use_wandb=False, resume_step=1).finish()
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "step_000001"]


def test_resume_falls_back_from_a_damaged_last_checkpoint(tmp_path, capsys):
    m, opt = build_toy(SINGLE, 0)
    for step in (1, 2):
        train_toy(m, opt, SINGLE, 1, start=step - 1)
        checkpoint.save_checkpoint(tmp_path, step, m, opt, TOY_CONFIG, None, {"pos": step}, keep_last=0)
    last = tmp_path / "step_000002"
    assert checkpoint.find_resume_checkpoint(tmp_path) == last
    for name, size in (("model.safetensors", 0), ("model.safetensors", 500), ("optim_rank0.pt", 900)):
        intact = (last / name).read_bytes()
        (last / name).write_bytes(intact[:size])   # what a power loss before fsync can leave
        capsys.readouterr()
        assert checkpoint.find_resume_checkpoint(tmp_path) == tmp_path / "step_000001", (name, size)
        assert f"warning: cannot resume from {last}" in capsys.readouterr().err
        with pytest.raises(ValueError, match=re.escape(str(last / name) if name.endswith("tensors") else str(last))):
            checkpoint.validate_checkpoint(last)
        (last / name).write_bytes(intact)
    assert checkpoint.find_resume_checkpoint(tmp_path) == last


class _Payload:
    """What an attacker plants in a .pt file: unpickling it runs code (here: creates the file `marker`)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.mark.parametrize("name", ["trainer_state.pt", "optim_rank0.pt"])
def test_a_pickle_payload_is_refused_not_run(tmp_path, name):
    m, opt = build_toy(SINGLE, 0)
    path = checkpoint.save_checkpoint(tmp_path, 1, m, opt, TOY_CONFIG, None, {"pos": 1})
    marker = tmp_path / "pwned"
    state = torch.load(path / name, weights_only=True)
    state["payload"] = _Payload(marker)
    torch.save(state, path / name)
    refused = rf"{re.escape(str(path / name))}: refused to load: it holds objects other than tensors"
    with pytest.raises(ValueError, match=refused):
        checkpoint.load_checkpoint(path, *build_toy(SINGLE, 1))
    with pytest.raises(ValueError, match="none of its 1 checkpoints can be resumed from"):   # its checksum differs
        checkpoint.find_resume_checkpoint(tmp_path)
    (path / "checksums.json").unlink()   # an older checkpoint: no checksums, the loader alone must refuse it
    if name == "trainer_state.pt":
        with pytest.raises(ValueError, match=refused):
            checkpoint.validate_checkpoint(path)
    with pytest.raises(ValueError, match=refused):
        checkpoint.load_checkpoint(path, *build_toy(SINGLE, 1))
    assert not marker.exists()


def _flip_byte_in_adam_moment(file):
    """Flips one byte inside the data of an exp_avg / exp_avg_sq tensor of a torch.save zip (stored uncompressed),
    found by trying each data record; the file keeps its size and zip structure. Returns the record name."""
    intact = file.read_bytes()
    before = torch.load(file, weights_only=True)["optimizer"]["state"]
    with zipfile.ZipFile(file) as z:
        records = [i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 8]
    for info in records:
        local = intact[info.header_offset:info.header_offset + 30]
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        flipped = bytearray(intact)
        flipped[start + 5] ^= 0x10
        file.write_bytes(bytes(flipped))
        try:
            after = torch.load(file, weights_only=True)["optimizer"]["state"]
        except Exception:   # a CRC check would catch it: not the case this test is about
            continue
        if any(not torch.equal(after[i][k], before[i][k]) for i in before for k in ("exp_avg", "exp_avg_sq")):
            return info.filename
    file.write_bytes(intact)
    raise AssertionError(f"{file}: no Adam-moment record found")


@pytest.mark.parametrize("name", ["model.safetensors", "optim_rank0.pt"])
def test_a_flipped_byte_that_keeps_the_size_is_caught_and_resume_falls_back(tmp_path, capsys, name):
    m, opt = build_toy(SINGLE, 0)
    for step in (1, 2):
        train_toy(m, opt, SINGLE, 1, start=step - 1)
        checkpoint.save_checkpoint(tmp_path, step, m, opt, TOY_CONFIG, None, {"pos": step}, keep_last=0)
    last = tmp_path / "step_000002"
    size = (last / name).stat().st_size
    if name == "model.safetensors":   # the last byte: inside the tensor data, the header untouched
        data = bytearray((last / name).read_bytes())
        data[-1] ^= 0x01
        (last / name).write_bytes(bytes(data))
    else:
        _flip_byte_in_adam_moment(last / name)
    assert (last / name).stat().st_size == size
    with pytest.raises(ValueError, match=rf"{re.escape(str(last / name))}: corrupt: sha256 [0-9a-f]+\.\.\. differs"):
        checkpoint.validate_checkpoint(last)
    capsys.readouterr()
    assert checkpoint.find_resume_checkpoint(tmp_path) == tmp_path / "step_000001"
    assert f"cannot resume from {last}: {last / name}: corrupt" in capsys.readouterr().err
    (tmp_path / "step_000001" / "config.json").write_text("{}")   # none is valid now: an error, not a fresh start
    with pytest.raises(ValueError, match=r"none of its 2 checkpoints can be resumed from"):
        checkpoint.find_resume_checkpoint(tmp_path)
    if name == "model.safetensors":   # a run starting from it (grpo --init_from, sft --checkpoint, eval) refuses it
        with pytest.raises(ValueError, match=rf"{re.escape(str(last / name))}: corrupt"):
            checkpoint.model_sha256(last)


def _hold_lock(out_dir):
    """A subprocess that takes out_dir's lock (with a temporary checkpoint of its own inside) and waits."""
    script = ("import sys, time, pathlib, checkpoint\n"
              "checkpoint.lock_out_dir(sys.argv[1])\n"
              "(pathlib.Path(sys.argv[1]) / '.tmp_step_000002').mkdir()\n"
              "print('locked', flush=True)\n"
              "time.sleep(300)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(out_dir), "--run=first"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_one_run_per_out_dir_and_a_killed_runs_lock_is_taken_over(tmp_path):
    out = tmp_path / "out"
    holder = _hold_lock(out)
    try:
        with pytest.raises(RuntimeError, match=rf"{re.escape(str(out))} is in use by another run: pid {holder.pid} "
                                               rf"on host .*, command '-c {re.escape(str(out))} --run=first', started"):
            checkpoint.lock_out_dir(out)
        in_use = rf"{re.escape(str(out))} is in use by another run: pid {holder.pid} "
        with pytest.raises(RuntimeError, match=in_use):
            grpo.main(grpo.Config(init_from=str(tmp_path / "none"), out_dir=str(out), resume=True))
        with pytest.raises(RuntimeError, match=in_use):
            sft.main([f"--checkpoint={tmp_path / 'none'}", "--data=none.jsonl", f"--out_dir={out}", "--resume=True"])
        with pytest.raises(RuntimeError, match=in_use):
            evaluate.main([f"--checkpoint={tmp_path / 'none'}", "--benchmarks=['none.tsv']", f"--out_dir={out}"])
        assert (out / ".tmp_step_000002").is_dir()   # the running run's temporary checkpoint is untouched
    finally:
        holder.send_signal(signal.SIGKILL)   # no cleanup: the lock file stays, its flock dies with the process
        holder.wait(timeout=60)
    assert f"pid {holder.pid} " in (out / ".lock").read_text()
    checkpoint.lock_out_dir(out)
    assert (out / ".lock").read_text().startswith(f"pid {os.getpid()} ")
    checkpoint.lock_out_dir(out)   # again in the same process: a no-op


def test_resume_refuses_a_changed_run_unless_allowed(tmp_path, capsys):
    @dataclasses.dataclass
    class Run:
        lr: float = 1e-3
        steps: int = 4
        data: str = ""
    data_file = tmp_path / "d.jsonl"
    data_file.write_text("a\n")
    config = types.SimpleNamespace(to_dict=lambda: {"rope_theta": 50.0})
    run = checkpoint.describe_run(Run(data=str(data_file)), ("steps", "data"), [data_file], config)
    m, opt = build_toy(SINGLE, 0)
    path = checkpoint.save_checkpoint(tmp_path / "o", 1, m, opt, TOY_CONFIG, None, {}, run=run)
    assert checkpoint.load_checkpoint(path, m, opt, checkpoint.describe_run(Run(steps=8), ("steps", "data"),
                                                                             [data_file], config))
    other = types.SimpleNamespace(to_dict=lambda: {"rope_theta": 10000.0})
    with pytest.raises(ValueError, match=r"another run: model_config\.rope_theta: 50\.0 -> 10000\.0\. .*"
                                         r"--allow_run_change=True"):
        checkpoint.load_checkpoint(path, m, opt, checkpoint.describe_run(Run(), ("steps", "data"), [data_file], other))
    with pytest.raises(ValueError, match=r"lr: 0\.001 -> 0\.01"):
        checkpoint.load_checkpoint(path, m, opt, checkpoint.describe_run(Run(lr=1e-2), ("steps", "data"),
                                                                         [data_file], config))
    data_file.write_text("b\n")
    changed = checkpoint.describe_run(Run(), ("steps", "data"), [data_file], config)
    with pytest.raises(ValueError, match=r"sha256 of data file 0: '[0-9a-f]+' -> '[0-9a-f]+'"):
        checkpoint.load_checkpoint(path, m, opt, changed)
    capsys.readouterr()
    assert checkpoint.load_checkpoint(path, m, opt, changed, allow_run_change=True)["step"] == 1
    assert "continuing: allow_run_change" in capsys.readouterr().err


def test_real_model_checkpoint_round_trip_with_tied_embeddings(tmp_path):
    cfg = model.tiny_config(llm={"tie_word_embeddings": True})
    tok = chat.build_tiny_tokenizer()
    torch.manual_seed(0)
    m = model.build_model(cfg)
    model.set_trainable(m, ["connector", "llm"])
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    m(torch.randint(0, 300, (1, 6))).float().pow(2).mean().backward()
    opt.step()
    path = checkpoint.save_checkpoint(tmp_path, 1, m, opt, cfg, tok, {}, keep_last=1)
    loaded = model.load_model(path)  # the checkpoint is a model.py checkpoint (eval.py, vLLM)
    assert state_equal(loaded.state_dict(), m.state_dict())
    assert loaded.img_context_token_id == tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    torch.manual_seed(1)
    m2 = model.build_model(cfg)
    model.set_trainable(m2, ["connector", "llm"])
    opt2 = torch.optim.AdamW([p for p in m2.parameters() if p.requires_grad], lr=1e-3)
    checkpoint.load_checkpoint(path, m2, opt2)  # lm_head is not in the file (tied): restored through the embedding
    assert m2.language_model.lm_head.weight is m2.language_model.get_input_embeddings().weight
    assert state_equal(m2.state_dict(), m.state_dict())

    m3 = tu.load_model_sharded(path, SINGLE, ["connector"])  # meta build + load, as with FSDP2
    assert m3.language_model.lm_head.weight is m3.language_model.get_input_embeddings().weight
    assert state_equal(m3.state_dict(), m.state_dict())
    assert {n for n, p in m3.named_parameters() if p.requires_grad} == {n for n, _ in m.mlp1.named_parameters(
        prefix="mlp1")}
    buffers = dict(m.named_buffers())  # rotary inv_freq: in no checkpoint, recomputed
    assert all(torch.equal(t, buffers[n]) for n, t in m3.named_buffers()) and buffers
    assert m3.img_context_token_id == tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)


if __name__ == "__main__":
    assert sys.argv[1] == "crash", sys.argv
    _crash_worker(sys.argv[2], Path(sys.argv[3]))
