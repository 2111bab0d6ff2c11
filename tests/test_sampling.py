"""Tests for sampling.py: the KV-cache decoder, token ids, backend choice, engine arguments, the built-in sampler
on a tiny model and the vLLM sampler against a fake vllm module."""
import json
import math
import os
import random
import sys
import types
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pytest
import torch
from PIL import Image

import chat
import data
import decode
import model
import sampling
import train_utils as tu
from test_model import VIT_6B_STYLE, image_prompt, random_pixels, tok  # noqa: F401   tok is a fixture
from test_model import tiny as tiny_net
from test_train_utils import SINGLE, torchrun

torch.set_num_threads(1)   # shared cores: tiny matmuls on many threads spin


@pytest.fixture(scope="module")
def tiny():
    tok = chat.build_tiny_tokenizer()
    torch.manual_seed(0)
    net = model.build_model(model.tiny_config(vocab_size=len(tok))).eval()
    net.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    text = chat.build_prompt([{"role": "user", "content": "How many?"}], tokenizer=tok)
    image_text = chat.build_prompt([{"role": "user", "content": "<image>\nHow many?"}], tokenizer=tok)
    tiles = data.image_to_pixel_values(Image.new("RGB", (60, 40), (200, 10, 10)), net.config)   # [n,3,S,S]
    expanded = chat.expand_image_tokens(image_text, [tiles.shape[0]], net.config.num_image_token)
    prompts = [{"input_ids": tok.encode(text, add_special_tokens=False), "pixel_values": None},
               {"input_ids": tok.encode(expanded, add_special_tokens=False), "pixel_values": tiles}]
    return types.SimpleNamespace(tok=tok, net=net, prompts=prompts, tiles=tiles.shape[0])


# -----------------------------------------------------------------------------
# the built-in KV-cache decoder: generate (DynamicCache), decode_static (StaticCache)


@pytest.mark.parametrize("overrides", [{}, VIT_6B_STYLE])
def test_kv_cache_generation_equals_no_cache_greedy(tok, overrides):
    net = tiny_net(tok, **overrides)
    cfg = net.config
    prompts = [image_prompt(tok, cfg, 1, "How many?"), image_prompt(tok, cfg, 2, "Sum the numbers in both images, then")]
    pv = random_pixels(3, cfg)
    out = decode.generate(net, prompts, pixel_values=pv, max_new_tokens=12, temperature=0,
                            pad_token_id=tok.pad_token_id)
    tiles = [pv[:1], pv[1:]]
    for prompt, tile, res in zip(prompts, tiles, out):
        ids = list(prompt)
        for _ in range(12):  # no cache: re-encode everything each step
            logits = net(torch.tensor([ids]), pixel_values=tile)[0, -1]
            ids.append(int(logits.argmax()))
        assert res["token_ids"] == ids[len(prompt):]
        assert res["finish_reason"] == "length" and len(res["logprobs"]) == 12


@pytest.mark.parametrize("overrides", [{}, VIT_6B_STYLE])
def test_static_cache_decode_equals_dynamic_decode_greedy(tok, overrides):
    """The GPU decode loop (StaticCache, finished rows kept in the batch under a mask) gives today's tokens on
    multi-image batches of different prompt lengths, rows stopping at different steps included."""
    net = tiny_net(tok, **overrides)
    cfg = net.config
    prompts = [image_prompt(tok, cfg, 1, "How many?"), image_prompt(tok, cfg, 2, "Sum the numbers in both images"),
               image_prompt(tok, cfg, 1, "Count"), image_prompt(tok, cfg, 3, "Which of the three images")]
    pv = random_pixels(7, cfg)
    kwargs = dict(pixel_values=pv, max_new_tokens=20, temperature=0, pad_token_id=tok.pad_token_id)
    dynamic = decode.generate(net, prompts, static_cache=False, **kwargs)
    static = decode.generate(net, prompts, static_cache=True, compile_decode="off", **kwargs)
    assert [r["token_ids"] for r in static] == [r["token_ids"] for r in dynamic]
    for a, b in zip(static, dynamic):
        assert a["finish_reason"] == b["finish_reason"] == "length"
        torch.testing.assert_close(torch.tensor(a["logprobs"]), torch.tensor(b["logprobs"]), rtol=1e-4, atol=1e-4)
    # stop tokens: rows end at different steps (one at its first token), the others go on unchanged
    stops = [dynamic[0]["token_ids"][0], dynamic[1]["token_ids"][5]]
    dynamic = decode.generate(net, prompts, static_cache=False, stop_token_ids=stops, **kwargs)
    static = decode.generate(net, prompts, static_cache=True, compile_decode="off", stop_token_ids=stops, **kwargs)
    assert [(r["token_ids"], r["finish_reason"]) for r in static] == \
        [(r["token_ids"], r["finish_reason"]) for r in dynamic]
    assert len(static[0]["token_ids"]) == 1 and static[0]["finish_reason"] == "stop"
    assert len({len(r["token_ids"]) for r in static}) > 1


def test_compiled_cpu_decode_equals_eager_and_reuses_its_graph(tok, monkeypatch):
    """The compiled CPU step (inductor, for real) gives the eager loop's tokens at T = 0 on a padded batch of 5
    rows with one to three images (bucketed to 8 rows: 3 dummy rows). A second call with other prompt widths
    lands in the same (rows, columns) bucket: dynamo compiles nothing new and the StaticCache is the same
    object, so on cuda its CUDA graphs replay instead of being recorded again."""
    monkeypatch.setattr(decode, "_compile_failed", [])
    net = tiny_net(tok, llm={"num_hidden_layers": 1})   # one block: a few seconds of inductor
    cfg = net.config
    questions = ["How many?", "Sum the numbers in both images", "Count", "Which of the three images", "Add"]
    n_images = [1, 2, 1, 3, 1]
    kwargs = dict(max_new_tokens=20, temperature=0, pad_token_id=tok.pad_token_id)
    counters = torch._dynamo.utils.counters["stats"]
    for extra in ("", " please"):
        prompts = [image_prompt(tok, cfg, k, q + extra) for k, q in zip(n_images, questions)]
        pv = random_pixels(sum(n_images), cfg)
        eager = decode.generate(net, prompts, pixel_values=pv, static_cache=False, **kwargs)
        graphs = counters["unique_graphs"]
        compiled = decode.generate(net, prompts, pixel_values=pv, compile_decode="on", **kwargs)
        assert [r["token_ids"] for r in compiled] == [r["token_ids"] for r in eager]
        for a, b in zip(compiled, eager):
            torch.testing.assert_close(torch.tensor(a["logprobs"]), torch.tensor(b["logprobs"]), rtol=1e-4,
                                       atol=1e-4)
        if extra:   # the second call: no compile, the first call's cache
            assert counters["unique_graphs"] == graphs and decode._decode_state[net]["caches"] == caches
            # sampled at T = 1 from per-row seeds: the compiled loop draws the eager loop's tokens too
            seeded = dict(kwargs, temperature=1.0, seeds=[sampling.item_seed(0, q) for q in questions])
            assert [r["token_ids"] for r in decode.generate(net, prompts, pixel_values=pv, compile_decode="on",
                                                              **seeded)] == \
                [r["token_ids"] for r in decode.generate(net, prompts, pixel_values=pv, static_cache=False, **seeded)]
        caches = dict(decode._decode_state[net]["caches"])
    assert not decode._compile_failed and len({len(p) for p in prompts}) > 1


def test_shared_prefix_and_compiled_compaction_give_the_eager_tokens(tok, monkeypatch):
    """copies: each prompt's prefix (its image tiles) encoded once for its rows gives the tokens of the rows
    encoded one by one, in the eager loop and the static one. The compiled CPU loop compacts: at its 16-step check
    the rows still decoding move to a smaller bucket's StaticCache (5 rows in a bucket of 8 -> 2 in one of 2),
    with the eager loop's tokens and finish reasons at T = 0."""
    monkeypatch.setattr(decode, "_compile_failed", [])
    net = tiny_net(tok, llm={"num_hidden_layers": 1})
    cfg = net.config
    prompts = [image_prompt(tok, cfg, 1, "How many?"), image_prompt(tok, cfg, 2, "Sum the numbers in both images")]
    pv = random_pixels(3, cfg)
    kwargs = dict(max_new_tokens=40, temperature=0, pad_token_id=tok.pad_token_id)
    one_by_one = decode.generate(net, [prompts[0]] * 3 + [prompts[1]] * 2, pixel_values=pv[[0, 0, 0, 1, 2, 1, 2]],
                                   static_cache=False, **kwargs)
    first, second = one_by_one[0]["token_ids"], one_by_one[3]["token_ids"]
    stop = [next(t for t in first[:8] if t not in second)]   # the first prompt's rows stop early, the others not
    kwargs.update(pixel_values=pv, copies=[3, 2], stop_token_ids=stop)
    eager = decode.generate(net, prompts, static_cache=False, **kwargs)
    static = decode.generate(net, prompts, static_cache=True, compile_decode="off", **kwargs)
    compiled = decode.generate(net, prompts, compile_decode="on", **kwargs)
    assert [r["token_ids"] for r in eager[3:]] == [second] * 2 and len(eager[0]["token_ids"]) <= 8
    for out in (static, compiled):
        assert [(r["token_ids"], r["finish_reason"]) for r in out] == \
            [(r["token_ids"], r["finish_reason"]) for r in eager]
        for a, b in zip(out, eager):
            torch.testing.assert_close(torch.tensor(a["logprobs"]), torch.tensor(b["logprobs"]), rtol=1e-4, atol=1e-4)
    assert {key[0] for key in decode._decode_state[net]["caches"]} == {8, 2} and not decode._compile_failed


def test_compile_failure_falls_back_to_eager_with_one_warning(tok, monkeypatch):
    """A backend that fails (an inductor/Triton error) costs one warning; the tokens are the eager loop's, and
    later calls decode eagerly without trying again."""
    monkeypatch.setattr(decode, "_compile_failed", [])
    tries = []

    def failing_backend(graph, example_inputs):
        tries.append(1)
        raise RuntimeError("no C++ compiler")

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **_: real_compile(fn, backend=failing_backend))
    torch._dynamo.reset()
    net = tiny_net(tok)
    prompts = [image_prompt(tok, net.config, 1, "How many?"), image_prompt(tok, net.config, 1, "Count")]
    kwargs = dict(pixel_values=random_pixels(2, net.config), max_new_tokens=6, temperature=0,
                  pad_token_id=tok.pad_token_id)
    eager = decode.generate(net, prompts, compile_decode="off", **kwargs)
    with pytest.warns(UserWarning, match="decoding eagerly") as warned:
        outs = [decode.generate(net, prompts, compile_decode="on", **kwargs) for _ in range(2)]
    assert len([w for w in warned if "decoding eagerly" in str(w.message)]) == 1 and len(tries) == 1
    assert [r["token_ids"] for r in outs[0]] == [r["token_ids"] for r in outs[1]] == \
        [r["token_ids"] for r in eager]
    torch._dynamo.reset()


def test_fsdp_model_decodes_without_compile(tok, monkeypatch):
    """An FSDP2-wrapped model (here one rank) is never compiled: dynamo would break at each block's hooks and
    recompile per layer. compile_decode="on" decodes it with the eager static loop, as "off" does."""
    monkeypatch.setattr(decode, "_compile_failed", [])
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **_: compiled.append(fn) or fn)
    net = tiny_net(tok)
    prompts = [image_prompt(tok, net.config, 1, "How many?"), image_prompt(tok, net.config, 1, "Count")] * 4
    kwargs = dict(pixel_values=random_pixels(8, net.config), max_new_tokens=4, temperature=0,
                  pad_token_id=tok.pad_token_id)
    try:
        tu.wrap_fsdp(net, SINGLE, param_dtype=torch.bfloat16)
        assert not decode.compiles_decode_step(net, "on")
        on = decode.generate(net, prompts, compile_decode="on", **kwargs)
        off = decode.generate(net, prompts, static_cache=True, compile_decode="off", **kwargs)
    finally:
        tu.cleanup_distributed()
    assert compiled == [] and on == off
    plain = tiny_net(tok)   # the same model unwrapped: compiled when asked, eager on CPU by default
    assert decode.compiles_decode_step(plain, "on") and not decode.compiles_decode_step(plain, "auto")
    with pytest.raises(ValueError, match="compile_decode"):
        decode.compiles_decode_step(net, "yes")


def test_generation_stops_bans_and_returns_logprobs(tok):
    net = tiny_net(tok)
    prompts = [image_prompt(tok, net.config)] * 4
    pv = random_pixels(4, net.config)
    g = torch.Generator().manual_seed(0)
    greedy = decode.generate(net, prompts[:1], pixel_values=pv[:1], max_new_tokens=3, temperature=0)[0]["token_ids"]
    stop = greedy[1]
    out = decode.generate(net, prompts, pixel_values=pv, max_new_tokens=30, temperature=1.0, stop_token_ids=[stop],
                     banned_token_ids=[greedy[0]], generator=g)
    for r in out:
        assert greedy[0] not in r["token_ids"]
        if r["finish_reason"] == "stop":
            assert r["token_ids"][-1] == stop and stop not in r["token_ids"][:-1]
        else:
            assert len(r["token_ids"]) == 30
        assert all(lp <= 0 for lp in r["logprobs"])
    # log-probs are raw: the model's log-softmax over the whole vocabulary, the banned tokens included
    r = out[0]
    ids = torch.tensor([prompts[0] + r["token_ids"]])
    logits = net(ids, pixel_values=pv[:1])[0, len(prompts[0]) - 1:-1].float()
    ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(r["token_ids"])[:, None])[:, 0]
    assert torch.allclose(torch.tensor(r["logprobs"]), ref, atol=1e-4)


# -----------------------------------------------------------------------------
# per-row seeds: each row's own random stream (eval.py, reject.py)


def lowbias32(x):
    """C. Wellons' 32-bit hash on Python ints, the reference for row_uniforms' int64 pieces."""
    x ^= x >> 16
    x = x * 0x7FEB352D & 0xFFFFFFFF
    x ^= x >> 15
    x = x * 0x846CA68B & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_row_uniforms_are_the_32_bit_hash_of_seed_and_step_and_uniform():
    seeds = [0, 1, 12345, 2 ** 32 - 1, 2 ** 32, 2 ** 61 + 12345, sampling.item_seed(0, "MMMU", "validation_Art_1") + 4]
    for step in (0, 1, 7, 16383):
        want = [lowbias32(lowbias32(lowbias32(s & 0xFFFFFFFF ^ 0x9E3779B9) ^ s >> 32) ^ step) / 2 ** 32 for s in seeds]
        assert decode.row_uniforms(torch.tensor(seeds), step).tolist() == want
    # one row over 5000 steps, 5000 rows at one step: 10 bins, chi-square below its 0.999 quantile (9 dof: 27.9)
    for u in (decode.row_uniforms(torch.full((5000,), 7), torch.arange(5000)),
              decode.row_uniforms(torch.arange(5000), 3)):
        counts = torch.histc(u.float(), 10, 0, 1)
        assert ((counts - 500) ** 2 / 500).sum() < 27.9 and 0 <= u.min() and u.max() < 1
    assert sampling.item_seed(0, "a", "1") == sampling.item_seed(0, "a", "1") != sampling.item_seed(1, "a", "1")
    assert 0 <= sampling.item_seed(3, "b") < 2 ** 62


def test_seeded_draws_follow_the_processed_distribution():
    """Inverse-CDF draws at each row's uniform: the processed distribution's frequencies (chi-square below its
    0.999 quantile), never a banned or a top-p-cut token, and a row's token is the same in a batch of one."""
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]]).expand(4000, 5)
    banned = torch.tensor([False, False, False, False, True])
    uniforms = decode.row_uniforms(torch.arange(4000), 3)
    for temperature, top_p, kept, quantile in ((1.0, 1.0, 4, 16.27), (0.5, 0.9, 2, 10.83)):
        tokens, _ = decode.sample_next(logits, temperature, top_p, banned, None, uniforms)
        probs = (logits[0, :kept] / temperature).softmax(-1)   # top-p 0.9 at T = 0.5 keeps ids 0, 1 (.881, .119)
        counts = torch.bincount(tokens, minlength=5)
        assert counts[kept:].sum() == 0
        assert ((counts[:kept] - 4000 * probs) ** 2 / (4000 * probs)).sum() < quantile
        one, _ = decode.sample_next(logits[:1], temperature, top_p, banned, None, uniforms[17:18])
        assert one == tokens[17]


def test_per_row_seeds_give_each_row_its_tokens_in_any_batch_on_every_path(tok):
    """At T = 1: a row's tokens depend on its seed only, not on the rows beside it, their order, their images,
    when they stop, or the decode loop (dynamic / static cache). One shared generator (GRPO's) does not do that."""
    net = tiny_net(tok)
    questions = ["How many?", "Sum the numbers in both images", "Count", "Which of the three images"]
    prompts = [image_prompt(tok, net.config, 1, q) for q in questions]
    pv = random_pixels(4, net.config)
    seeds = [sampling.item_seed(0, q) for q in questions]
    kw = dict(max_new_tokens=24, temperature=1.0, pad_token_id=tok.pad_token_id)
    free = decode.generate(net, prompts, pixel_values=pv, seeds=seeds, static_cache=False, **kw)
    kw["stop_token_ids"] = [free[0]["token_ids"][2], free[2]["token_ids"][9]]   # rows end at different steps
    ids = lambda outs: [r["token_ids"] for r in outs]
    batch = ids(decode.generate(net, prompts, pixel_values=pv, seeds=seeds, static_cache=False, **kw))
    assert len({len(r) for r in batch}) > 1 and len(batch[1]) > 3
    alone = [ids(decode.generate(net, [p], pixel_values=pv[i:i + 1], seeds=[seeds[i]], static_cache=False, **kw))[0]
             for i, p in enumerate(prompts)]
    static = ids(decode.generate(net, prompts[::-1], pixel_values=pv.flip(0), seeds=seeds[::-1], static_cache=True,
                                   compile_decode="off", **kw))[::-1]
    assert alone == batch == static
    other = ids(decode.generate(net, prompts, pixel_values=pv, seeds=[s + 1 for s in seeds], **kw))
    assert all(a != b for a, b in zip(other, batch))   # control: other seeds, other tokens
    shared = lambda i: decode.generate(net, prompts[i:], pixel_values=pv[i:],
                                         generator=torch.Generator().manual_seed(0), **kw)[-1]["token_ids"]
    assert shared(0) != shared(3)   # the last row alone and behind three others: one stream gives other tokens


def test_builtin_sampler_seeds_sample_k_with_seed_plus_k_in_any_batch(tiny):
    """sample(..., seeds=[s per prompt]): the k-th sample of a prompt draws from s + k (vLLM's n children), the
    same with 2 or 64 rows per generate call."""
    sample = lambda batch_size, *args: sampling.BuiltinSampler(tiny.net, tiny.tok, temperature=1.0,
                                                               batch_size=batch_size).sample(*args)
    ids = lambda outs: [[o["token_ids"] for o in per_prompt] for per_prompt in outs]
    wide = ids(sample(64, tiny.prompts, [2, 3], 8, (), (), None, [10 ** 15, 77]))
    assert ids(sample(2, tiny.prompts, [2, 3], 8, (), (), None, [10 ** 15, 77])) == wide
    assert ids(sample(1, tiny.prompts[1:], 1, 8, (), (), None, [79])) == [[wide[1][2]]]
    assert len({tuple(t) for t in wide[1]}) == 3   # the samples of one prompt differ


# -----------------------------------------------------------------------------
# token ids, backend choice, engine arguments


def test_token_ids_and_strip_eos(tiny):
    ids = {t: tiny.tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>", "<img>", "</img>",
                                                           "<IMG_CONTEXT>")}
    assert sampling.stop_token_ids(tiny.tok) == sorted([ids["<|im_end|>"], ids["<|endoftext|>"]])
    assert tiny.tok.eos_token_id in sampling.stop_token_ids(tiny.tok)
    assert sampling.image_token_ids(tiny.tok) == [ids["<img>"], ids["</img>"], ids["<IMG_CONTEXT>"]]
    assert sampling.strip_eos("a</think>b<|im_end|>") == "a</think>b"
    assert sampling.strip_eos("b<|endoftext|>") == "b" and sampling.strip_eos("a<|im_end|>b") == "a<|im_end|>b"
    assert sampling.strip_eos("x<|im_end|><|im_end|>") == "x<|im_end|>"   # one end token, not all of them


def test_pick_backend(monkeypatch):
    assert sampling.pick_backend("builtin") == "builtin" and sampling.pick_backend("vllm") == "vllm"
    with pytest.raises(ValueError, match="'gpu': expected auto, vllm or builtin"):
        sampling.pick_backend("gpu")
    monkeypatch.setitem(sys.modules, "vllm", None)   # not installed: import fails
    assert sampling.pick_backend("auto") == "builtin"
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sampling.pick_backend("auto") == "builtin"   # vLLM without a GPU cannot run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sampling.pick_backend("auto") == "vllm"


def test_vllm_engine_kwargs(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sampling.vllm_engine_kwargs("/ckpt", 8, 0.9, 32768, 7, seed=3) == dict(
        model="/ckpt", tokenizer="/ckpt", trust_remote_code=True, dtype="bfloat16", tensor_parallel_size=8,
        max_model_len=32768, gpu_memory_utilization=0.9, seed=3, logprobs_mode="raw_logprobs",
        limit_mm_per_prompt={"image": 7, "video": 0}, enforce_eager=False)   # no dummy videos profiled
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # the CPU build (test tier): no compile
    assert sampling.vllm_engine_kwargs("/ckpt", 8, 0.9, 32768, 7)["enforce_eager"] is True
    kw = sampling.vllm_engine_kwargs(Path("/ckpt"), 2, 0.5, 9000, 0, max_tiles=6, dtype="float16",
                                     enable_sleep_mode=True)
    assert kw["model"] == "/ckpt" and kw["limit_mm_per_prompt"] == {"image": 1, "video": 0}   # vLLM wants >= 1
    # the tile cap is a config override: as mm_processor_kwargs it also reaches vLLM's video processor (TypeError)
    assert kw["hf_overrides"] == {"max_dynamic_patch": 6} and "mm_processor_kwargs" not in kw
    assert kw["dtype"] == "float16" and kw["enable_sleep_mode"] is True


def test_build_vllm_restores_the_callers_rngs(monkeypatch):

    class ReseedingLLM:   # what vLLM's worker does at init: set_random_seed(engine seed) on every global RNG
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            random.seed(kwargs["seed"]), np.random.seed(kwargs["seed"]), torch.manual_seed(kwargs["seed"])

    fake = types.ModuleType("vllm")
    fake.LLM = ReseedingLLM
    monkeypatch.setitem(sys.modules, "vllm", fake)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    llm = sampling.build_vllm(sampling.vllm_engine_kwargs("/ckpt", 1, 0.5, 64, 1, seed=7))
    after = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    assert after == (random.random(), np.random.rand(), torch.rand(1).item())   # as if no engine was built
    assert llm.kwargs["seed"] == 7

# -----------------------------------------------------------------------------
# the built-in sampler


def biased(net, bias):
    """lm_head + bias: makes chosen tokens near-certain, so a mask or a stop that failed would show."""
    return net.language_model.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)


def test_builtin_sampler_shapes_text_and_reproducibility(tiny):
    sampler = sampling.BuiltinSampler(tiny.net, tiny.tok, temperature=1.0, batch_size=2, seed=5)
    out = sampler.sample(tiny.prompts, [2, 3], max_tokens=5)
    assert [len(o) for o in out] == [2, 3]
    for o in out[0] + out[1]:
        assert o["num_tokens"] == len(o["token_ids"]) == len(o["logprobs"]) <= 5
        assert all(lp <= 0 for lp in o["logprobs"]) and o["finish_reason"] in ("stop", "length")
        assert o["text"] == sampling.strip_eos(tiny.tok.decode(o["token_ids"], skip_special_tokens=False))
    sampler.generator.manual_seed(11)
    first = sampler.sample(tiny.prompts, 2, max_tokens=5)
    sampler.generator.manual_seed(11)
    assert sampler.sample(tiny.prompts, 2, max_tokens=5) == first   # GRPO's exact resume reseeds per step


def test_sample_next_returns_raw_logprobs_at_any_temperature():
    """Sampled from the processed distribution, reported under the raw one (as vLLM's raw_logprobs)."""
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]])
    banned = torch.tensor([False, False, False, False, True])   # the most likely token is never sampled
    for seed in range(20):
        token, logprob = decode.sample_next(logits, 0.5, 0.9, banned, torch.Generator().manual_seed(seed))
        # by hand: logits/T = [4, 2, 1, -2, -inf]; softmax ~ [.858, .116, .043, .002, 0]; top-p 0.9 keeps ids 0, 1
        kept = torch.tensor([4.0, 2.0, -math.inf, -math.inf, -math.inf]).softmax(-1)
        expected = torch.multinomial(kept, 1, generator=torch.Generator().manual_seed(seed)).item()
        assert token.item() == expected
        raw = logits[0, expected] - logits[0].logsumexp(-1)   # log_softmax of the unprocessed logits
        assert abs(logprob.item() - raw.item()) < 1e-6
        assert abs(logprob.item() - kept[expected].log().item()) > 0.1   # not the processed log-prob
    token, logprob = decode.sample_next(logits, 0, 1.0, banned, None)   # greedy: the best unbanned token
    assert token.item() == 0 and abs(logprob.item() - (logits[0, 0] - logits[0].logsumexp(-1)).item()) < 1e-6


def test_builtin_sampler_logprobs_are_the_models_at_temperature_one(tiny):
    """At T = 0.7 and top-p 0.9 the reported log-probs equal a plain forward's log_softmax (what GRPO trains on)."""
    sampler = sampling.BuiltinSampler(tiny.net, tiny.tok, temperature=0.7, top_p=0.9, seed=3)
    out = sampler.sample(tiny.prompts[:1], 2, max_tokens=6)[0]
    prompt = tiny.prompts[0]["input_ids"]
    for o in out:
        ids = torch.tensor([prompt + o["token_ids"]])
        with torch.no_grad():
            logits = tiny.net(ids)[0, len(prompt) - 1:-1].float()   # [n, V]: the logits each token was drawn from
        targets = torch.tensor(o["token_ids"])[:, None]
        expected = torch.log_softmax(logits, -1).gather(-1, targets)[:, 0]
        torch.testing.assert_close(torch.tensor(o["logprobs"]), expected, atol=1e-4, rtol=1e-4)
        processed = torch.log_softmax(logits / 0.7, -1).gather(-1, targets)[:, 0]
        assert (torch.tensor(o["logprobs"]) - processed).abs().max() > 1e-3


def test_builtin_sampler_bans_and_stops(tiny):
    tok, vocab = tiny.tok, len(tiny.tok)
    think_end = tok.convert_tokens_to_ids(chat.THINK_END)
    sampler = sampling.BuiltinSampler(tiny.net, tok, temperature=1.0)
    bias = torch.zeros(vocab)
    bias[[7] + sampling.image_token_ids(tok)] = 30.0
    hook = biased(tiny.net, bias)
    try:
        free = sampler.sample(tiny.prompts[:1], 1, max_tokens=8)[0][0]["token_ids"]
        masked = sampler.sample(tiny.prompts, 2, max_tokens=8, banned_ids=[7])
    finally:
        hook.remove()
    assert free == [7] * 8   # unmasked, token 7 is all it says (the image tokens are always masked)
    tokens = [t for o in masked for s in o for t in s["token_ids"]]
    assert len(tokens) >= 8 and not set(tokens) & {7, *sampling.image_token_ids(tok)}

    bias = torch.zeros(vocab)
    bias[think_end] = 30.0
    hook = biased(tiny.net, bias)
    try:
        stopped = sampler.sample(tiny.prompts, 1, max_tokens=6, stop=[chat.THINK_END, "not one token"])
        running = sampler.sample(tiny.prompts[:1], 1, max_tokens=6)[0][0]
    finally:
        hook.remove()
    assert [o[0]["token_ids"] for o in stopped] == [[think_end]] * 2
    assert stopped[0][0]["text"] == "</think>" and stopped[0][0]["finish_reason"] == "stop"
    assert running["token_ids"] == [think_end] * 6 and running["finish_reason"] == "length"


def test_builtin_sampler_batches_tiles_and_fsdp_dummy_tile(tiny, monkeypatch):
    calls = []

    def fake_generate(net, prompts, pixel_values=None, image_flags=None, sync_ranks=False, copies=None, **kw):
        calls.append((len(prompts), None if pixel_values is None else pixel_values.shape[0],
                      None if image_flags is None else image_flags.tolist(), sync_ranks, kw["stop_token_ids"], copies))
        return [{"token_ids": [9, 2], "logprobs": [-1.0, -0.5], "finish_reason": "stop"} for _ in range(sum(copies))]

    monkeypatch.setattr(decode, "generate", fake_generate)
    t = tiny.tiles
    out = sampling.BuiltinSampler(tiny.net, tiny.tok, batch_size=2).sample(tiny.prompts, [1, 2], 4)
    # rows: text, image, image -> chunks of 2: (text, image) then (image); each chunk brings its own tiles
    assert [c[:3] for c in calls] == [(2, t, [1] * t), (1, t, [1] * t)]
    calls.clear()   # a prompt's rollouts are one prompt with copies (its prefix encoded once), within a chunk
    out = sampling.BuiltinSampler(tiny.net, tiny.tok, batch_size=4).sample(tiny.prompts, [1, 4], 4)
    assert [(c[0], c[1], c[5]) for c in calls] == [(2, t, [1, 3]), (1, t, [1])] and [len(o) for o in out] == [1, 4]
    assert out[1][1] == {"token_ids": [9, 2], "logprobs": [-1.0, -0.5], "text": tiny.tok.decode([9]),
                         "num_tokens": 2, "finish_reason": "stop"}
    calls.clear()   # under FSDP a text-only batch gets one zero tile with flag 0, and generate syncs the ranks
    sampling.BuiltinSampler(tiny.net, tiny.tok, sync_ranks=True).sample(tiny.prompts[:1], 2, 4)
    assert calls == [(1, 1, [0], True, sampling.stop_token_ids(tiny.tok), [2])]

# -----------------------------------------------------------------------------
# the vLLM sampler against a fake engine


class FakeLLM:
    def __init__(self, prompt_ids=None):
        self.prompt_ids = prompt_ids or {}

    def generate(self, requests, params, use_tqdm=True):
        self.requests, self.params, self.use_tqdm = requests, params, use_tqdm
        per_request = params if isinstance(params, list) else [params] * len(requests)
        completion = lambda j: types.SimpleNamespace(
            token_ids=(5, 6, 2), text=f"s{j}</think><|im_end|>", finish_reason="length" if j else "stop",
            logprobs=[{5: types.SimpleNamespace(logprob=-0.5)}, {6: types.SimpleNamespace(logprob=-1.0)},
                      {2: types.SimpleNamespace(logprob=-0.1)}])
        return [types.SimpleNamespace(prompt_token_ids=self.prompt_ids.get(r["prompt"]),
                                      outputs=[completion(j) for j in range(p.kwargs["n"])])
                for r, p in zip(requests, per_request)]


@pytest.fixture
def fake_vllm(monkeypatch):
    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(kwargs=kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)


def test_vllm_sampler_requests_params_and_outputs(tiny, fake_vllm):
    llm = FakeLLM()
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    prompts = [{"prompt": "<|im_start|>user\nq1<|im_end|>\n", "images": []},
               {"prompt": "<|im_start|>user\n<image>\nq2<|im_end|>\n", "images": [red]}]
    out = sampling.VLLMSampler(llm, tiny.tok, temperature=0.7, top_p=0.9).sample(
        prompts, 2, 32, stop=["</think>"], banned_ids=[9, 3])
    assert llm.requests == [{"prompt": prompts[0]["prompt"]},
                            {"prompt": prompts[1]["prompt"], "multi_modal_data": {"image": [red]}}]
    # one SamplingParams per request; no seed given: vLLM seeds each request itself
    assert [p.kwargs for p in llm.params] == [dict(n=2, temperature=0.7, top_p=0.9, max_tokens=32,
                                                   stop_token_ids=sampling.stop_token_ids(tiny.tok), stop=["</think>"],
                                                   include_stop_str_in_output=True, logprobs=0,
                                                   logit_bias={3: -100.0, 4: -100.0, 5: -100.0, 9: -100.0},
                                                   skip_special_tokens=False, seed=None)] * 2
    assert llm.use_tqdm is False
    assert out[1] == [{"token_ids": [5, 6, 2], "logprobs": [-0.5, -1.0, -0.1], "text": "s0</think>",
                       "num_tokens": 3, "finish_reason": "stop"},
                      {"token_ids": [5, 6, 2], "logprobs": [-0.5, -1.0, -0.1], "text": "s1</think>",
                       "num_tokens": 3, "finish_reason": "length"}]
    # one count per prompt: one SamplingParams per request; no stop strings -> stop=None
    sampling.VLLMSampler(llm, tiny.tok).sample(prompts, [3, 1], 8)
    assert [p.kwargs["n"] for p in llm.params] == [3, 1] and llm.params[0].kwargs["stop"] is None


def test_vllm_sampler_per_request_seeds(tiny, fake_vllm):
    """generate(seed=s): every request gets its own SamplingParams(seed=...), a function of s only."""
    llm = FakeLLM()
    prompts = [{"prompt": f"q{i}", "images": []} for i in range(4)]
    seeds = lambda s: [p.kwargs["seed"] for p in (sampling.VLLMSampler(llm, tiny.tok).sample(prompts, 2, 4, seed=s),
                                                  llm.params)[1]]
    first = seeds(11)
    assert all(isinstance(x, int) and 0 <= x < 2 ** 31 for x in first)
    # distinct, with room for vLLM's seed + k of a request's k-th sample
    assert len({x + k for x in first for k in range(2)}) == 8
    assert seeds(11) == first and seeds(12) != first


def test_vllm_sampler_checks_our_prompt_tokens(tiny, fake_vllm):
    prompt = {"prompt": "<|im_start|>user\n<image>\nq<|im_end|>\n", "images": [], "input_ids": [1, 2, 3],
              "id": "q7"}
    llm = FakeLLM({prompt["prompt"]: [1, 2, 3]})
    assert len(sampling.VLLMSampler(llm, tiny.tok).sample([prompt], 1, 4)[0]) == 1
    llm.prompt_ids[prompt["prompt"]] = [1, 2, 3, 3]   # vLLM expanded <image> to one token more
    with pytest.raises(ValueError, match="record q7: vLLM's prompt has 4 tokens but ours 3"):
        sampling.VLLMSampler(llm, tiny.tok).sample([prompt], 1, 4)

# -----------------------------------------------------------------------------
# torchrun --nproc_per_node=2 (gloo, FSDP2): rollouts that end at different steps on each rank


def test_two_ranks_whose_rollouts_end_at_different_steps_sample_as_one_process(tmp_path):
    """Rank 0 has one short text prompt that stops at its second token (a stop token of its own), rank 1 an
    image prompt and a longer text prompt that run to max_tokens, in two generate calls to rank 0's one. Both
    decode loops (generate and decode_static) must run the same collectives in the same order on both ranks: the
    old order (the forward, then the "any rank alive?" all-reduce, on a rank still decoding; the all-reduce, then
    a dummy forward, on a rank that is done) waited for ever. Greedy, so each rank's tokens equal one process's
    (the unsharded model), and its log-probs to fp32 round-off."""
    tok = chat.build_tiny_tokenizer()
    cfg = model.tiny_config(vocab_size=len(tok))
    torch.manual_seed(0)
    model.save_model(tmp_path / "ckpt", model.build_model(cfg).state_dict(), cfg, tok)
    torchrun(__file__, tmp_path / "ckpt", tmp_path, timeout=180)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name in ("sampler", "static"):
            ours, one = got[name], got[name + "_one_process"]
            assert [o["token_ids"] for o in ours] == [o["token_ids"] for o in one], (rank, name)
            assert [o["finish_reason"] for o in ours] == [o["finish_reason"] for o in one]
            for a, b in zip(ours, one):
                assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-5)
            lengths = [len(o["token_ids"]) for o in ours]
            # what makes the test: rank 0 stops at once, rank 1 runs to max_tokens (decode_static: past 16 steps)
            max_tokens = 12 if name == "sampler" else 20
            assert (max(lengths) <= 2) if rank == 0 else (lengths == [max_tokens] * len(lengths)), (rank, lengths)


def two_rank_worker(ckpt, out):
    dist = tu.setup_distributed()
    tok = chat.load_tokenizer(ckpt)
    one_process = model.load_model(ckpt).eval()
    sharded = tu.load_model_sharded(ckpt, dist, ["llm"]).eval()
    text = lambda q: {"input_ids": tok.encode(chat.build_prompt([{"role": "user", "content": q}], tokenizer=tok),
                                              add_special_tokens=False), "pixel_values": None}
    tiles = data.image_to_pixel_values(Image.new("RGB", (60, 40), (200, 10, 10)), one_process.config)
    image_text = chat.expand_image_tokens("<image>\nHow many?", [tiles.shape[0]], one_process.config.num_image_token)
    image = {**text(image_text), "pixel_values": tiles}
    prompts, n = ([text("How many?")], 1) if dist.rank == 0 else ([image, text("Sum the numbers in both")], [2, 1])
    greedy = lambda net, sync: sampling.BuiltinSampler(net, tok, temperature=0, batch_size=2, sync_ranks=sync)
    stop = ()
    if dist.rank == 0:   # its own stop token: the second token it would say
        first = greedy(one_process, False).sample(prompts, n, 2)[0][0]["token_ids"]
        stop = [tok.convert_ids_to_tokens(first[1])]
    result = {"sampler": [o for p in greedy(sharded, True).sample(prompts, n, 12, stop=stop) for o in p],
              "sampler_one_process": [o for p in greedy(one_process, False).sample(prompts, n, 12, stop=stop)
                                      for o in p]}
    ids = [p["input_ids"] for p in prompts]
    stop_ids = sampling.stop_token_ids(tok) + [tok.convert_tokens_to_ids(s) for s in stop]
    batch = data.collate_left_padded(prompts, tok.pad_token_id, one_process.config.force_image_size)
    for name, net, sync in (("static", sharded, True), ("static_one_process", one_process, False)):
        result[name] = decode.generate(net, ids, batch["pixel_values"], batch["image_flags"], max_new_tokens=20,
                                         temperature=0, stop_token_ids=stop_ids, pad_token_id=tok.pad_token_id,
                                         sync_ranks=sync, static_cache=True, compile_decode="off")
    (Path(out) / f"rank{dist.rank}.json").write_text(json.dumps(result))
    tu.cleanup_distributed()


if __name__ == "__main__":   # the torchrun worker: tests/test_sampling.py CKPT OUT_DIR
    two_rank_worker(sys.argv[1], sys.argv[2])
