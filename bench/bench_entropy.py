"""
Peak memory and agreement of logprobs.token_logprobs_and_entropy (chunked) against a naive full log_softmax,
for T response tokens, vocabulary V and hidden size D (issue 4 targets: T = 8192, V = 151,674, D = 5120 on CPU;
extra peak memory >= 10x lower, values within 1e-3).

  python bench/bench_entropy.py                 full size (bf16 hidden + lm_head, ~1-3 min on 2 cores, ~13 GB RAM)
  python bench/bench_entropy.py --small         T=1024, V=32000, D=1024, chunk 64: a smoke run in seconds (the
                                                ~20 MiB fixed overhead of a first matmul dominates there; the
                                                targets are for the full size)
  python bench/bench_entropy.py --from_logits   input = existing bf16 logits [T, V] (logprobs_and_entropy_from_logits)
  python bench/bench_entropy.py --backward      forward + backward of lp + 0.1 H (the training case; CPU numbers)
  python bench/bench_entropy.py --gemms --tokens=1024 --hidden=896   the backward's matmuls on the meta device
                                                (shapes only, nothing computed): count, TFLOP and the cuBLAS
                                                fp32 precision each runs at (GPU cost measured without a GPU)

How memory is measured: each method runs in its own fresh subprocess. The inputs are created in place (no
temporaries), then the kernel's resident-set high-water mark is reset (/proc/self/clear_refs = 5) and read back
after the method (VmHWM); "extra" = VmHWM after - VmRSS before, i.e. every byte the method held at its peak,
outputs included. Large tensors are mmap-backed, so freed memory leaves the RSS at once.

The naive baseline is a careful one (a lower bound for naive code): full fp32 logits, full log_softmax, logits
freed before the entropy, exp multiplied in place. Straightforward code, -(logp.exp() * logp).sum(-1) with the
logits still alive, holds four [T, V] fp32 tensors instead of two, so the true ratio is larger than printed.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import configurator
import logprobs as L

MiB = 2 ** 20


def memory_kib(field):
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def make_inputs(args):
    """Filled in place, chunk by chunk, so creating them leaves no temporary peak behind."""
    gen = torch.Generator().manual_seed(0)
    dtype = getattr(torch, args.dtype)
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=gen)
    if args.from_logits:
        logits = torch.empty(args.tokens, args.vocab, dtype=dtype)
        for start in range(0, args.tokens, 256):
            logits[start:start + 256].normal_(generator=gen).mul_(3.0)
        return (logits,), targets
    # scaled like a trained lm_head: logits of std ~3, so the entropies span a realistic range
    hidden = torch.empty(args.tokens, args.hidden, dtype=dtype).normal_(generator=gen)
    weight = torch.empty(args.vocab, args.hidden, dtype=dtype)
    for start in range(0, args.vocab, 4096):
        weight[start:start + 4096].normal_(generator=gen).mul_(3.0 / args.hidden ** 0.5)
    return (hidden, weight), targets


def naive(inputs, targets):
    logits = F.linear(*inputs).float() if len(inputs) == 2 else inputs[0].float()  # [T, V] fp32
    logp_all = torch.log_softmax(logits, -1)                                        # [T, V] fp32
    del logits
    logp = logp_all.gather(-1, targets[:, None])[:, 0]
    if torch.is_grad_enabled():   # autograd keeps exp's output: no in-place product
        return logp, -(logp_all.exp() * logp_all).sum(-1)
    entropy = -logp_all.exp().mul_(logp_all).sum(-1)
    return logp, entropy


def chunked(inputs, targets, chunk_size, with_grad=False):
    if len(inputs) == 2:
        return L.token_logprobs_and_entropy(*inputs, targets, chunk_size=chunk_size, with_grad=with_grad)
    return L.logprobs_and_entropy_from_logits(inputs[0], targets, chunk_size=chunk_size, with_grad=with_grad)


def worker(args):
    """One method in this (fresh) process: prints a JSON line, saves the outputs for the parent to compare."""
    t0 = time.time()
    inputs, targets = make_inputs(args)
    print(f"  [{args.worker}] inputs ready in {time.time() - t0:.1f}s "
          f"({sum(x.numel() * x.element_size() for x in inputs) / MiB:.0f} MiB)", flush=True)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    if args.backward:   # the training case: gradients to hidden and lm_head (allocated here, same for both)
        grads = [torch.zeros_like(x) for x in inputs]
        for x, g in zip(inputs, grads):
            x.requires_grad_(True)
            x.grad = g
    rss_before = memory_kib("VmRSS")
    t0 = time.time()
    with torch.set_grad_enabled(args.backward):
        logp, entropy = naive(inputs, targets) if args.worker == "naive" else \
            chunked(inputs, targets, args.chunk_size, with_grad=args.backward)
        if args.backward:
            (logp.sum() + 0.1 * entropy.sum()).backward()
            logp, entropy = logp.detach(), entropy.detach()
    seconds = time.time() - t0
    peak = memory_kib("VmHWM")
    torch.save({"logp": logp, "entropy": entropy}, args.result + ".pt")
    Path(args.result).write_text(json.dumps({"extra_mib": (peak - rss_before) / 1024, "seconds": seconds}))


def gemm_rows(args):
    """Every matmul of the chunked backward (lp + 0.1 H) on meta tensors: 2 m n k FLOPs each, grouped by kind and
    by torch.backends.cuda.matmul.fp32_precision at the call ("tf32": tensor cores on a GPU)."""
    rows = {}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, a=(), kwargs=None):
            if func in (torch.ops.aten.addmm_.default, torch.ops.aten.mm.default):
                m, k = a[-2].shape
                dtype = a[-1].dtype if func is torch.ops.aten.mm.default else torch.float32
                key = (func.__name__, str(dtype).removeprefix("torch."), torch.backends.cuda.matmul.fp32_precision)
                n, tflop = rows.get(key, (0, 0.0))
                rows[key] = n + 1, tflop + 2 * m * k * a[-1].shape[1] / 1e12
            return func(*a, **(kwargs or {}))

    dtype = getattr(torch, args.dtype)
    hidden = torch.empty(args.tokens, args.hidden, dtype=dtype, device="meta", requires_grad=True)
    weight = torch.empty(args.vocab, args.hidden, dtype=dtype, device="meta", requires_grad=True)
    targets = torch.zeros(args.tokens, dtype=torch.long, device="meta")
    logp, entropy = L.token_logprobs_and_entropy(hidden, weight, targets, args.chunk_size, with_grad=True)
    with Count():
        (logp.sum() + 0.1 * entropy.sum()).backward()
    print(f"backward, T={args.tokens} V={args.vocab} D={args.hidden} {args.dtype}, chunk_size={args.chunk_size}")
    print("matmul | dtype | fp32_precision | calls | TFLOP")
    for (name, dt, precision), (n, tflop) in sorted(rows.items()):
        print(f"{name} | {dt} | {precision} | {n} | {tflop:.3f}")


@dataclass
class Args:
    tokens: int = 8192
    vocab: int = 151674
    hidden: int = 5120
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    chunk_size: int = 0          # rows per chunk (default: entropy.py's 512; 64 with --small)
    small: bool = False          # T=1024, V=32000, D=1024, chunk 64: the same T/chunk ratio
    from_logits: bool = False    # input = existing [T, V] logits
    backward: bool = False       # with grad: forward + backward (lp + 0.1 H)
    gemms: bool = False          # the backward's matmuls on meta tensors instead (count, TFLOP, precision)
    json: str = ""               # also write the results here
    worker: str = ""             # internal: the method a fresh process runs
    result: str = ""             # internal: where that process writes its numbers


def main():
    args = configurator.parse_config(Args)
    if args.small:
        args.tokens, args.vocab, args.hidden = 1024, 32000, 1024
    args.chunk_size = args.chunk_size or (64 if args.small else 512)
    if args.worker:
        return worker(args)
    if args.gemms:
        return gemm_rows(args)

    fp32_logits_mib = args.tokens * args.vocab * 4 / MiB
    need_mib = 2.2 * fp32_logits_mib + (args.vocab + args.tokens) * args.hidden * 4 / MiB
    available_mib = int(re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1)) / 1024
    print(f"T={args.tokens} V={args.vocab} D={args.hidden} {args.dtype} "
          f"{'logits' if args.from_logits else 'hidden + lm_head'} input, chunk_size={args.chunk_size}; "
          f"one fp32 [T,V] = {fp32_logits_mib:.0f} MiB; {available_mib:.0f} MiB available")
    if available_mib < need_mib:
        sys.exit(f"not enough free memory for the naive baseline: ~{need_mib:.0f} MiB needed, "
                 f"{available_mib:.0f} MiB available (try --small)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("naive", "chunked"):
            print(f"running {method} in a fresh process ...", flush=True)
            result = str(Path(tmp) / method)
            cmd = [sys.executable, __file__, "--worker", method, "--result", result, "--tokens", str(args.tokens),
                   "--vocab", str(args.vocab), "--hidden", str(args.hidden), "--dtype", args.dtype,
                   "--chunk_size", str(args.chunk_size)] + (["--from_logits"] if args.from_logits else []) + \
                (["--backward"] if args.backward else [])
            subprocess.run(cmd, check=True)
            results[method] = json.loads(Path(result).read_text())
            results[method]["out"] = torch.load(result + ".pt")
            print(f"  {method}: {results[method]['seconds']:.1f}s, peak extra {results[method]['extra_mib']:.0f} MiB",
                  flush=True)
    a, b = results["naive"]["out"], results["chunked"]["out"]
    diff_logp = (a["logp"] - b["logp"]).abs().max().item()
    diff_entropy = (a["entropy"] - b["entropy"]).abs().max().item()
    ratio = results["naive"]["extra_mib"] / max(results["chunked"]["extra_mib"], 1e-9)
    ok = ratio >= 10 and max(diff_logp, diff_entropy) < 1e-3
    print(f"\n{'method':<8} {'peak extra MiB':>15} {'seconds':>8}")
    for m in ("naive", "chunked"):
        print(f"{m:<8} {results[m]['extra_mib']:>15.0f} {results[m]['seconds']:>8.1f}")
    print(f"memory ratio naive/chunked: {ratio:.1f}x (target >= 10x)")
    print(f"max |diff| log-prob {diff_logp:.2e}, entropy {diff_entropy:.2e} (target < 1e-3); "
          f"entropy range {b['entropy'].min().item():.2f}..{b['entropy'].max().item():.2f} nats")
    print(("PASS" if ok else "FAIL") + (" (smoke run: the targets are for the full size)" if args.small else ""))
    if args.json:
        summary = {k: v for k, v in asdict(args).items() if k not in ("worker", "result", "json")}
        summary.update({m: {k: v for k, v in results[m].items() if k != "out"} for m in results},
                       ratio=ratio, max_abs_diff_logp=diff_logp, max_abs_diff_entropy=diff_entropy, ok=ok)
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0 if ok or args.small else 1


if __name__ == "__main__":
    sys.exit(main())
