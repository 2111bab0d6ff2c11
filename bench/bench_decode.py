"""
Benchmark of sampling.generate's decode loop: operator calls and time per decode step, today's loop (DynamicCache,
finished rows leave the batch) vs the static one (StaticCache, fixed shapes; + torch.compile of the one-token
step: CUDA graphs on cuda), measured in the same run, with the greedy tokens checked equal.

    python bench/bench_decode.py [--device=cpu] [--batch=8] [--compile]     # tiny model (CPU: seconds)
    python bench/bench_decode.py --device=cuda --shape=config/internvl3-1b.json --batch=128 --compile

Operator calls per step: torch.profiler events named aten::* (nested calls included) of a generate with
--steps2 new tokens minus one with --steps1, divided by the difference, so the prefill cancels out. On cuda the
kernel launches (cudaLaunchKernel + cudaGraphLaunch) are counted the same way. ms/step: the same difference of
wall times without the profiler. decode_rows() returns the table rows, for bench/gpu_check.py.
"""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import chat  # noqa: E402
import configurator  # noqa: E402
import model as M  # noqa: E402
import sampling  # noqa: E402


def build(shape, device, dtype):
    tok = chat.build_tiny_tokenizer()
    if shape:
        d = json.loads(Path(shape).read_text())
        d["llm_config"]["vocab_size"] = max(d["llm_config"].get("vocab_size", 0), len(tok))
        cfg = M.ModelConfig.from_json(d)
    else:
        cfg = M.tiny_config(vocab_size=len(tok))
    cfg.dynamic_image_size = False
    torch.manual_seed(0)
    net = M.build_model(cfg, dtype=dtype, device=device).eval()
    net.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    return net, tok, cfg


def decode_rows(shape="", device="cpu", batch=8, steps1=8, steps2=24, compile_step=False):
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    net, tok, cfg = build(shape, dev, dtype)
    S = cfg.force_image_size
    prompts = []
    for i in range(batch):   # one or two images, prompts of different lengths
        n_img = 1 + i % 2
        text = chat.expand_image_tokens("<image>\n" * n_img + "Solve it" + " please" * (i % 5), [1] * n_img,
                                        cfg.num_image_token)
        prompts.append(tok(chat.build_prompt([{"role": "user", "content": text}], tokenizer=tok), add_special_tokens=False)["input_ids"])
    n_tiles = sum(1 + i % 2 for i in range(batch))
    pv = torch.randn(n_tiles, 3, S, S, generator=torch.Generator().manual_seed(0)).to(dev, dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    variants = [("dynamic cache (today)", dict(static_cache=False)),
                ("static cache", dict(static_cache=True, compile_step=False))]
    if compile_step:
        variants.append(("static cache + compiled step", dict(static_cache=True, compile_step=True)))

    def run(kw, n):
        sync()
        t = time.perf_counter()
        out = sampling.generate(net, prompts, pixel_values=pv, max_new_tokens=n, temperature=0, stop_token_ids=[],
                                pad_token_id=tok.pad_token_id, **kw)
        sync()
        return time.perf_counter() - t, out

    rows, reference = [], None
    for name, kw in variants:
        run(kw, steps2)   # warm-up (and compilation)
        times, counts = {}, {}
        for n in (steps1, steps2):
            times[n] = min(run(kw, n)[0] for _ in range(2))
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
            with profile(activities=acts) as prof:
                _, out = run(kw, n)
            events = prof.events()
            counts[n] = (sum(e.name.startswith("aten::") for e in events),
                         sum(e.name in ("cudaLaunchKernel", "cudaGraphLaunch", "cuLaunchKernel") for e in events))
        tokens = [o["token_ids"] for o in out]
        reference = reference or tokens
        k = steps2 - steps1
        rows.append({"decode": name, "device": device, "batch": batch,
                     "aten_ops_per_step": round((counts[steps2][0] - counts[steps1][0]) / k, 1),
                     "launches_per_step": round((counts[steps2][1] - counts[steps1][1]) / k, 1) if dev.type == "cuda"
                     else None,
                     "ms_per_step": round((times[steps2] - times[steps1]) / k * 1000, 3),
                     "tokens_equal_today": tokens == reference})
    for r in rows[1:]:
        r["ops_vs_today"] = round(r["aten_ops_per_step"] / rows[0]["aten_ops_per_step"], 3)
        r["time_vs_today"] = round(r["ms_per_step"] / rows[0]["ms_per_step"], 3)
    return rows


@dataclass
class Args:
    device: str = "cpu"
    shape: str = ""          # model config (e.g. config/internvl3-1b.json); "" = the tiny model
    batch: int = 8
    steps1: int = 8
    steps2: int = 24
    compile: bool = False    # also the torch.compile'd step (slow to compile on CPU)
    threads: int = 1
    json: str = ""           # also write the rows here


def main():
    args = configurator.parse_config(Args)
    torch.set_num_threads(args.threads)
    rows = decode_rows(args.shape, args.device, args.batch, args.steps1, args.steps2, args.compile)
    print(f"decode steps, {args.shape or 'tiny model'}, {args.device}, batch {args.batch}, greedy")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r.get(k, "")) for k in keys))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
