"""Tests for train_utils.py. Also the torchrun worker: `python -m torch.distributed.run --standalone
--nproc_per_node=2 tests/test_train_utils.py OUT_DIR` (launched by test_torchrun_* below)."""
import json
import os
import random
import subprocess
import sys
import time
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
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import FSDPModule

import chat
import checkpoint
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
# RNG state, state dicts, FSDP2 wrapping, setup (single process)


def test_nonfinite_streak_and_finite_weights_guard():
    streak = 0
    for step, (loss, norm) in enumerate([(1.0, float("nan")), (float("inf"), 1.0), (0.5, 0.5), (float("nan"), 2.0)]):
        streak = tu.nonfinite_streak(streak, step + 1, loss, norm, 3, "out", 1e-5)
        assert streak == [1, 2, 0, 1][step]   # a finite step resets the count
    with pytest.raises(RuntimeError, match=r"step 9: train/loss nan and train/grad_norm 1.0: a NaN/inf loss or grad "
                                           r"norm 3 steps in a row \(max_nonfinite_steps=3\)"):
        tu.nonfinite_streak(2, 9, float("nan"), 1.0, 3, "out", 1e-5)
    net = nn.Linear(2, 2)
    tu.require_finite_weights(net, tu.Dist(), 4)
    with torch.no_grad():
        net.weight[0, 1] = float("inf")
    with pytest.raises(RuntimeError, match="step 4: the weights hold NaN/inf, no checkpoint written"):
        tu.require_finite_weights(net, tu.Dist(), 4)


def test_rng_round_trip():
    state = tu.get_rng_state()
    first = (random.random(), np.random.rand(3).tolist(), torch.randn(3).tolist())
    tu.set_rng_state(state)
    assert (random.random(), np.random.rand(3).tolist(), torch.randn(3).tolist()) == first


def test_full_state_dict_strips_wrappers_and_copies():
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
    tok = chat.build_tiny_tokenizer()
    cfg = model.tiny_config(vocab_size=len(tok))
    torch.manual_seed(0)
    net = model.build_model(cfg).eval()
    net.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    reference = model.build_model(cfg).eval()
    reference.load_state_dict(net.state_dict())
    for p in reference.parameters():   # parameters only: FSDP2 leaves buffers (rotary inv_freq) in fp32
        p.data = p.data.to(torch.bfloat16)
    reference.img_context_token_id = net.img_context_token_id
    ids = torch.tensor([tok(chat.expand_image_tokens("<image>\nHow many?", [1], cfg.num_image_token),
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


def torchrun(worker, *args, timeout=300):
    """`python -m torch.distributed.run --standalone --nproc_per_node=2 WORKER ARGS...` (gloo on CPU) -> its stdout.
    Time-boxed: ranks stuck in different collectives would wait for ever (gloo's timeout is an hour), so after
    `timeout` seconds torchrun gets SIGTERM and the test fails instead of the CI job hanging. SIGTERM, not SIGKILL:
    the workers run in sessions of their own (torch 2.13, elastic/multiprocessing/subprocess_handler/
    subprocess_handler.py:63-66), so killing torchrun alone would orphan them; on SIGTERM its agent signals each
    worker's process group (elastic/agent/server/api.py:752-754 -> local_elastic_agent.py:526-527 ->
    subprocess_handler.py:79-85)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"torchrun {Path(worker).name} {' '.join(map(str, args))} did not finish in {timeout} s "
                    f"(ranks in different collectives?)\n{out[-2000:]}\n{err[-4000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-5000:]
    return out


@pytest.fixture(scope="module")
def torchrun_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrun")
    torchrun(__file__, out, timeout=300)
    return {**torch.load(out / "result.pt", weights_only=False), "out": out}


def test_torchrun_fsdp_resume_is_bitwise_exact(torchrun_result):
    r = torchrun_result
    for save_dtype in ("None", "torch.bfloat16"):  # 2 steps, save, load into a fresh model, 2 steps == 4 steps
        losses_resumed, final_resumed = r["resumed"][save_dtype]
        assert losses_resumed == r["losses"], save_dtype
        assert state_equal(final_resumed, r["final"]), save_dtype
    assert all(torch.equal(r["final"][k], v) for k, v in r["frozen_init"].items())  # frozen: bit-identical
    assert r["bf16"] == (True, True)  # param_dtype=bf16: close first loss, fp32 sharded parameters
    assert r["ckpt_files"] == ["checksums.json", "config.json", "configuration_internvl_chat.py",
                               "model.safetensors", "optim_rank0.pt", "optim_rank1.pt", "trainer_state.pt"]


def test_torchrun_ranks_leave_together(torchrun_result):
    # cleanup_distributed waits for every rank: rank 1 leaves only after rank 0's main-only work has finished
    out = torchrun_result["out"]
    assert float((out / "rank1_left").read_text()) >= float((out / "rank0_done").read_text())


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
        path = checkpoint.save_checkpoint(out_dir, 2, m, opt, TOY_CONFIG, None, {"data_pos": 8}, keep_last=2,
                                          save_dtype=save_dtype)
        m, opt = build_toy(dist, 1 + dist.rank, activation_checkpointing=True)  # other weights and RNG states
        state = checkpoint.load_checkpoint(checkpoint.find_resume_checkpoint(out_dir), m, opt)
        assert state == {"data_pos": 8, "step": 2}, state
        losses_resumed += train_toy(m, opt, dist, 2, start=state["step"])
        resumed[str(save_dtype)] = (losses_resumed, tu.full_state_dict(m))

    # bf16 compute with fp32 master weights: same first loss up to bf16 rounding, parameters stay fp32
    m, opt = build_toy(dist, 0, param_dtype=torch.bfloat16)
    bf16_loss = train_toy(m, opt, dist, 1)[0][0]
    bf16 = (abs(bf16_loss - losses[0][0]) < 2e-2 * abs(losses[0][0]),
            {p.dtype for p in m.parameters()} == {torch.float32})

    # the real model: names under FSDP2, connector-only step, checkpoint loadable by model.load_model
    cfg, tok = model.tiny_config(), chat.build_tiny_tokenizer()
    torch.manual_seed(0)
    tiny = model.build_model(cfg)
    reference = {k: v.clone() for k, v in tiny.state_dict().items()}
    tiny.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    model.set_trainable(tiny, ["connector"])
    tu.wrap_fsdp(tiny, dist, activation_checkpointing=True)
    n_groups = sum(isinstance(module, FSDPModule) for module in tiny.modules())
    tiny_opt = torch.optim.AdamW([p for p in tiny.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.tensor([[1, 2] + [tiny.img_context_token_id] * cfg.num_image_token + [3, 4]])
    pixels = torch.randn(1, 3, cfg.force_image_size, cfg.force_image_size)
    tiny(ids, pixel_values=pixels).float().logsumexp(-1).mean().backward()
    tiny_opt.step()
    tiny_sd = tu.full_state_dict(tiny)
    tiny_path = checkpoint.save_checkpoint(out / "tiny", 1, tiny, tiny_opt, cfg, tok, {}, keep_last=1,
                                           save_dtype=torch.bfloat16)
    tiny2 = tu.load_model_sharded(tiny_path, dist, ["connector"])  # bf16 values in fp32 parameters
    tiny2_opt = torch.optim.AdamW([p for p in tiny2.parameters() if p.requires_grad])  # before any forward
    with torch.no_grad():
        sharded_logits = tiny2(ids, pixel_values=pixels)
    checkpoint.load_checkpoint(tiny_path, tiny2, tiny2_opt)
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
        time.sleep(1.0)   # a slow last write on rank 0: rank 1 must not tear the group down before it is done
        (out / "rank0_done").write_text(repr(time.time()))
    tu.cleanup_distributed()
    (out / f"rank{dist.rank}_left").write_text(repr(time.time()))


if __name__ == "__main__":
    _torchrun_worker(sys.argv[1])

