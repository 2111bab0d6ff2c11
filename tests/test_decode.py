"""Tests for decode.py: the built-in KV-cache decoder (dynamic and static cache, compiled and eager, FSDP),
per-row seeded draws, and the sampling step's log-probs."""
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest
import torch

import decode
import sampling
import train_utils as tu
from test_model import VIT_6B_STYLE, image_prompt, random_pixels, tok  # noqa: F401   tok is a fixture
from test_model import tiny as tiny_net
from test_train_utils import SINGLE

torch.set_num_threads(1)   # shared cores: tiny matmuls on many threads spin

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
