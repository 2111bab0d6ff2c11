"""
First contact with a GPU (issue 11): one command, at most ~8 minutes on one H100/H200, that prints a small table.
  1. sampler  the built-in sampler (decode.generate) at batch 64, InternVL3-1B shape: decode tokens/s with bf16
              weights (what one-GPU GRPO samples from) vs fp32 weights under autocast (the baseline, same run), and
              its share of the HBM-bandwidth bound (bf16 LLM weights + KV cache read once per decode step)
  2. train    grpo.py's training forward+backward (logprobs.sequence_logprobs: autocast bf16 over fp32 weights, chunked
              log-probs), tokens/s and MFU against the dense bf16 peak
  3. entropy  logprobs.py's chunked log-prob/entropy with backward vs a naive log_softmax: values, gradients, memory
  4. grpo     a GRPO step end to end (grpo.main, rollout_backend="builtin", rewards.py, 16 prompts x 8 rollouts x
              512 tokens): rollout / reward / train seconds and tokens/s, on its second step
  5. vllm     the same step with rollout_backend="vllm" (engine start, sleep, wake + weight push); skipped, with
              the reason, where vllm does not import or there is no GPU

Every timed figure is measured after an untimed run at the exact same shapes (the built-in sampler's static
cache is prompt + max_new_tokens wide rounded up to a bucket, each bucket its own compiled CUDA-graph step), and
the frames torch.compile compiled while timing are counted (dynamo's counters); a row with any is FAILED.

    python bench/gpu_check.py [--out=gpu_check.json]
    python bench/gpu_check.py --device=cpu --tiny        # smoke run of the same code on the tiny model (tests)

Needs requirements.txt and torch only; random weights, images and records written to a temporary directory
(a GPU machine without network). GPU rows print "n/a" for figures a CPU cannot give.
"""
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch._dynamo.utils import counters as dynamo_counters

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("WANDB_MODE", "disabled")
import chat
import configurator
import grpo
import logprobs
import model as M
import rewards
import decode
import synthetic
import train_utils as tu


@dataclass
class Args:
    tiny: bool = False       # the tiny model: a smoke run of the same code (tests)
    device: str = ""         # "" = cuda when there is one, else cpu
    out: str = ""            # also write the table as JSON here


args = configurator.parse_config(Args)
TINY = args.tiny
DEVICE = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
CUDA = DEVICE.startswith("cuda")
NAME = torch.cuda.get_device_name() if CUDA else "cpu"
# dense bf16 peak FLOP/s and HBM bandwidth (vendor datasheets, SXM parts); an unknown device gives n/a
PEAK_FLOPS = next((v for k, v in {"H200": 989e12, "H100": 989e12, "A100": 312e12}.items() if k in NAME), None)
HBM_BYTES_S = next((v for k, v in {"H200": 4.8e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100": 2.04e12}.items()
                    if k in NAME), None)
SIZES = dict(batch=4, new_tokens=8, train_b=1, train_t=64, ent=(64, 512, 32), prompts=2, rollouts=2, resp=8,
             records=4) if TINY else \
    dict(batch=64, new_tokens=256, train_b=4, train_t=4096, ent=(4096, 151674, 5120), prompts=16, rollouts=8,
         resp=512, records=32)
rows = []   # (check, figure, value)


def sync():
    if CUDA:
        torch.cuda.synchronize()


def dynamo_compiles():
    """Frames torch.compile has compiled so far in this process, recompiles included: torch 2.13 counts every
    frame dynamo converts in counters["frames"]["total"] (torch/_dynamo/convert_frame.py:2317; the counters are
    torch/_dynamo/utils.py:177). A difference across a timed region is the compiles that landed inside it."""
    return dynamo_counters["frames"]["total"]


class RecompiledWhileTimed(RuntimeError):
    pass


def no_compiles_while_timed(check, compiles):
    """The row's compile count; a compile inside the timing makes its figures wrong, so the row fails."""
    rows.append((check, "torch.compile frames compiled while timed", str(compiles)))
    if compiles:
        raise RecompiledWhileTimed(f"{compiles} frame(s) compiled inside the timed region: the figures above "
                                   f"include compile time")


def decode_s_per_step(net, prompt, pixel_values, batch, new_tokens, ctx=contextlib.nullcontext, static_cache=None,
                      compile_decode="auto"):
    """Seconds per decode step of decode.generate: (t(new_tokens) - t(1 token)) / (new_tokens - 1), so the
    prefill cancels (up to its attention over a cache new_tokens - 1 columns wider). Both timed calls first run
    once untimed at their exact shapes: the static cache is prompt + n wide and each width is its own compiled
    step. static_cache, compile_decode: generate's. -> (seconds per step, frames compiled
    while timed)."""
    device = next(net.parameters()).device

    def seconds(n):
        sync()
        t = time.perf_counter()
        with ctx():
            decode.generate(net, [prompt] * batch, pixel_values=pixel_values, max_new_tokens=n, temperature=1.0,
                              generator=torch.Generator(device).manual_seed(0), static_cache=static_cache,
                              compile_decode=compile_decode)
        sync()
        return time.perf_counter() - t

    for n in (1, new_tokens):   # warm-up at the timed shapes
        seconds(n)
    before = dynamo_compiles()
    one, many = seconds(1), seconds(new_tokens)
    return (many - one) / (new_tokens - 1), dynamo_compiles() - before


def model_config(vocab_size=None):
    if TINY:
        return M.tiny_config(vocab_size=vocab_size or 1024)
    d = json.loads((REPO / "config" / "internvl3-1b.json").read_text())
    if vocab_size:
        d["llm_config"]["vocab_size"] = vocab_size
    cfg = M.ModelConfig.from_json(d)
    cfg.dynamic_image_size = False   # one tile per image
    return cfg


def prompt_ids(tok, cfg):
    user = chat.expand_image_tokens("<image>\nSolve the problem.", [1], cfg.num_image_token)
    text = chat.build_prompt([{"role": "user", "content": user}], tokenizer=tok)
    return tok(text, add_special_tokens=False)["input_ids"]


def check_sampler(tok):
    cfg, B, N = model_config(), SIZES["batch"], SIZES["new_tokens"]
    prompt, S = prompt_ids(tok, cfg), cfg.force_image_size
    torch.manual_seed(0)
    m32 = M.build_model(cfg, device=DEVICE).eval()
    m32.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    pv = torch.randn(B, 3, S, S, device=DEVICE)
    autocast = lambda: torch.autocast(DEVICE.split(":")[0], dtype=torch.bfloat16)
    base, compiles = decode_s_per_step(m32, prompt, pv, B, N, autocast)
    del m32
    torch.manual_seed(0)
    m16 = M.build_model(cfg, dtype=torch.bfloat16, device=DEVICE).eval()
    m16.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    step, more = decode_s_per_step(m16, prompt, pv.to(torch.bfloat16), B, N)
    # bytes read per decode step: the bf16 LLM weights but the input embedding (B rows only) + the KV cache
    llm = cfg.llm_config
    weights = 2 * (M.parameter_counts(m16)["llm"] - llm["vocab_size"] * llm["hidden_size"])
    head_dim = llm.get("head_dim") or llm["hidden_size"] // llm["num_attention_heads"]
    kv = 2 * 2 * llm["num_hidden_layers"] * llm["num_key_value_heads"] * head_dim * B * (len(prompt) + N / 2)
    bound = B * HBM_BYTES_S / (weights + kv) if HBM_BYTES_S else None
    rows.extend([("sampler", f"decode tok/s, batch {B}, bf16 weights", f"{B / step:,.0f} ({step * 1e3:.1f} ms/step)"),
                 ("sampler", "decode tok/s, fp32 weights + autocast (baseline)",
                  f"{B / base:,.0f} ({base * 1e3:.1f} ms/step); bf16 {base / step:.2f}x faster"),
                 ("sampler", "share of the HBM-bandwidth bound",
                  f"{B / step / bound:.1%} of {bound:,.0f} tok/s" if bound else "n/a (no HBM figure)")])
    no_compiles_while_timed("sampler", compiles + more)


def check_train(tok):
    cfg, B, T = model_config(), SIZES["train_b"], SIZES["train_t"]
    torch.manual_seed(0)
    net = M.build_model(cfg, device=DEVICE).eval()
    net.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    prompt, S, V = prompt_ids(tok, cfg), cfg.force_image_size, cfg.llm_config["vocab_size"]
    g = torch.Generator().manual_seed(0)
    samples = [{"prompt_ids": prompt, "response_ids": torch.randint(10, V, (T - len(prompt),), generator=g).tolist(),
                "pixel_values": torch.randn(1, 3, S, S)} for _ in range(B)]
    chunked = grpo.Config(logprob_chunk_size=1024)

    def step():
        with torch.autocast(DEVICE.split(":")[0], dtype=torch.bfloat16, enabled=CUDA):
            logp, _, mask = logprobs.sequence_logprobs(net, samples, tok.pad_token_id, S, chunked, with_grad=True)
            (logp.sum() / mask.sum()).backward()
        net.zero_grad(set_to_none=True)

    step()
    sync()
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    before = dynamo_compiles()
    t = time.perf_counter()
    for _ in range(3):
        step()
    sync()
    dt = (time.perf_counter() - t) / 3
    compiles = dynamo_compiles() - before
    counts, llm = M.parameter_counts(net), cfg.llm_config
    D, L = llm["hidden_size"], llm["num_hidden_layers"]
    vit_tokens = (S // cfg.vision_config.patch_size) ** 2 + 1
    # 6 N per token (the input embedding is a lookup), causal attention 6 L D T^2 per sequence, the ViT on its tokens
    flops = 6 * (counts["llm"] - V * D) * B * T + 6 * L * D * T * T * B + \
        6 * (counts["vision"] + counts["connector"]) * B * vit_tokens
    peak = f", peak memory {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB" if CUDA else ""
    rows.extend([("train", f"forward+backward {B}x{T} tokens", f"{B * T / dt:,.0f} tok/s ({dt:.2f} s){peak}"),
                 ("train", "MFU (dense bf16 peak)",
                  f"{flops / dt / PEAK_FLOPS:.1%} ({flops / dt / 1e12:.1f} TFLOP/s)" if PEAK_FLOPS else "n/a")])
    no_compiles_while_timed("train", compiles)


def check_entropy():
    T, V, D = SIZES["ent"]
    g = torch.Generator(DEVICE).manual_seed(0)
    dtype = torch.bfloat16 if CUDA else torch.float32
    h0 = torch.randn(T, D, device=DEVICE, dtype=dtype, generator=g)
    w0 = (torch.randn(V, D, device=DEVICE, generator=g) * (3.0 / D ** 0.5)).to(dtype)
    targets = torch.randint(0, V, (T,), device=DEVICE, generator=g)

    def naive(h, w):
        logp_all = torch.log_softmax(F.linear(h, w).float(), -1)
        return logp_all.gather(-1, targets[:, None])[:, 0], -(logp_all.exp() * logp_all).sum(-1)

    def chunked(h, w):
        return logprobs.token_logprobs_and_entropy(h, w, targets, chunk_size=1024, with_grad=True)

    res = {}
    for name, fn in (("naive", naive), ("chunked", chunked)):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        lp, ent = fn(h, w)   # warm-up at the timed shape (kernel selection, allocator)
        (lp.sum() + 0.1 * ent.sum()).backward()
        h.grad = w.grad = None
        del lp, ent
        sync()
        if CUDA:
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if CUDA else 0
        t = time.perf_counter()
        lp, ent = fn(h, w)
        (lp.sum() + 0.1 * ent.sum()).backward()
        sync()
        extra = (torch.cuda.max_memory_allocated() - base) / 2 ** 30 if CUDA else float("nan")
        res[name] = (time.perf_counter() - t, extra, lp.detach().float(), ent.detach().float(), h.grad.float(),
                     w.grad.float())
    (ta, ma, *a), (tb, mb, *b) = res["naive"], res["chunked"]
    rel = lambda x, y: float((x - y).norm() / y.norm())
    rows.extend([("entropy", f"T={T} V={V} D={D}: chunked vs naive time, extra memory",
                  f"{tb:.2f} vs {ta:.2f} s, {mb:.2f} vs {ma:.2f} GiB"),
                 ("entropy", "max abs diff log-prob, entropy",
                  f"{(a[0] - b[0]).abs().max():.2e}, {(a[1] - b[1]).abs().max():.2e}"),
                 ("entropy", "relative error grad hidden, grad weight",
                  f"{rel(b[2], a[2]):.2e}, {rel(b[3], a[3]):.2e}")])


STAND_IN_CONFIG = '''"""Stand-in for a released checkpoint's configuration_internvl_chat.py (bench/gpu_check.py)."""
from transformers import AutoConfig, PretrainedConfig


class InternVLChatConfig(PretrainedConfig):
    model_type = "internvl_chat"
    is_composition = True

    def __init__(self, vision_config=None, llm_config=None, **kwargs):
        super().__init__(**kwargs)
        self.vision_config = PretrainedConfig(**(vision_config or {}))
        llm_config = dict(llm_config or {"model_type": "qwen2"})
        self.llm_config = AutoConfig.for_model(llm_config.pop("model_type"), **llm_config)
'''


def write_workspace(root):
    """A checkpoint (random weights; tokenizer fit on synthetic.py's corpus, vocab = its size; auto_map and a
    stand-in config module, as a released checkpoint has) and records with one image each. Every record asks
    the same question (one tile per image): every step's prompts have the same length, so the timed second
    step decodes at the shapes the first one compiled."""
    tok = chat.build_tiny_tokenizer(synthetic.tokenizer_corpus(n=400), vocab_size=1024 if TINY else 8192)
    cfg = model_config(vocab_size=len(tok))
    cfg.llm_config.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    cfg.extra["auto_map"] = {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig"}
    torch.manual_seed(0)
    M.save_model(root / "ckpt", M.build_model(cfg).state_dict(), cfg, tok)
    (root / "ckpt" / "configuration_internvl_chat.py").write_text(STAND_IN_CONFIG)
    with open(root / "records.jsonl", "w") as f:
        for i in range(SIZES["records"]):
            Image.new("RGB", (96 + 8 * i, 80), (40 * i % 256, 90, 200)).save(root / f"im{i}.png")
            f.write(json.dumps({"id": f"q{i}", "images": [f"im{i}.png"], "question": "What is 2 + 3?",
                                "answer": "5"}) + "\n")
    return root / "ckpt", root / "records.jsonl", len(tok)


def grpo_config(ckpt, records, out, **overrides):
    return grpo.Config(init_from=str(ckpt), data=str(records), out_dir=str(out), steps=2, save_every=1000,
                       prompts_per_step=SIZES["prompts"], rollouts_per_prompt=SIZES["rollouts"],
                       response_length_schedule=[(0, SIZES["resp"])], max_tiles=1, max_prompt_tokens=1024,
                       micro_batch_size=2 if TINY else 8, reward_workers=0 if TINY else 2,
                       rollout_batch_size=SIZES["prompts"] * SIZES["rollouts"], **overrides)


def run_grpo(label, cfg, sampler=None):
    """grpo.main's two steps; the figures are the second step's. Its reward function is grpo.main's default
    (rewards.score_batch, eqs. 1-3) that also reads the compile count when each step's rollouts end: the
    difference between the two reads covers the first step's training and the whole timed second rollout."""
    reward_cfg = rewards.RewardConfig(accuracy_weight=cfg.accuracy_weight, think_mode=cfg.mode == "think",
                                      verifier_url=cfg.verifier_url, num_workers=cfg.reward_workers)
    marks = []

    def reward_fn(texts, records):
        marks.append(dynamo_compiles())
        return rewards.score_batch(texts, [r.answer for r in records], [r.options for r in records],
                                   [r.question for r in records], reward_cfg)

    m = grpo.main(cfg, sampler=sampler, reward_fn=reward_fn)[-1]
    tokens = m["perf/tokens_per_s"] * m["time/step"]
    rows.append((label, "step s: rollout / reward / train / sync",
                 f"{m['time/step']:.1f}: {m['time/rollout']:.1f} / {m['time/reward']:.2f} / {m['time/train']:.1f} / "
                 f"{m['time/sync']:.2f}"))
    rows.append((label, "tokens/s (prompt + response), response length mean",
                 f"{m['perf/tokens_per_s']:,.0f} ({tokens:,.0f} tokens), {m['response/len_mean']:.0f}"))
    no_compiles_while_timed(label, marks[-1] - marks[-2])


def check_grpo(root, vocab):
    out = root / "out_builtin"
    run_grpo(f"grpo builtin, vocab {vocab}", grpo_config(root / "ckpt", root / "records.jsonl", out,
                                                          rollout_backend="builtin"))
    shutil.rmtree(out)   # its final checkpoint: weights + AdamW, ~11 GB at the 1B shape


def check_vllm(root):
    try:
        import vllm  # noqa: F401   (requirements-gpu.txt)
    except ImportError as e:
        rows.append(("vllm", "rollout_backend=vllm", f"skipped: vllm does not import ({e})"))
        return
    if not CUDA:
        rows.append(("vllm", "rollout_backend=vllm", "skipped: no GPU"))
        return
    ckpt = root / "ckpt"
    cfg = grpo_config(ckpt, root / "records.jsonl", root / "out_vllm", rollout_backend="vllm",
                      vllm_gpu_memory_utilization=0.3)
    t = time.perf_counter()   # one process: the engine runs in it, as grpo.py without torchrun starts it
    rollout = grpo.rollout_sampler(cfg, tu.setup_distributed(), None, chat.load_tokenizer(ckpt), ckpt)
    start = time.perf_counter() - t
    slept = []
    sleep = rollout.sleep
    rollout.sleep = lambda: (slept.append(time.perf_counter()), sleep(), slept.append(time.perf_counter()))
    rows.append(("vllm", "engine start", f"{start:.1f} s"))
    run_grpo("grpo vllm (sync = wake + weight push)", cfg, sampler=rollout)
    rows.append(("vllm", "sleep (level 1)", f"{slept[-1] - slept[-2]:.2f} s"))


def main():
    print(f"gpu_check on {NAME} ({DEVICE}), torch {torch.__version__}, {'tiny' if TINY else 'InternVL3-1B shape'}")
    tok = chat.build_tiny_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, _, vocab = write_workspace(root)   # the GRPO rows' checkpoint and records
        checks = [("sampler", lambda: check_sampler(tok)), ("train", lambda: check_train(tok)),
                  ("entropy", check_entropy), ("grpo", lambda: check_grpo(root, vocab)),
                  ("vllm", lambda: check_vllm(root))]
        failed = 0
        for name, fn in checks:
            try:
                t = time.perf_counter()
                fn()
                print(f"  {name}: done in {time.perf_counter() - t:.0f} s", flush=True)
            except Exception as e:   # one broken check must not hide the others' figures
                traceback.print_exc()
                rows.append((name, "FAILED", f"{type(e).__name__}: {str(e)[:200]}"))
                failed += 1
            if CUDA:
                torch.cuda.empty_cache()
    width = max(len(r[1]) for r in rows)
    print(f"\n| check | figure | {NAME} |\n|---|---|---|")
    for check, figure, value in rows:
        print(f"| {check} | {figure:<{width}} | {value} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": NAME, "tiny": TINY, "rows": rows}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
