"""Tests for sampling.py: token ids, backend choice, engine arguments, the built-in sampler
on a tiny model and the vLLM sampler against a fake vllm module."""
import json
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
from test_train_utils import torchrun

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
