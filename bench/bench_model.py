"""
Built-in sampler throughput vs a no-cache baseline measured in the same run, plus forward+backward tokens/s of the
training loss as sft.py / grpo.py compute it (hidden states, then logprobs.py's chunked log-probs: the [B,T,V] fp32
logits never exist; with them, batch 64 at the 1B shape ran out of 139 GiB on an H200).
  python bench/bench_model.py [--batch=16] [--new_tokens=64] [--config=tiny|internvl3-1b] [--device=cpu|cuda]
On a GPU, --config=internvl3-1b builds an InternVL3-1B-shaped model with random weights in bf16.
"""
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import chat
import configurator
import model as M
import decode
from logprobs import token_logprobs_and_entropy


@dataclass
class Args:
    batch: int = 16
    new_tokens: int = 64
    config: str = "tiny"     # tiny, or NAME for config/NAME.json (internvl3-1b)
    device: str = ""         # "" = cuda when there is one, else cpu


args = configurator.parse_config(Args)
batch, new_tokens = args.batch, args.new_tokens
device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
dtype = torch.bfloat16 if device == "cuda" else torch.float32
tok = chat.build_tiny_tokenizer()
if args.config == "tiny":
    cfg = M.tiny_config(vocab_size=len(tok))
else:
    cfg = M.ModelConfig.from_json(Path(__file__).resolve().parents[1] / "config" / f"{args.config}.json")
    cfg.dynamic_image_size = False
torch.manual_seed(0)
model = M.build_model(cfg, dtype=dtype, device=device).eval()
model.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
S = cfg.force_image_size
text = chat.build_prompt([{"role": "user", "content": chat.expand_image_tokens("<image>\nDescribe the image.", [1],
                                                                               cfg.num_image_token)}], tokenizer=tok)
prompt = tok(text, add_special_tokens=False)["input_ids"]
pv = torch.randn(batch, 3, S, S, device=device, dtype=dtype)
print(f"{args.config}: {sum(M.parameter_counts(model).values()) / 1e6:.1f}M params, batch {batch}, "
      f"prompt {len(prompt)} tokens, {new_tokens} new tokens, {device} {dtype}")


def sync():
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    fn()  # warm-up
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def kv_cache():
    decode.generate(model, [prompt] * batch, pixel_values=pv, max_new_tokens=new_tokens, temperature=0)


@torch.no_grad()
def no_cache():  # the baseline: re-encode prompt + all generated tokens at every step
    ids = torch.tensor([prompt] * batch, device=device)
    for _ in range(new_tokens):
        nxt = model(ids, pixel_values=pv)[:, -1].argmax(-1)
        ids = torch.cat([ids, nxt[:, None]], 1)


t_cache, t_base = timed(kv_cache), timed(no_cache)
n = batch * new_tokens
print(f"generate (KV cache): {n / t_cache:9.1f} tok/s  ({t_cache:.2f} s)")
print(f"no-cache baseline:   {n / t_base:9.1f} tok/s  ({t_base:.2f} s)")
print(f"speed-up: {t_base / t_cache:.2f}x")

model.train()
ids = torch.tensor([prompt + prompt[-8:] * 8] * batch, device=device)
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()


def fwd_bwd():  # next-token log-likelihood of ids, [B*(T-1)] log-probs in chunks of 1024 rows
    hidden = model(ids, pixel_values=pv, return_hidden=True)[:, :-1].flatten(0, 1)   # [B*(T-1), D]
    logp, _ = token_logprobs_and_entropy(hidden, model.language_model.lm_head.weight, ids[:, 1:].flatten(),
                                         chunk_size=1024, with_grad=True)
    logp.mean().backward()


t = timed(fwd_bwd)
print(f"forward+backward: {ids.numel() / t:9.1f} tok/s ({ids.shape[0]}x{ids.shape[1]} tokens, {t:.2f} s)")
if device == "cuda":
    print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
