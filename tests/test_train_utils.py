"""Tests for train_utils.py. Also the torchrun worker: `python -m torch.distributed.run --standalone
--nproc_per_node=2 tests/test_train_utils.py OUT_DIR` (launched by test_torchrun_* below)."""
import dataclasses
import errno
import json
import os
import random
import re
import subprocess
import sys
import types
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.nn as nn
import torch.nn.functional as F

import model
import train_utils as tu
from test_configurator import Cfg   # a run config with every kind of field

# -----------------------------------------------------------------------------
# lr schedule


def test_lr_schedule_hand_computed():
    lr = lambda step, schedule="cosine": tu.lr_at(step, 10, 1.0, warmup_steps=2, schedule=schedule, min_lr_ratio=0.1)
    assert lr(0) == 0.5 and lr(1) == 1.0  # linear warmup, the first step already moves
    assert lr(2) == 1.0  # cosine starts at the top
    assert lr(6) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert lr(4) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi / 4)))
    assert lr(10) == pytest.approx(0.1) and lr(15) == pytest.approx(0.1)  # floor, also past the end
    assert [lr(s, "constant") for s in (0, 1, 2, 9, 20)] == [0.5, 1.0, 1.0, 1.0, 1.0]
    assert tu.lr_at(0, 4, 2.0, warmup_steps=0) == 2.0
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        tu.lr_at(0, 10, 1.0, 0, "linear")

# -----------------------------------------------------------------------------
# a toy model with the InternVL module tree, and a training loop shared with the torchrun worker


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm, self.fc = nn.LayerNorm(d), nn.Linear(d, d)

    def forward(self, x):
        return x + torch.tanh(self.fc(self.norm(x)))


class ToyVLM(nn.Module):
    """vision_model.encoder.layers / mlp1 / language_model.model.layers / language_model.lm_head at toy size.
    Vocab 7 makes lm_head's shards uneven on 2 ranks."""

    def __init__(self, d=8, vocab=7):
        super().__init__()
        self.vision_model = nn.Module()
        self.vision_model.embeddings = nn.Linear(3, d)
        self.vision_model.encoder = nn.Module()
        self.vision_model.encoder.layers = nn.ModuleList([Block(d), Block(d)])
        self.mlp1 = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))
        self.language_model = nn.Module()
        self.language_model.model = nn.Module()
        self.language_model.model.layers = nn.ModuleList([Block(d), Block(d)])
        self.language_model.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, x):  # [B,T,3] -> hidden [B,T,d]
        h = self.vision_model.embeddings(x)
        for block in self.vision_model.encoder.layers:
            h = block(h)
        h = self.mlp1(h)
        for block in self.language_model.model.layers:
            h = block(h)
        return h


FROZEN = ("vision_model.embeddings.", "vision_model.encoder.layers.0.")  # one in the root group, one whole group
TOY_CONFIG = types.SimpleNamespace(llm_config={}, to_dict=lambda: {"model_type": "toy"})  # enough for save_model


def build_toy(dist, seed, **wrap_kwargs):
    tu.set_seed(seed)
    m = ToyVLM()
    for name, p in m.named_parameters():
        p.requires_grad_(not name.startswith(FROZEN))
    tu.wrap_fsdp(m, dist, **wrap_kwargs)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    return m, opt


def train_toy(m, opt, dist, steps, start=0, global_batch=4):
    """Each rank takes its rows of the same global batch; the loss is normalised by the global token count."""
    losses = []
    for step in range(start, start + steps):
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(global_batch, 5, 3, generator=g)
        targets = torch.randint(0, 7, (global_batch, 5), generator=g)
        mask = (torch.rand(global_batch, 5, generator=g) < 0.7).float()  # uneven token counts per rank
        # the global RNGs (identically seeded on every rank) must come back exactly on resume
        x = x + 0.1 * torch.randn(global_batch, 5, 3) + random.random() + float(np.random.rand())
        rows = slice(dist.rank * global_batch // dist.world_size, (dist.rank + 1) * global_batch // dist.world_size)
        hidden = m(x[rows])
        logits = hidden @ m.language_model.lm_head.weight.T  # lm_head outside forward, as in chunked log-probs
        nll = F.cross_entropy(logits.flatten(0, 1), targets[rows].flatten(), reduction="none") * mask[rows].flatten()
        n_tokens = tu.all_reduce_sum(mask[rows].sum().item(), dist)
        (nll.sum() / n_tokens * dist.world_size).backward()  # FSDP averages gradients over ranks
        grad_norm = tu.clip_grad_norm(m.parameters(), 0.5)
        for group in opt.param_groups:
            group["lr"] = tu.lr_at(step, 8, 1e-2, warmup_steps=2)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append((tu.all_reduce_sum(nll.sum().item(), dist) / n_tokens, grad_norm))
    return losses


SINGLE = tu.Dist()


def state_equal(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def optimizer_tensors(opt):
    return [(i, k, v) for i, s in sorted(opt.state_dict()["state"].items()) for k, v in sorted(s.items())]

# -----------------------------------------------------------------------------
# RNG, checkpoints, resume (single process)


def test_rng_round_trip():
    state = tu.get_rng_state()
    first = (random.random(), np.random.rand(3).tolist(), torch.randn(3).tolist())
    tu.set_rng_state(state)
    assert (random.random(), np.random.rand(3).tolist(), torch.randn(3).tolist()) == first


@pytest.mark.parametrize("save_dtype", [None, torch.bfloat16])
def test_save_load_resume_is_exact(tmp_path, save_dtype):
    m, opt = build_toy(SINGLE, 0)
    frozen = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(FROZEN)}
    train_toy(m, opt, SINGLE, 2)
    path = tu.save_checkpoint(tmp_path, 2, m, opt, TOY_CONFIG, None, {"epoch": 1, "pos": [3, 4]}, keep_last=2,
                              save_dtype=save_dtype)
    assert path == tmp_path / "step_000002" and tu.find_last_checkpoint(tmp_path) == path
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "optim_rank0.pt",
                                                      "trainer_state.pt"]
    from safetensors.torch import load_file
    on_disk = load_file(path / "model.safetensors")
    assert set(on_disk) == set(m.state_dict())
    assert on_disk["mlp1.1.weight"].dtype == (save_dtype or torch.float32)
    expected_next = train_toy(m, opt, SINGLE, 2, start=2)  # the uninterrupted run

    torch.manual_seed(123)  # another init and other RNG states, all overwritten by the load
    m2, opt2 = build_toy(SINGLE, 7)
    train_state = tu.load_checkpoint(path, m2, opt2)
    assert train_state == {"epoch": 1, "pos": [3, 4], "step": 2}
    assert all(torch.equal(m2.state_dict()[k], v) for k, v in frozen.items())  # frozen: untouched by training
    assert train_toy(m2, opt2, SINGLE, 2, start=2) == expected_next  # bitwise: losses and grad norms
    assert state_equal(m2.state_dict(), m.state_dict())
    assert all(i == j and k == l and torch.equal(v, w) for (i, k, v), (j, l, w)
               in zip(optimizer_tensors(opt2), optimizer_tensors(opt)))


def test_crash_mid_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    m, opt = build_toy(SINGLE, 0)
    first = tu.save_checkpoint(tmp_path, 1, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    train_toy(m, opt, SINGLE, 1)

    def crash(obj, path):  # model weights are written, the optimizer shard is not
        raise OSError("disk full")

    monkeypatch.setattr(tu, "_torch_save_durable", crash)
    with pytest.raises(OSError, match="disk full"):
        tu.save_checkpoint(tmp_path, 2, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    assert (tmp_path / ".tmp_step_000002" / "model.safetensors").exists()  # the half-written one
    assert not (tmp_path / "step_000002").exists()
    assert tu.find_last_checkpoint(tmp_path) == first
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before  # keep_last=1 did not touch it
    monkeypatch.undo()
    second = tu.save_checkpoint(tmp_path, 2, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000002"]  # debris and the old one gone
    assert tu.find_last_checkpoint(tmp_path) == second


def test_keep_last_rotation_keeps_best(tmp_path):
    m, opt = build_toy(SINGLE, 0)
    for step in range(1, 6):
        tu.save_checkpoint(tmp_path, step, m, opt, TOY_CONFIG, None, {}, keep_last=2)
        if step == 2:
            tu.mark_best(tmp_path, 2, val_loss=0.5)
    assert [s for s, _ in tu.list_checkpoints(tmp_path)] == [2, 4, 5]
    assert tu.find_best_checkpoint(tmp_path) == tmp_path / "step_000002"
    (tmp_path / "step_000009").mkdir()  # no trainer_state.pt: not a checkpoint
    assert tu.find_last_checkpoint(tmp_path) == tmp_path / "step_000005"
    assert tu.find_last_checkpoint(tmp_path / "missing") is None


def test_load_rejects_other_world_size_and_other_trainables(tmp_path):
    m, opt = build_toy(SINGLE, 0)
    train_toy(m, opt, SINGLE, 1)
    path = tu.save_checkpoint(tmp_path, 1, m, opt, TOY_CONFIG, None, {}, keep_last=0)
    other = torch.optim.AdamW([p for p in m.parameters()], lr=1e-3)  # every parameter trainable now
    with pytest.raises(ValueError, match=r"optimizer's parameters differ.*vision_model\.embeddings\.bias"):
        tu.load_checkpoint(path, m, other)
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    state["world_size"] = 2
    torch.save(state, path / "trainer_state.pt")
    with pytest.raises(ValueError, match="written by 2 ranks but this run has 1"):
        tu.load_checkpoint(path, m, opt)


# kill points inside save_checkpoint(step 2, keep_last=1) -> the step a resume continues from
KILL_POINTS = {"in save_model": 1, "optimizer shard written": 1, "before the commit rename": 1,
               "after the commit rename": 2, "mid-rotation": 2}


def _crash_worker(point, out):
    """Subprocess: 1 toy step, save; 1 step, save with keep_last=1, SIGKILLed at `point` (by patching the
    function that reaches it, as a kill at that instant would land); exits 3 if the point was never reached."""
    import pathlib
    import shutil
    import signal
    import safetensors.torch
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    m, opt = build_toy(SINGLE, 0)
    train_toy(m, opt, SINGLE, 1)
    tu.save_checkpoint(out, 1, m, opt, TOY_CONFIG, None, {"pos": 1}, keep_last=1)
    train_toy(m, opt, SINGLE, 1, start=1)
    if point == "in save_model":   # the safetensors file is written, config and tokenizer are not
        real_save_file = safetensors.torch.save_file
        safetensors.torch.save_file = lambda *a, **k: (real_save_file(*a, **k), die())
    elif point in ("optimizer shard written", "before the commit rename"):
        real_save, name = tu._torch_save_durable, "optim_rank0.pt" if point.startswith("optim") else "trainer_state.pt"
        tu._torch_save_durable = lambda obj, path: (real_save(obj, path), Path(path).name == name and die())
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
    tu.save_checkpoint(out, 2, m, opt, TOY_CONFIG, None, {"pos": 2}, keep_last=1)
    sys.exit(3)


def test_sigkill_during_save_then_resume_is_exact(tmp_path):
    import signal
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
        tu.remove_debris(out)   # what grpo.py / sft.py do at startup
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [], point
        m2, opt2 = build_toy(SINGLE, 7)
        state = tu.load_checkpoint(tu.find_resume_checkpoint(out), m2, opt2)
        assert state == {"pos": resume_step, "step": resume_step}, point
        train_toy(m2, opt2, SINGLE, 4 - resume_step, start=resume_step)
        assert state_equal(m2.state_dict(), m.state_dict()), point
        assert all(i == j and k == l and torch.equal(v, w) for (i, k, v), (j, l, w)
                   in zip(optimizer_tensors(opt2), optimizer_tensors(opt))), point
        tu.save_checkpoint(out, 4, m2, opt2, TOY_CONFIG, None, {}, keep_last=1)
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
    import builtins
    from safetensors import SafetensorError
    m, opt = build_toy(SINGLE, 0)
    train_toy(m, opt, SINGLE, 1)
    first = tu.save_checkpoint(tmp_path, 1, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    train_toy(m, opt, SINGLE, 1, start=1)
    # the optimizer shard hits the full disk (torch's own error is "enforce fail ... unexpected pos")
    monkeypatch.setattr(tu, "open", lambda path, mode="r", *a, **k: _FullDisk(builtins.open(path, mode, *a, **k), 3000)
                        if "w" in mode else builtins.open(path, mode, *a, **k), raising=False)
    with pytest.raises(OSError, match=r"^\[Errno 28\] no space left on device while writing .*/\.tmp_step_000002/"
                                      r"optim_rank0\.pt") as e:
        tu.save_checkpoint(tmp_path, 2, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    assert e.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "step_000001"]   # the partial write is gone
    monkeypatch.undo()
    # the safetensors write hits it (safetensors' message names no path)
    import safetensors.torch

    def full_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"x" * 100)
        raise SafetensorError("Error while serializing: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_save_file)
    with pytest.raises(OSError, match=r"no space left on device while writing .*/\.tmp_step_000002 "):
        tu.save_checkpoint(tmp_path, 2, m, opt, TOY_CONFIG, None, {}, keep_last=1)
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "step_000001"]
    monkeypatch.undo()
    # the resume starts: the last complete checkpoint loads, the metrics are rewritten, no temp file is left
    assert tu.find_resume_checkpoint(tmp_path) == first
    assert tu.load_checkpoint(first, *build_toy(SINGLE, 3))["step"] == 1
    tu.RunLogger(tmp_path, {}, "p", use_wandb=False, resume_step=1).finish()
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "step_000001"]


def test_resume_falls_back_from_a_damaged_last_checkpoint(tmp_path, capsys):
    m, opt = build_toy(SINGLE, 0)
    for step in (1, 2):
        train_toy(m, opt, SINGLE, 1, start=step - 1)
        tu.save_checkpoint(tmp_path, step, m, opt, TOY_CONFIG, None, {"pos": step}, keep_last=0)
    last = tmp_path / "step_000002"
    assert tu.find_resume_checkpoint(tmp_path) == last
    for name, size in (("model.safetensors", 0), ("model.safetensors", 500), ("optim_rank0.pt", 900)):
        intact = (last / name).read_bytes()
        (last / name).write_bytes(intact[:size])   # what a power loss before fsync can leave
        capsys.readouterr()
        assert tu.find_resume_checkpoint(tmp_path) == tmp_path / "step_000001", (name, size)
        assert f"warning: cannot resume from {last}" in capsys.readouterr().err
        with pytest.raises(ValueError, match=re.escape(str(last / name) if name.endswith("tensors") else str(last))):
            tu.validate_checkpoint(last)
        (last / name).write_bytes(intact)
    assert tu.find_resume_checkpoint(tmp_path) == last


def test_resume_refuses_a_changed_run_unless_allowed(tmp_path, capsys):
    @dataclasses.dataclass
    class Run:
        lr: float = 1e-3
        steps: int = 4
        data: str = ""
    data_file = tmp_path / "d.jsonl"
    data_file.write_text("a\n")
    config = types.SimpleNamespace(to_dict=lambda: {"rope_theta": 50.0})
    run = tu.describe_run(Run(data=str(data_file)), ("steps", "data"), [data_file], config)
    m, opt = build_toy(SINGLE, 0)
    path = tu.save_checkpoint(tmp_path / "o", 1, m, opt, TOY_CONFIG, None, {}, run=run)
    assert tu.load_checkpoint(path, m, opt, tu.describe_run(Run(steps=8), ("steps", "data"), [data_file], config))
    other = types.SimpleNamespace(to_dict=lambda: {"rope_theta": 10000.0})
    with pytest.raises(ValueError, match=r"another run: model_config\.rope_theta: 50\.0 -> 10000\.0\. .*"
                                         r"--allow_run_change=True"):
        tu.load_checkpoint(path, m, opt, tu.describe_run(Run(), ("steps", "data"), [data_file], other))
    with pytest.raises(ValueError, match=r"lr: 0\.001 -> 0\.01"):
        tu.load_checkpoint(path, m, opt, tu.describe_run(Run(lr=1e-2), ("steps", "data"), [data_file], config))
    data_file.write_text("b\n")
    changed = tu.describe_run(Run(), ("steps", "data"), [data_file], config)
    with pytest.raises(ValueError, match=r"sha256 of data file 0: '[0-9a-f]+' -> '[0-9a-f]+'"):
        tu.load_checkpoint(path, m, opt, changed)
    capsys.readouterr()
    assert tu.load_checkpoint(path, m, opt, changed, allow_run_change=True)["step"] == 1
    assert "continuing: allow_run_change" in capsys.readouterr().err


def test_full_state_dict_strips_wrappers_and_copies():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    m = ToyVLM()
    names = list(m.state_dict())
    m.language_model.model.layers[0] = checkpoint_wrapper(m.language_model.model.layers[0])
    compiled = nn.Module()
    compiled._orig_mod = m  # the attribute torch.compile's wrapper keeps the model under
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    assert any("._checkpoint_wrapped_module." in n for n, _ in compiled.named_parameters())
    sd = tu.full_state_dict(compiled)
    assert list(sd) == names
    with torch.no_grad():
        m.mlp1[1].weight.add_(1.0)
    assert not torch.equal(sd["mlp1.1.weight"], m.mlp1[1].weight)


def test_activation_checkpointing_keeps_names_and_gradients():
    grads = []
    for ac in (False, True):
        torch.manual_seed(0)
        m = ToyVLM()
        tu.wrap_fsdp(m, SINGLE, activation_checkpointing=ac)  # world 1: checkpointing only
        (m(torch.randn(2, 4, 3)) @ m.language_model.lm_head.weight.T).pow(2).sum().backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    assert list(grads[0]) == list(grads[1]) and all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])
    with pytest.raises(ValueError, match="none of the block lists"):
        tu.wrap_fsdp(nn.Linear(2, 2), SINGLE)


def test_one_process_bf16_compute_casts_weights_once_keeps_fp32_masters():
    """One process with param_dtype (the 1-GPU path; here gloo on CPU): FSDP2 over a one-rank group computes
    with bf16 copies of the weights, exactly as a bf16 copy of the model does, and keeps fp32 parameters and
    gradients for the optimizer."""
    tok = model.build_tiny_tokenizer()
    cfg = model.tiny_config(vocab_size=len(tok))
    torch.manual_seed(0)
    net = model.build_model(cfg).eval()
    net.img_context_token_id = tok.convert_tokens_to_ids(model.IMG_CONTEXT_TOKEN)
    reference = model.build_model(cfg).eval()
    reference.load_state_dict(net.state_dict())
    for p in reference.parameters():   # parameters only: FSDP2 leaves buffers (rotary inv_freq) in fp32
        p.data = p.data.to(torch.bfloat16)
    reference.img_context_token_id = net.img_context_token_id
    ids = torch.tensor([tok(model.expand_image_tokens("<image>\nHow many?", [1], cfg.num_image_token),
                            add_special_tokens=False)["input_ids"]])
    pv = torch.randn(1, 3, 112, 112)
    assert not tdist.is_initialized()
    try:
        tu.wrap_fsdp(net, SINGLE, param_dtype=torch.bfloat16)
        assert tdist.is_initialized() and tdist.get_world_size() == 1
        out = net(ids, pixel_values=pv)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out, reference(ids, pixel_values=pv.to(torch.bfloat16)), rtol=0, atol=0)
        out.float().pow(2).mean().backward()
        params = dict(net.named_parameters())
        assert all(p.dtype == torch.float32 for p in params.values())
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params.values() if p.requires_grad)
    finally:
        tu.cleanup_distributed()


def test_setup_distributed_single_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    dist = tu.setup_distributed()
    assert (dist.rank, dist.world_size, dist.is_main) == (0, 1, True)
    assert tu.all_reduce_sum(3.5, dist) == 3.5 and tu.all_reduce_max(2, dist) == 2


def test_setup_distributed_joins_a_group_that_is_up(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")   # torchrun's env, but the group exists already: no second init (it would raise)
    monkeypatch.setenv("WORLD_SIZE", "1")
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        dist = tu.setup_distributed()
        assert (dist.rank, dist.world_size, dist.device.type) == (0, 1, "cpu") and tdist.is_initialized()
    finally:
        tdist.destroy_process_group()


def test_real_model_checkpoint_round_trip_with_tied_embeddings(tmp_path):
    cfg = model.tiny_config(llm={"tie_word_embeddings": True})
    tok = model.build_tiny_tokenizer()
    torch.manual_seed(0)
    m = model.build_model(cfg)
    model.set_trainable(m, ["connector", "llm"])
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    m(torch.randint(0, 300, (1, 6))).float().pow(2).mean().backward()
    opt.step()
    path = tu.save_checkpoint(tmp_path, 1, m, opt, cfg, tok, {}, keep_last=1)
    loaded = model.load_model(path)  # the checkpoint is a model.py checkpoint (eval.py, vLLM)
    assert state_equal(loaded.state_dict(), m.state_dict())
    assert loaded.img_context_token_id == tok.convert_tokens_to_ids(model.IMG_CONTEXT_TOKEN)
    torch.manual_seed(1)
    m2 = model.build_model(cfg)
    model.set_trainable(m2, ["connector", "llm"])
    opt2 = torch.optim.AdamW([p for p in m2.parameters() if p.requires_grad], lr=1e-3)
    tu.load_checkpoint(path, m2, opt2)  # lm_head is not in the file (tied): restored through the embedding
    assert m2.language_model.lm_head.weight is m2.language_model.get_input_embeddings().weight
    assert state_equal(m2.state_dict(), m.state_dict())

    m3 = tu.load_model_sharded(path, SINGLE, ["connector"])  # meta build + load, as with FSDP2
    assert m3.language_model.lm_head.weight is m3.language_model.get_input_embeddings().weight
    assert state_equal(m3.state_dict(), m.state_dict())
    assert {n for n, p in m3.named_parameters() if p.requires_grad} == {n for n, _ in m.mlp1.named_parameters(
        prefix="mlp1")}
    buffers = dict(m.named_buffers())  # rotary inv_freq: in no checkpoint, recomputed
    assert all(torch.equal(t, buffers[n]) for n, t in m3.named_buffers()) and buffers
    assert m3.img_context_token_id == tok.convert_tokens_to_ids(model.IMG_CONTEXT_TOKEN)

# -----------------------------------------------------------------------------
# logging


def test_run_logger_metrics_jsonl_and_resume(tmp_path, capsys):
    log = tu.RunLogger(tmp_path, Cfg(), project="p", use_wandb=False)
    for step in (1, 2, 3):
        log.log(step, {"loss": torch.tensor(0.5 * step), "n": np.int64(step), "x": np.array([2.0]),
                       "hist": object()})
    log.finish()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": s, "loss": 0.5 * s, "n": s, "x": 2.0} for s in (1, 2, 3)]  # non-JSON: W&B only

    (tmp_path / "metrics.jsonl").open("a").write('{"step": 4, "lo')  # a line cut by a crash
    log = tu.RunLogger(tmp_path, Cfg(), project="p", use_wandb=False, resume_step=2)
    log.log(3, {"loss": 9.0})
    log.progress(3, 10, loss=0.123456, phase="rl")
    log.finish()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("step 3/10 | ") and "eta " in line and line.endswith("loss 0.1235 | phase rl")

    tu.RunLogger(tmp_path, Cfg(), project="p", use_wandb=False).finish()  # a fresh run starts empty
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    off = tu.RunLogger(tmp_path / "other", Cfg(), project="p", enabled=False)  # non-main ranks write nothing
    off.log(1, {"loss": 1.0})
    off.progress(1, 2)
    assert not (tmp_path / "other").exists()

def test_run_logger_resume_names_a_bad_line_that_is_not_the_last(tmp_path):
    """data.read_jsonl's policy on resume: only a torn LAST line is the crash's; a bad line elsewhere is an error."""
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: invalid JSON"):
        tu.RunLogger(tmp_path, Cfg(), project="p", use_wandb=False, resume_step=3)


def test_run_logger_wandb_offline_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = tu.RunLogger(tmp_path, Cfg(lr=3e-4), project="p", run_name="r")
    log.log(1, {"loss": 1.0})
    log.finish()
    run_id = (tmp_path / "wandb_run_id.txt").read_text()
    assert log.wandb.config["lr"] == 3e-4 and list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    log = tu.RunLogger(tmp_path, Cfg(), project="p", resume_step=1)
    assert log.wandb.id == run_id
    log.finish()


def test_run_logger_survives_missing_wandb(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    log = tu.RunLogger(tmp_path, Cfg(), project="p")
    log.log(1, {"loss": 1.0})
    log.finish()
    assert log.wandb is None and "W&B disabled (ModuleNotFoundError" in capsys.readouterr().err
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'

# -----------------------------------------------------------------------------
# torchrun --nproc_per_node=2 (gloo): FSDP2 + exact resume + equality with one process


@pytest.fixture(scope="module")
def torchrun_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrun")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return torch.load(out / "result.pt", weights_only=False)


def test_torchrun_fsdp_resume_is_bitwise_exact(torchrun_result):
    r = torchrun_result
    for save_dtype in ("None", "torch.bfloat16"):  # 2 steps, save, load into a fresh model, 2 steps == 4 steps
        losses_resumed, final_resumed = r["resumed"][save_dtype]
        assert losses_resumed == r["losses"], save_dtype
        assert state_equal(final_resumed, r["final"]), save_dtype
    assert all(torch.equal(r["final"][k], v) for k, v in r["frozen_init"].items())  # frozen: bit-identical
    assert r["bf16"] == (True, True)  # param_dtype=bf16: close first loss, fp32 sharded parameters
    assert r["ckpt_files"] == ["config.json", "model.safetensors", "optim_rank0.pt", "optim_rank1.pt",
                               "trainer_state.pt"]


def test_torchrun_fsdp_equals_single_process(torchrun_result):
    m, opt = build_toy(SINGLE, 0)
    losses = train_toy(m, opt, SINGLE, 4)
    for (loss, norm), (loss2, norm2) in zip(losses, torchrun_result["losses"]):
        assert loss2 == pytest.approx(loss, rel=1e-5) and norm2 == pytest.approx(norm, rel=1e-5)
    final = torchrun_result["final"]
    assert list(final) == list(m.state_dict())
    for k, v in m.state_dict().items():
        torch.testing.assert_close(final[k], v, rtol=1e-5, atol=1e-6)


def test_torchrun_real_model_fsdp_names_and_checkpoint(torchrun_result):
    r = torchrun_result
    assert r["tiny_groups"][0] == r["tiny_groups"][1]  # one group per ViT block and per LLM block, + the root
    assert r["tiny_names"] == r["tiny_reference_names"]  # FSDP2 + checkpointing: the checkpoint names
    assert r["tiny_frozen_identical"] and r["tiny_connector_changed"]
    assert r["tiny_reloaded_equal"]  # model.load_model(bf16 step dir) == bf16(full_state_dict of the sharded model)
    assert r["tiny_resumed_equal"]  # load_checkpoint into a fresh sharded model: exact fp32 again
    assert r["tiny_sharded_load_logits"]  # load_model_sharded (meta, FSDP2) computes what model.load_model does


def _torchrun_worker(out):
    out = Path(out)
    dist = tu.setup_distributed()
    # toy model: FSDP2 with activation checkpointing; frozen parameters in the root group and in a block
    m, opt = build_toy(dist, 0, activation_checkpointing=True)
    frozen_init = {k: v for k, v in tu.full_state_dict(m).items() if k.startswith(FROZEN)}
    losses = train_toy(m, opt, dist, 4)
    final = tu.full_state_dict(m)

    resumed = {}
    for save_dtype in (None, torch.bfloat16):  # fp32 files / bf16 files + the fp32 master shards
        m, opt = build_toy(dist, 0, activation_checkpointing=True)
        losses_resumed = train_toy(m, opt, dist, 2)
        with torch.no_grad():
            m(torch.ones(1, 2, 3))  # as rollouts would: leaves the root group unsharded
        if save_dtype is None:
            unsharded = not tu._is_dtensor(m.language_model.lm_head.weight)
            tu.reshard(m)
            assert unsharded and tu._is_dtensor(m.language_model.lm_head.weight)
        out_dir = out / f"ckpt_{save_dtype}"
        path = tu.save_checkpoint(out_dir, 2, m, opt, TOY_CONFIG, None, {"data_pos": 8}, keep_last=2,
                                  save_dtype=save_dtype)
        m, opt = build_toy(dist, 1 + dist.rank, activation_checkpointing=True)  # other weights and RNG states
        state = tu.load_checkpoint(tu.find_last_checkpoint(out_dir), m, opt)
        assert state == {"data_pos": 8, "step": 2}, state
        losses_resumed += train_toy(m, opt, dist, 2, start=state["step"])
        resumed[str(save_dtype)] = (losses_resumed, tu.full_state_dict(m))

    # bf16 compute with fp32 master weights: same first loss up to bf16 rounding, parameters stay fp32
    m, opt = build_toy(dist, 0, param_dtype=torch.bfloat16)
    bf16_loss = train_toy(m, opt, dist, 1)[0][0]
    bf16 = (abs(bf16_loss - losses[0][0]) < 2e-2 * abs(losses[0][0]),
            {p.dtype for p in m.parameters()} == {torch.float32})

    # the real model: names under FSDP2, connector-only step, checkpoint loadable by model.load_model
    cfg, tok = model.tiny_config(), model.build_tiny_tokenizer()
    torch.manual_seed(0)
    tiny = model.build_model(cfg)
    reference = {k: v.clone() for k, v in tiny.state_dict().items()}
    tiny.img_context_token_id = tok.convert_tokens_to_ids(model.IMG_CONTEXT_TOKEN)
    model.set_trainable(tiny, ["connector"])
    tu.wrap_fsdp(tiny, dist, activation_checkpointing=True)
    from torch.distributed.fsdp import FSDPModule
    n_groups = sum(isinstance(module, FSDPModule) for module in tiny.modules())
    tiny_opt = torch.optim.AdamW([p for p in tiny.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.tensor([[1, 2] + [tiny.img_context_token_id] * cfg.num_image_token + [3, 4]])
    pixels = torch.randn(1, 3, cfg.force_image_size, cfg.force_image_size)
    tiny(ids, pixel_values=pixels).float().logsumexp(-1).mean().backward()
    tiny_opt.step()
    tiny_sd = tu.full_state_dict(tiny)
    tiny_path = tu.save_checkpoint(out / "tiny", 1, tiny, tiny_opt, cfg, tok, {}, keep_last=1,
                                   save_dtype=torch.bfloat16)
    tiny2 = tu.load_model_sharded(tiny_path, dist, ["connector"])  # bf16 values in fp32 parameters
    tiny2_opt = torch.optim.AdamW([p for p in tiny2.parameters() if p.requires_grad])  # before any forward
    with torch.no_grad():
        sharded_logits = tiny2(ids, pixel_values=pixels)
    tu.load_checkpoint(tiny_path, tiny2, tiny2_opt)
    tiny2_sd = tu.full_state_dict(tiny2)
    if dist.is_main:
        with torch.no_grad():
            plain_logits = model.load_model(tiny_path)(ids, pixel_values=pixels)
        reloaded = model.load_model(tiny_path, dtype=torch.bfloat16).state_dict()
        torch.save({
            "losses": losses, "final": final, "frozen_init": frozen_init, "resumed": resumed, "bf16": bf16,
            "tiny_groups": (n_groups, cfg.vision_config.num_hidden_layers + cfg.llm_config["num_hidden_layers"] + 1),
            "ckpt_files": sorted(p.name for p in path.iterdir()),
            "tiny_names": list(tiny_sd), "tiny_reference_names": list(reference),
            "tiny_frozen_identical": all(torch.equal(tiny_sd[k], v) for k, v in reference.items()
                                         if not k.startswith("mlp1.")),
            "tiny_connector_changed": not torch.equal(tiny_sd["mlp1.1.weight"], reference["mlp1.1.weight"]),
            "tiny_reloaded_equal": state_equal(reloaded, {k: v.bfloat16() for k, v in tiny_sd.items()}),
            "tiny_resumed_equal": state_equal(tiny2_sd, tiny_sd),
            "tiny_sharded_load_logits": torch.allclose(sharded_logits, plain_logits, rtol=1e-5, atol=1e-5),
        }, out / "result.pt")
    tu.cleanup_distributed()


if __name__ == "__main__":
    if sys.argv[1] == "crash":
        _crash_worker(sys.argv[2], Path(sys.argv[3]))
    else:
        _torchrun_worker(sys.argv[1])

