"""
Benchmark of decode.generate's decode loop: operator calls and time per decode step, today's loop (DynamicCache,
finished rows leave the batch) vs the static one (StaticCache, fixed shapes; + torch.compile of the one-token
step: CUDA graphs on cuda), measured in the same run, with the greedy tokens checked equal.

    python bench/bench_decode.py [--device=cpu] [--batch=8] [--compile]     # tiny model (CPU: seconds)
    python bench/bench_decode.py --device=cuda --shape=config/internvl3-1b.json --batch=128 --compile
    python bench/bench_decode.py --batch=64 --sampled   # T = 1: one shared generator vs per-row seeds
    python bench/bench_decode.py --kv_copies      # bytes copied per decode step: transformers' sdpa vs ours
    python bench/bench_decode.py --graph_calls=10 # compiles and graph recordings over 10 GRPO-like calls
    python bench/bench_decode.py --rollouts [--stops=8]   # GRPO-shaped sampler calls: prefix per row / shared

Operator calls per step: torch.profiler events named aten::* (nested calls included) of a generate with
--steps2 new tokens minus one with --steps1, divided by the difference, so the prefill cancels out. On cuda the
kernel launches (cudaLaunchKernel + cudaGraphLaunch) are counted the same way. ms/step: the same difference of
wall times without the profiler (min of 3); cpu_ms: of this process's CPU time (on a shared box less disturbed by
other processes than wall time). decode_rows() returns the table rows, for bench/gpu_check.py.
--sampled: each loop at T = 1, drawing from one shared generator (GRPO's rollouts) and from per-row seeds
(eval.py's: decode.row_uniforms, an inverse-CDF draw per row); "today" is then the dynamic cache's shared
generator, and the tokens are compared among the seeded loops.

--kv_copies (a GPU cost measured on CPU): bytes that aten::copy_ writes in one decode step at InternVL3-1B's
LLM shape (14 query heads, 2 KV heads, d = 64) with 2 of its 24 layers and a --context-column cache, through
transformers' "sdpa" (repeat_kv copies K and V to 14 heads in every layer when there is a mask) and through
ours ("sdpa_packed": model.gqa_folded_sdpa_attention). Profiler shapes (record_shapes), not time.

--graph_calls=N: N sampling calls as N GRPO steps make them (same rows, prompts of other lengths each time),
through the compiled step with dynamo's eager backend (the same guards and recompiles as inductor, no C++
build): dynamo frames compiled (torch._dynamo.utils.counters["stats"]["unique_graphs"], torch 2.13
_dynamo/convert_frame.py) and the CUDA graphs that inductor's cudagraph trees would record, one per distinct
(input shapes, cache addresses) the compiled step is called with (a new StaticCache is new static addresses).
"""
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from transformers import StaticCache  # noqa: E402

import chat  # noqa: E402
import configurator  # noqa: E402
import model as M  # noqa: E402
import decode  # noqa: E402
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


def decode_rows(shape="", device="cpu", batch=8, steps1=8, steps2=24, compile_step=False, sampled=False):
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
                ("static cache", dict(static_cache=True, compile_decode="off"))]
    if compile_step:
        variants.append(("static cache + compiled step", dict(static_cache=True, compile_decode="on")))
    if sampled:
        draws = (("shared generator", dict(generator=torch.Generator(dev).manual_seed(0))),
                 ("per-row seeds", dict(seeds=list(range(batch)))))
        variants = [(f"{name}, {how}", dict(kw, **draw)) for name, kw in variants for how, draw in draws]

    def run(kw, n):
        sync()
        t, cpu = time.perf_counter(), time.process_time()
        out = decode.generate(net, prompts, pixel_values=pv, max_new_tokens=n, temperature=float(sampled),
                                stop_token_ids=[],
                                pad_token_id=tok.pad_token_id, **kw)
        sync()
        return (time.perf_counter() - t, time.process_time() - cpu), out

    rows, reference = [], None
    for name, kw in variants:
        run(kw, steps2)   # warm-up (and compilation)
        times, counts = {}, {}
        for n in (steps1, steps2):
            times[n] = [min(t) for t in zip(*(run(kw, n)[0] for _ in range(3)))]   # (wall, CPU) seconds
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
            with profile(activities=acts) as prof:
                _, out = run(kw, n)
            events = prof.events()
            counts[n] = (sum(e.name.startswith("aten::") for e in events),
                         sum(e.name in ("cudaLaunchKernel", "cudaGraphLaunch", "cuLaunchKernel") for e in events))
        tokens = [o["token_ids"] for o in out]
        reference = reference or (None if "generator" in kw else tokens)   # a shared stream: no reference
        k = steps2 - steps1
        rows.append({"decode": name, "device": device, "batch": batch,
                     "aten_ops_per_step": round((counts[steps2][0] - counts[steps1][0]) / k, 1),
                     "launches_per_step": round((counts[steps2][1] - counts[steps1][1]) / k, 1) if dev.type == "cuda"
                     else None,
                     "ms_per_step": round((times[steps2][0] - times[steps1][0]) / k * 1000, 3),
                     "cpu_ms_per_step": round((times[steps2][1] - times[steps1][1]) / k * 1000, 3),
                     "tokens_equal_today": None if "generator" in kw else tokens == reference})
    for r in rows[1:]:
        r["ops_vs_today"] = round(r["aten_ops_per_step"] / rows[0]["aten_ops_per_step"], 3)
        r["time_vs_today"] = round(r["ms_per_step"] / rows[0]["ms_per_step"], 3)
        r["cpu_time_vs_today"] = round(r["cpu_ms_per_step"] / rows[0]["cpu_ms_per_step"], 3)
    return rows


def kv_copy_rows(batch=8, context=1024, layers=2):
    """Bytes written by aten::copy_ in one decode step (the LLM alone, fp32), per attention implementation."""
    llm = json.loads((Path(__file__).resolve().parents[1] / "config" / "internvl3-1b.json").read_text())["llm_config"]
    shape = {k: llm[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")}
    cfg = M.tiny_config(vocab_size=1024, llm=dict(shape, num_hidden_layers=layers))
    torch.manual_seed(0)
    net = M.build_model(cfg).eval()
    prompt = torch.randint(0, 1024, (batch, context))
    attn = torch.ones(batch, context + 1, dtype=torch.long)
    attn[:, :3] = 0   # left padding: a mask, as every batched decode step has
    rows = []
    for impl in ("sdpa", "sdpa_packed"):
        net.language_model.config._attn_implementation = impl   # read by each layer at every forward
        cache = StaticCache(config=net.language_model.config, max_cache_len=context + 1)
        with torch.no_grad():
            net(prompt, attention_mask=attn[:, :context], past_key_values=cache)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                logits = decode.decode_step(net, prompt[:, -1:], attn, torch.full((batch, 1), context), cache)
        copies = [e for e in prof.events() if e.name == "aten::copy_"]
        written = sum(math.prod(e.input_shapes[0]) for e in copies) * 4   # fp32 destinations
        rows.append({"attention": impl, "batch": batch, "context": context, "layers": layers,
                     "copies_per_step": len(copies), "MB_copied_per_step": round(written / 2 ** 20, 2),
                     "kv_cache_MB": round(2 * layers * batch * shape["num_key_value_heads"] * (context + 1)
                                          * (shape["hidden_size"] // shape["num_attention_heads"]) * 4 / 2 ** 20, 2),
                     "logits": logits})
    rows[1]["logits_equal_sdpa"] = torch.allclose(rows[0].pop("logits"), rows[1].pop("logits"), rtol=1e-4, atol=1e-4)
    return rows


def graph_rows(calls=10, batch=64, new_tokens=16):
    """Dynamo compiles and would-be CUDA-graph recordings over `calls` generate calls of one batch size."""
    net, tok, cfg = build("", torch.device("cpu"), torch.float32)
    real_compile, seen, caches = torch.compile, set(), []

    def compile_eager(fn, **_):
        compiled = real_compile(fn, backend="eager")

        def step(model, tokens, attention_mask, position_ids, cache):
            seen.add((tuple(tokens.shape), tuple(attention_mask.shape), cache.layers[0].keys.data_ptr()))
            caches.append(cache)   # kept alive: a later cache cannot reuse a freed one's address
            return compiled(model, tokens, attention_mask, position_ids, cache)
        return step

    torch.compile, counters = compile_eager, torch._dynamo.utils.counters["stats"]
    torch._dynamo.reset()
    lengths = torch.Generator().manual_seed(0)
    try:
        for call in range(calls):   # prompts of 10-40 words: other widths at every call, as GRPO's batches are
            words = torch.randint(10, 40, (batch,), generator=lengths).tolist()
            prompts = [tok(chat.build_prompt([{"role": "user", "content": "Solve it" + " please" * w}], tokenizer=tok),
                           add_special_tokens=False)["input_ids"] for w in words]
            decode.generate(net, prompts, max_new_tokens=new_tokens, temperature=0, pad_token_id=tok.pad_token_id,
                              static_cache=True, compile_decode="on")
    finally:
        torch.compile = real_compile
    return [{"calls": calls, "batch": batch, "dynamo_frames_compiled": counters["unique_graphs"],
             "cuda_graph_recordings": len(seen)}]


def rollout_rows(calls=6, prompts=8, rollouts=8, new_tokens=64, stops=0):
    """CPU seconds per BuiltinSampler.sample call of GRPO's shape (prompts x rollouts rows, T = 1, the tiny model,
    random init: rollouts run long), median of `calls` after one untimed call (the compile): each prompt's rows
    encoded one by one (a distinct copy of the prompt per row) vs the prefix shared (decode.generate's copies),
    eager; and shared + the compiled step (decode_static compacts finished rows). stops > 0: the model's `stops`
    most frequent tokens (in an uncounted eager call) also stop a row, for shorter rollouts."""
    net, tok, _ = build("", torch.device("cpu"), torch.float32)
    texts = [f"Question {i}: how many circles are there?" + " Think." * i for i in range(prompts)]
    ids = [tok(chat.build_prompt([{"role": "user", "content": t}], tokenizer=tok),
               add_special_tokens=False)["input_ids"] for t in texts]
    shared = [{"input_ids": p, "pixel_values": None} for p in ids]
    sampler = lambda mode: sampling.BuiltinSampler(net, tok, temperature=1.0, batch_size=prompts * rollouts,
                                                   compile_decode=mode)
    stop = ()
    if stops:
        out = sampler("off").sample(shared, rollouts, new_tokens, seed=0)
        counts = torch.bincount(torch.tensor([t for g in out for o in g for t in o["token_ids"]]))
        stop = tuple(tok.convert_ids_to_tokens(t) for t in counts.argsort(descending=True)[:stops].tolist())
    variants = [("eager, prefix per row", "off", lambda: [dict(p) for p in shared for _ in range(rollouts)], 1),
                ("eager, prefix shared", "off", lambda: shared, rollouts),
                ("compiled + compaction, prefix shared", "on", lambda: shared, rollouts)]
    rows = []
    for name, mode, make, n in variants:
        s, times, tokens = sampler(mode), [], []
        for call in range(calls + 1):
            t = time.process_time()
            out = s.sample(make(), n, new_tokens, stop=stop, seed=call)
            times.append(time.process_time() - t)
            tokens.append(sum(o["num_tokens"] for g in out for o in g))
        rows.append({"sampling": name, "rows": prompts * rollouts,
                     "mean_tokens": round(sum(tokens[1:]) / calls / (prompts * rollouts), 1),
                     "cpu_s_per_call": round(sorted(times[1:])[calls // 2], 3), "first_call_cpu_s": round(times[0], 2)})
    for r in rows[1:]:
        r["vs_per_row"] = round(r["cpu_s_per_call"] / rows[0]["cpu_s_per_call"], 3)
    return rows


@dataclass
class Args:
    device: str = "cpu"
    shape: str = ""          # model config (e.g. config/internvl3-1b.json); "" = the tiny model
    batch: int = 8
    steps1: int = 8
    steps2: int = 24
    compile: bool = False    # also the torch.compile'd step (slow to compile on CPU)
    sampled: bool = False    # T = 1: one shared generator vs per-row seeds (see above)
    threads: int = 1
    json: str = ""           # also write the rows here
    kv_copies: bool = False  # bytes copied per decode step instead (see above)
    context: int = 1024      # --kv_copies: cache columns
    graph_calls: int = 0     # > 0: compiles and graph recordings over this many calls instead
    rollouts: bool = False   # GRPO-shaped sampling calls instead (see rollout_rows)
    stops: int = 0           # --rollouts: extra stop tokens (the most frequent ones): shorter rollouts


def main():
    args = configurator.parse_config(Args)
    torch.set_num_threads(args.threads)
    if args.kv_copies:
        rows = kv_copy_rows(args.batch, args.context)
        print("one decode step, InternVL3-1B's LLM shape (2 layers), fp32, cpu")
    elif args.rollouts:
        rows = rollout_rows(stops=args.stops)
        print("GRPO-shaped sampling calls (8 prompts x 8 rollouts, <= 64 tokens, T = 1), tiny model, cpu")
    elif args.graph_calls:
        rows = graph_rows(args.graph_calls, args.batch)
        print(f"{args.graph_calls} generate calls of {args.batch} rows, compiled step (dynamo eager backend)")
    else:
        rows = decode_rows(args.shape, args.device, args.batch, args.steps1, args.steps2, args.compile, args.sampled)
        print(f"decode steps, {args.shape or 'tiny model'}, {args.device}, batch {args.batch}, "
              f"{'T = 1' if args.sampled else 'greedy'}")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r.get(k, "")) for k in keys))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
