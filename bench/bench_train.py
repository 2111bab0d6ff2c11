"""
Benchmark of the training phase's batches: padding waste and forward+backward time of padded vs packed
(padding-free) micro-batches for grpo.py and sft.py, both measured in the same run; MFU on a GPU.

    python bench/bench_train.py [--device=cpu] [--threads=1] [--reps=3]            # demo scale, CPU
    python bench/bench_train.py --device=cuda --shape=config/internvl3-1b.json --tokens=16384   # GPU, MFU

Demo scale: micro-batches built from the demo's own data (synthetic.py with the demo's task settings, small
counts) and the tiny model: GRPO = prompts + teacher-trace responses (<= 128 tokens, the demo's limit) in
micro-batches of 16 sequences (config/grpo_demo.py); SFT = the demo's chat samples, 16 per micro-batch
(config/demo_sft.py). Packed = the same samples grouped by a token budget into one padding-free row each.
computed / real tokens counts the rows x width the model runs over against the real tokens (one prompt copy per
sequence). "grpo groups": the same responses as 16 groups of 4 rollouts sharing a prompt, packed with one prompt
copy per sequence vs one per group and micro-batch (grpo.py's shared_prefix).

--shape: a model config (e.g. config/internvl3-1b.json) with random weights: ragged sequences (lengths drawn
uniformly in [tokens/16, tokens/4]) packed into micro-batches of --tokens tokens, timed forward+backward of
logprobs.sequence_logprobs; MFU counts 6*N*T for the LLM without the input embedding (lm_head included)
+ 6*L*D*sum(T_i^2) for causal attention + 6*N_vit*tokens for the ViT and connector, against 989 TFLOP/s (H200
dense bf16) and 790 TFLOP/s (what a large bf16 matmul reaches there).

Every function returns its table rows (list of dicts), so bench/gpu_check.py can call them.
"""
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

import chat  # noqa: E402
import configurator  # noqa: E402
import data  # noqa: E402
import grpo  # noqa: E402
import logprobs  # noqa: E402
import model  # noqa: E402
import sft  # noqa: E402
import synthetic  # noqa: E402

PEAK_TFLOPS = {"h200_dense_bf16": 989.0, "h200_measured_matmul": 790.0}


def demo_samples(root, n=64, max_response=128):
    """The demo's data at small counts -> (net, tokenizer, grpo samples, sft samples); a tiny model as the demo's
    (tokenizer fit on the synthetic corpus, tiny_config)."""
    root = Path(root)
    synthetic.write_dataset(root, n_train=0, n_val=0, n_test=0, n_ood=0, n_sft=n, n_sft_val=0, n_caption=0)
    corpus = [text for _, text in data.read_jsonl(root / "tokenizer_corpus.jsonl")]
    tok = chat.build_tiny_tokenizer(corpus)
    cfg = model.tiny_config(vocab_size=len(tok))
    torch.manual_seed(0)
    net = model.build_model(cfg)
    net.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    chats = data.read_chat_jsonl(root / "sft.jsonl")
    sft_samples = [data.tokenize_chat(tok, cfg, c, 512) for c in chats]   # demo_sft: max_seq_len 512
    grpo_samples = []
    for c in chats:   # a rollout of the SFT'd policy looks like the teacher's trace: prompt + trace <= 128 tokens
        pixel_values, num_tiles, _ = data.load_pixel_values(c["images"], cfg)
        prompt = chat.expand_image_tokens(chat.build_prompt(c["messages"][:1], tokenizer=tok), num_tiles, cfg.num_image_token)
        answer = c["messages"][1]["content"].removeprefix("<think>\n")
        response = tok.encode(answer, add_special_tokens=False)[:max_response - 1] + [tok.eos_token_id]
        grpo_samples.append({"prompt_ids": tok.encode(prompt, add_special_tokens=False), "response_ids": response,
                             "pixel_values": pixel_values, "old_logp": None, "advantage": 1.0})
    return net, tok, grpo_samples, sft_samples


def waste(batches):
    """(computed tokens = rows x width summed over micro-batches, real tokens)."""
    computed = sum(b["input_ids"].numel() for b in batches)
    real = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in batches)
    return computed, real


def grpo_batches(samples, cfg, pad_id, image_size):
    seqs = lambda m: [{"input_ids": s["prompt_ids"] + s["response_ids"], "pixel_values": s["pixel_values"]} for s in m]
    micro = grpo.micro_batches(samples, cfg, grpo.tu.Dist(), pad_id)
    if cfg.packing and cfg.shared_prefix:
        return micro, [data.collate_responses(m, pad_id, image_size, True, True)[0] for m in micro]
    if cfg.packing:
        return micro, [data.pack_samples(seqs(m), 10 ** 9, pad_id, image_size) for m in micro]
    return micro, [data.collate_right_padded(seqs(m), pad_id, image_size) for m in micro]


def timed(fn, reps, sync):
    fn()   # warm-up
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def demo_rows(reps=3, budget_grpo=2048, budget_sft=4096, device="cpu"):
    """Padding waste and forward+backward seconds per global batch of the demo's GRPO (16 prompts x 4 rollouts)
    and SFT (16 samples) micro-batches: padded as the demo configs are vs packed by a token budget; and GRPO's
    groups (computed / real tokens below 1: one copy of each prompt) packed per sequence vs shared prefix."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        net, tok, grpo_samples, sft_samples = demo_samples(tmp)
    net = net.to(dev).eval()
    pad, size = tok.pad_token_id, net.config.force_image_size
    rows = []
    g_samples = grpo_samples[:64]   # one demo step: 16 prompts x 4 rollouts
    # the same 64 responses as 16 groups of 4 rollouts, each group with its first sample's prompt and image: what
    # grpo.py trains on, where shared_prefix keeps one copy of each prompt per micro-batch
    grouped = [dict(s, prompt_ids=g_samples[i - i % 4]["prompt_ids"],
                    pixel_values=g_samples[i - i % 4]["pixel_values"]) for i, s in enumerate(g_samples)]
    n_seq = float(len(g_samples))
    packed = dict(packing=True, micro_batch_tokens=budget_grpo, shared_prefix=False)
    for stage, name, samples, over in (
            ("grpo", "padded (micro_batch_size=16)", g_samples, dict(packing=False, micro_batch_size=16)),
            ("grpo", f"packed (micro_batch_tokens={budget_grpo})", g_samples, packed),
            ("grpo groups", f"packed (micro_batch_tokens={budget_grpo})", grouped, packed),
            ("grpo groups", "packed, shared prefix", grouped, dict(packed, shared_prefix=True))):
        cfg = grpo.Config(**over)
        micro, batches = grpo_batches(samples, cfg, pad, size)

        def step():
            for m in micro:
                logp, _, mask = logprobs.sequence_logprobs(net, m, pad, size, cfg, True)
                adv = torch.tensor([s["advantage"] for s in m], device=dev)
                loss, _ = grpo.policy_loss(logp, logp.detach(), None, adv, mask, cfg)
                loss = loss / n_seq
                loss.backward()
            net.zero_grad(set_to_none=True)
        computed, real = waste(batches)
        real = sum(len(s["prompt_ids"]) + len(s["response_ids"]) for s in samples)   # one prompt copy per sequence
        rows.append({"stage": stage, "batches": name, "micro_batches": len(micro), "computed_tokens": computed,
                     "real_tokens": real, "waste": round(computed / real, 3), "seconds": timed(step, reps, sync)})
    s_samples = sft_samples[:16]   # one demo step: global batch 16
    for name, over in (("padded (micro_batch_size=16)", dict(packing=False, micro_batch_size=16)),
                       (f"packed (micro_batch_tokens={budget_sft})",
                        dict(packing=True, micro_batch_tokens=budget_sft))):
        cfg = sft.Config(max_seq_len=512, **over)
        batches = sft.micro_batches(s_samples, cfg, pad, size)
        n_tokens = sum(sft.num_targets(b) for b in batches)

        def step():
            for b in batches:
                (sft.nll_and_entropy(net, b, dev, 4096)[0] / n_tokens).backward()
            net.zero_grad(set_to_none=True)
        computed, real = waste(batches)
        rows.append({"stage": "sft", "batches": name, "micro_batches": len(batches), "computed_tokens": computed,
                     "real_tokens": real, "waste": round(computed / real, 3), "seconds": timed(step, reps, sync)})
    for stage in ("grpo", "grpo groups", "sft"):   # the second row's time over the first's
        base, new = [r for r in rows if r["stage"] == stage]
        new["time_vs_first"] = round(new["seconds"] / base["seconds"], 3)
    return rows


def mfu_rows(shape, tokens=16384, device="cuda", reps=3, packing=True, micro_batch_size=0):
    """Forward+backward of logprobs.sequence_logprobs over `tokens` tokens of ragged sequences (one image tile each)
    on a random model of config `shape`: seconds, tokens/s, TFLOP/s, MFU, peak GiB. bf16 autocast on cuda."""
    dev = torch.device(device)
    tok = chat.build_tiny_tokenizer()
    d = json.loads(Path(shape).read_text())
    d["llm_config"]["vocab_size"] = max(d["llm_config"].get("vocab_size", 0), len(tok))
    cfg = model.ModelConfig.from_json(d)
    cfg.dynamic_image_size = False
    torch.manual_seed(0)
    net = model.build_model(cfg, device=dev).eval()
    net.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    S, V = cfg.force_image_size, cfg.llm_config["vocab_size"]
    text = chat.build_prompt([{"role": "user", "content": chat.expand_image_tokens("<image>\nSolve it.", [1],
                                                                                   cfg.num_image_token)}], tokenizer=tok)
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    g = torch.Generator().manual_seed(0)
    samples, used = [], 0
    while True:
        n = int(torch.randint(tokens // 16, tokens // 4 + 1, (1,), generator=g))
        if used + n > tokens:
            break
        samples.append({"prompt_ids": prompt, "response_ids": torch.randint(10, V, (n - len(prompt),),
                                                                            generator=g).tolist(),
                        "pixel_values": torch.randn(1, 3, S, S, generator=g), "advantage": 1.0})
        used += n
    size = micro_batch_size or len(samples)
    ac = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    cfg = grpo.Config(packing=packing, logprob_chunk_size=1024)

    def step():
        with ac:
            for i in range(0, len(samples), size):
                logp, _, mask = logprobs.sequence_logprobs(net, samples[i:i + size], 0, S, cfg, True)
                (logp.sum() / mask.sum()).backward()
        net.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, reps, sync)
    counts = model.parameter_counts(net)
    D, L = cfg.llm_config["hidden_size"], cfg.llm_config["num_hidden_layers"]
    n_llm = counts["llm"] - V * D   # lm_head included as a matmul, input embedding excluded
    vit_tokens = (S // cfg.vision_config.patch_size) ** 2 + 1
    lengths = [len(s["prompt_ids"]) + len(s["response_ids"]) for s in samples]
    flops = 6 * n_llm * used + 6 * L * D * sum(n * n for n in lengths) + \
        6 * (counts["vision"] + counts["connector"]) * len(samples) * vit_tokens
    tflops = flops / seconds / 1e12
    row = {"shape": Path(shape).name, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
           "batches": "packed" if packing else f"padded x{size}", "sequences": len(samples), "tokens": used,
           "seconds": round(seconds, 4), "tokens_per_s": round(used / seconds), "tflops": round(tflops, 2),
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if dev.type == "cuda" else None}
    row.update({f"mfu_vs_{k}": round(tflops / v, 4) for k, v in PEAK_TFLOPS.items()})
    return [row]


def print_rows(rows):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r.get(k, ''):.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys))


@dataclass
class Args:
    device: str = "cpu"
    threads: int = 1
    reps: int = 3
    budget_grpo: int = 2048
    budget_sft: int = 4096
    shape: str = ""          # model config for the MFU rows (e.g. config/internvl3-1b.json)
    tokens: int = 16384
    json: str = ""           # also write the rows here


def main():
    args = configurator.parse_config(Args)
    torch.set_num_threads(args.threads)
    if args.shape:
        rows = mfu_rows(args.shape, args.tokens, args.device, args.reps, packing=True) + \
            mfu_rows(args.shape, args.tokens, args.device, args.reps, packing=False, micro_batch_size=4)
        print(f"forward+backward of logprobs.sequence_logprobs, {args.tokens} ragged tokens, {args.device}")
    else:
        rows = demo_rows(args.reps, args.budget_grpo, args.budget_sft, args.device)
        print(f"demo-scale micro-batches, tiny model, {args.device}, {torch.get_num_threads()} thread(s), "
              f"median of {args.reps} forward+backward passes over one step's micro-batches")
    print_rows(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
