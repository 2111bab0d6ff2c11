"""Tests for bench/gpu_check.py: its CPU smoke mode runs every check on the tiny model through the same code the
GPU run uses (so a GPU session does not lose its minutes to an import or argument error), and the figures a CPU
can check are right."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
