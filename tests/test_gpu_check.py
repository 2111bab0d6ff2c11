"""Tests for bench/gpu_check.py: its CPU smoke mode runs every check on the tiny model through the same code the
GPU run uses (so a GPU session does not lose its minutes to an import or argument error), and the figures a CPU
can check are right."""
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import chat  # noqa: E402
import model as M  # noqa: E402
import decode  # noqa: E402


def test_smoke_run_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run([sys.executable, "bench/gpu_check.py", "--device=cpu", "--tiny", f"--out={out}"], cwd=REPO,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["tiny"] is True
    rows = {(check.split(",")[0], figure): value for check, figure, value in result["rows"]}
    assert not [r for r in result["rows"] if r[1] == "FAILED"]
    assert {c for c, _ in rows} == {"sampler", "train", "entropy", "grpo builtin", "vllm"}
    assert rows[("train", "MFU (dense bf16 peak)")] == "n/a"   # no peak FLOP/s for a CPU: not estimated
    assert rows[("vllm", "rollout_backend=vllm")].startswith("skipped")
    # fp32 on CPU: the chunked log-probs, entropies and gradients equal the naive ones to float rounding
    diffs = rows[("entropy", "max abs diff log-prob, entropy")].split(", ")
    grads = rows[("entropy", "relative error grad hidden, grad weight")].split(", ")
    assert all(float(x) < 1e-5 for x in diffs + grads)
    step = rows[("grpo builtin", "step s: rollout / reward / train / sync")]
    assert float(step.split(":")[0]) > 0
    assert "| grpo builtin" in run.stdout and "| check | figure | cpu |" in run.stdout
    assert all(rows[(c, "torch.compile frames compiled while timed")] == "0"
               for c in ("sampler", "train", "grpo builtin"))


def import_gpu_check(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device=cpu", "--tiny"])   # it parses them on import
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    sys.modules.pop("gpu_check", None)
    return importlib.import_module("gpu_check")


def test_decode_timing_is_warm_and_counts_compiles(monkeypatch):
    """The sampler row times generate only at shapes it ran before (the static cache is prompt + n wide, rounded
    up to a bucket, each bucket its own compiled step): no compile lands in the timing. The count is real: a
    width bucket not warmed up compiles again. torch.compile with the eager backend stands in for inductor's
    CUDA graphs (same dynamo guards and recompiles, no C++ build)."""
    gpu_check = import_gpu_check(monkeypatch)
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **_: real_compile(fn, backend="eager"))
    monkeypatch.setattr(decode, "_compile_failed", [])
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = M.build_model(M.tiny_config()).eval()
    tok = chat.build_tiny_tokenizer()
    net.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    prompt = gpu_check.prompt_ids(tok, net.config)
    pv = torch.randn(2, 3, 112, 112)
    s_per_step, compiles = gpu_check.decode_s_per_step(net, prompt, pv, 2, 5, static_cache=True,
                                                           compile_decode="on")
    assert s_per_step > 0 and compiles == 0
    before = gpu_check.dynamo_compiles()
    decode.generate(net, [prompt] * 2, pixel_values=pv, max_new_tokens=5 + 64, static_cache=True,
                      compile_decode="on")   # a new width bucket
    assert gpu_check.dynamo_compiles() > before
    with pytest.raises(gpu_check.RecompiledWhileTimed):
        gpu_check.no_compiles_while_timed("sampler", 1)
    torch._dynamo.reset()
