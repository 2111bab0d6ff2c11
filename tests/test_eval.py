import json
import os
import shutil
import sys
import types
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pytest
import torch
from PIL import Image

import bench_metrics
import benchmarks as B
import chat
import data
import eval as E
import model
import rewards
import decode
import sampling
import stub_server
from test_benchmarks import b64, write_tsv   # the TSV helpers of the reader tests

torch.set_num_threads(1)   # shared cores: tiny matmuls on many threads spin

# -----------------------------------------------------------------------------
# scoring a run (the scorers themselves: tests/test_benchmarks.py)


def test_rule_family_through_rewards():
    items = [B.EvalItem(id="1", question="1+1?", answer="2", images=[], options={}, benchmark="k12"),
             B.EvalItem(id="2", question="Which pet?", answer="B", images=[], options={"A": "cat", "B": "dog"},
                        benchmark="mine")]
    responses = {("1", 0): "<think>one plus one</think>So \\boxed{2}.", ("1", 1): "<think>hm</think>\\boxed{3}",
                 ("2", 0): "<think>a dog</think>The answer is (B).", ("2", 1): "<think>meow</think>It is a cat."}
    gens = {key: {"response": r, "num_tokens": 4} for key, r in responses.items()}
    scored = E.score_run(items, gens, E.EvalConfig(k=2), "think")
    assert [(s["id"], s["sample"], s["correct"]) for s in scored] == \
        [("1", 0, True), ("1", 1, False), ("2", 0, True), ("2", 1, False)]
    assert scored[0]["parsed_pred"] == "2" and scored[0]["verifier"] is None


def test_mathvista_llm_extractor_on_the_verifier_endpoint():
    seen = []

    def respond(handler, request):
        seen.append(request)
        stub_server.reply_chat(handler, " [2007, 2008]")

    item = B.EvalItem(id="4", question="Question: Which years?", answer="[2007, 2008]", images=[], options={},
                      benchmark="MathVista", extra={"question_type": "free_form", "answer_type": "list"})
    gens = {("4", 0): {"response": "<think>peak</think>The peak lies between 2007 and 2008.", "num_tokens": 9}}
    with stub_server.chat_endpoint(respond) as url:
        (scored,) = E.score_run([item], gens, E.EvalConfig(k=1, verifier_url=url, verifier_model="judge"), "think")
    assert (scored["correct"], scored["parsed_pred"], scored["extraction"]) == (True, "[2007, 2008]", "llm")
    (request,) = seen
    assert (request["model"], request["temperature"], request["max_tokens"]) == ("judge", 0.0, 128)
    prompt = request["messages"][0]["content"]
    assert prompt.endswith("Question: Which years?\nModel response: The peak lies between 2007 and 2008.\n"
                           "Extracted answer:") and "Extracted answer: B" in prompt
    # server gone: the rule extractor takes over (and the list cannot be read from the sentence)
    cfg = E.EvalConfig(k=1, verifier_url=url)
    (scored,) = E.score_run([item], gens, cfg, "think")
    assert (scored["correct"], scored["extraction"]) == (False, "rule")

# -----------------------------------------------------------------------------
# analyses


def test_avg_at_k_by_hand():
    r = bench_metrics.avg_at_k({"a": [True, False, True], "b": [True, True, False]})
    assert r["per_run"] == [1.0, 0.5, 0.5] and r["accuracy"] == pytest.approx(2 / 3)
    assert r["std"] == pytest.approx((1 / 12) ** 0.5) and (r["k"], r["n_items"]) == (3, 2)
    assert bench_metrics.avg_at_k({"a": [True]})["std"] == 0.0
    with pytest.raises(ValueError, match="different numbers of samples"):
        bench_metrics.avg_at_k({"a": [True], "b": [True, False]})


def test_hallucination_split_by_hand():
    scored = [
        {"response": "<think>I can\u2019t see the image, but the bars...</think>B", "correct": False},
        {"response": "<think>我看不到图片。</think>A", "correct": True},
        {"response": "<think>The image shows 3 bars</think>A", "correct": True},
        {"response": "<think>I CANNOT SEE THE IMAGE</think>C", "correct": False},
        {"response": "<think>fine</think>D", "correct": True},
        {"response": "<think>fine</think>D", "correct": False},
    ]
    h = E.hallucination_split(scored, rewards.UNSEEN_IMAGE_PHRASES)
    assert h["all"] == {"n": 6, "accuracy": pytest.approx(3 / 6)}
    assert h["with"] == {"n": 3, "accuracy": pytest.approx(1 / 3)}
    assert h["without"] == {"n": 3, "accuracy": pytest.approx(2 / 3)}
    only_english = E.hallucination_split(scored, ["can't see the image"])
    assert only_english["with"]["n"] == 1


def test_summarize_run_and_report():
    scored = []
    for item, subject, corrects in (("a", "Art", [1, 0]), ("b", "Math", [1, 1]), ("c", "Math", [0, 0])):
        for s, c in enumerate(corrects):
            scored.append({"id": item, "sample": s, "subject": subject, "correct": bool(c),
                           "response": "x" * 10, "num_tokens": 10 + s, "mmmu_official": bool(c),
                           "boxed_rule": False, "random_fallback": False})
    summary = E.summarize_run(scored, rewards.UNSEEN_IMAGE_PHRASES, "mmmu")
    assert summary["per_run"] == pytest.approx([2 / 3, 1 / 3]) and summary["avg_tokens"] == 10.5
    assert summary["per_subject"] == {"Art": {"n": 2, "accuracy": 0.5}, "Math": {"n": 4, "accuracy": 0.5}}
    assert summary["boxed_rule"]["accuracy"] == 0.0 and summary["mmmu_official"]["accuracy"] == pytest.approx(0.5)
    runs = {("MMMU", "think", None): summary, ("MMMU", "nothink", None): summary,
            ("MMMU", "think", 1024): summary, ("MMMU", "think", 2048): summary}
    md = E.markdown_report(runs)
    assert "## Modes on MMMU (Table 4)" in md and "| Accuracy (%) | 50.0 | 50.0 |" in md
    assert "| 1024 | 50.0 |" in md and "| 2048 | 50.0 |" in md and "| With | 0 | - |" in md

# -----------------------------------------------------------------------------
# generation: budget rule, resume, vLLM arguments, NoWait on the tiny model, end to end


def fake_sampler(script, calls):
    """sample_fn that returns scripted outputs and records (prefixes, max_tokens, stop_at_think_end)."""
    def sample_fn(rows, max_tokens, stop_at_think_end):
        calls.append(([r["prefix"] for r in rows], max_tokens, stop_at_think_end))
        return [script(r, max_tokens, stop_at_think_end) for r in rows]
    return sample_fn


def test_budget_rule():
    cfg = E.EvalConfig(max_new_tokens=100, answer_max_tokens=7)
    phase_a = {"eos": ("reasoning</think>answer", "stop", 5),    # finished inside the budget
               "closed": ("short think</think>", "stop", 3),     # stopped at </think>: continue, no forcing
               "long": ("endless thinking", "length", 16)}       # budget used up: force </think>, continue
    script = lambda r, n, stop: ({"text": phase_a[r["id"]][0], "finish_reason": phase_a[r["id"]][1],
                                  "num_tokens": phase_a[r["id"]][2]} if r["prefix"] == "" else
                                 {"text": "ANS", "finish_reason": "stop", "num_tokens": 2})
    rows = [{"id": i, "prefix": "", "forced_tokens": 4} for i in ("eos", "closed", "long")]
    calls = []
    out = E.generate_rows(rows, fake_sampler(script, calls), "think", 16, cfg)
    assert [o["response"] for o in out] == ["reasoning</think>answer", "short think</think>ANS",
                                            "endless thinking" + E.FORCED_THINK_END + "ANS"]
    assert [o["num_tokens"] for o in out] == [5, 5, 16 + 4 + 2]
    assert [o["forced_think_end"] for o in out] == [False, False, True]
    assert calls == [(["", "", ""], 16, True),
                     (["short think</think>", "endless thinking" + E.FORCED_THINK_END], 7, False)]
    calls.clear()   # no budget, or nothink: one plain generation of max_new_tokens
    E.generate_rows(rows, fake_sampler(script, calls), "think", None, cfg)
    E.generate_rows(rows, fake_sampler(script, calls), "nothink", 16, cfg)
    assert [c[1:] for c in calls] == [(100, False), (16, False)]


def test_nothink_instruction_asks_our_items_in_nothink_mode_only():
    """eval.py --nothink_instruction: nothink prompts of our JSONL items end with NOTHINK_INSTRUCTION (the text
    synthetic.py's nothink SFT items are asked with); think and NoWait keep the training instruction, and without
    the flag NoThink is the paper's (the template alone changes). Other benchmarks keep their released prompts."""
    ours = B.EvalItem(id="q0", question="How many red shapes?", answer="2", images=[], options={}, benchmark="test",
                      extra={"format": "records"})
    mmmu = B.EvalItem(id="m0", question="Which?", answer="A", images=[], options={"A": "a", "B": "b"},
                      benchmark="MMMU_tiny")
    prompt = lambda mode, **kw: E.run_prompts(E.EvalConfig(**kw), [ours, mmmu], mode, None)
    expect = lambda instruction: data.format_question(data.Record(id="q0", question="How many red shapes?",
                                                                  answer="2", images=[], options=None,
                                                                  source="test"), instruction)
    assert expect(data.NOTHINK_INSTRUCTION) in prompt("nothink", nothink_instruction=True)["q0"]["prompt"]
    for mode, flag in (("think", True), ("nowait", True), ("nothink", False)):
        text = prompt(mode, nothink_instruction=flag)["q0"]["prompt"]
        assert expect(data.DEFAULT_INSTRUCTION) in text and data.NOTHINK_INSTRUCTION not in text
    assert prompt("nothink", nothink_instruction=True)["m0"] == prompt("nothink")["m0"]


def test_resume_skips_finished_samples(tmp_path):
    cfg = E.EvalConfig(k=3, batch_size=4, vllm_chunk=1, out_dir=str(tmp_path))
    items = [B.EvalItem(id=f"q{i}", question=f"question {i}", answer="A", images=[], options={"A": "a", "B": "b"},
                        benchmark="MMMU_tiny") for i in range(4)]
    calls = []
    script = lambda r, n, stop: {"text": f"{r['id']} answer", "finish_reason": "stop", "num_tokens": 2}
    run = E.run_dir_for(tmp_path, "MMMU_tiny", "think", None)
    prompts = E.run_prompts(cfg, items, "think", None)
    done = E.generate_run(cfg, items, "think", None, fake_sampler(script, calls), prompts)
    assert len(done) == 12 and sum(len(c[0]) for c in calls) == 12
    calls.clear()
    assert E.generate_run(cfg, items, "think", None, fake_sampler(script, calls), prompts) == done and calls == []
    # drop two records and tear the last line, as a killed run leaves it: exactly those are regenerated
    lines = (run / "generations.jsonl").read_text().splitlines()
    kept = lines[:9] + [lines[11][:20]]
    (run / "generations.jsonl").write_text("\n".join(kept))
    again = E.generate_run(cfg, items, "think", None, fake_sampler(script, calls), prompts)
    assert sum(len(c[0]) for c in calls) == 3 and set(again) == set(done)
    assert len((run / "generations.jsonl").read_text().splitlines()) == 12
    with pytest.raises(ValueError, match=r'sampled with \{"temperature": 1.0.*, not \{"temperature": 0.0'):
        E.generate_run(E.EvalConfig(k=3, protocol="released", temperature=0.0, out_dir=str(tmp_path)), items,
                       "think", None, fake_sampler(script, calls), prompts)   # greedy samples into a T = 1 avg@k
    # a bad line other than a torn last one: an error naming file:line (data.read_jsonl's words for bad JSON)
    (run / "generations.jsonl").write_text("{broken\n" + "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"generations.jsonl:1: invalid JSON"):
        E.read_generations(run / "generations.jsonl")
    (run / "generations.jsonl").write_text('{"id": "q0"}\n' + "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"generations.jsonl:1: bad generation record: KeyError"):
        E.read_generations(run / "generations.jsonl")


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeOutput:
    def __init__(self, text, n_tokens, finish_reason):
        self.text, self.token_ids, self.finish_reason = text, list(range(n_tokens)), finish_reason
        self.logprobs = None


class FakeLLM:
    def __init__(self, **engine_kwargs):
        self.calls, self.engine_kwargs = [], engine_kwargs

    def generate(self, requests, params, use_tqdm=True):
        self.calls.append((requests, params))
        return [type("RequestOutput", (), {"outputs": [FakeOutput(f"s{j}<|im_end|>", 3 + j, "stop")
                                                       for j in range(p.kwargs["n"])]})() for p in params]


def test_vllm_arguments_with_fake_engine(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=FakeSamplingParams))
    tok = chat.build_tiny_tokenizer()
    llm = FakeLLM()
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    sample_fn = E.row_sampler(sampling.VLLMSampler(llm, tok, temperature=1.0, top_p=0.95), tok, banned=[11, 12])
    rows = [{"id": q, "sample": s, "prompt": f"<|im_start|>user\n<image>\n{q}<|im_end|>\n<|im_start|>assistant\n",
             "images": [red], "prefix": ""} for q in ("q1", "q2") for s in range(3)]
    outs = sample_fn(rows, 512, True)
    requests, params = llm.calls[0]
    assert len(requests) == 2 and requests[0]["prompt"].endswith("q1<|im_end|>\n<|im_start|>assistant\n")
    assert [im.getpixel((0, 0)) for im in requests[0]["multi_modal_data"]["image"]] == [(255, 0, 0)]
    assert params[0].kwargs == dict(n=3, temperature=1.0, top_p=0.95, max_tokens=512,
                                    stop_token_ids=sampling.stop_token_ids(tok), stop=["</think>"],
                                    include_stop_str_in_output=True, skip_special_tokens=False, logprobs=0,
                                    logit_bias={i: -100.0 for i in [11, 12] + sampling.image_token_ids(tok)},
                                    seed=None)
    assert [o["text"] for o in outs] == ["s0", "s1", "s2"] * 2 and [o["num_tokens"] for o in outs] == [3, 4, 5] * 2
    # continuation rows (different prefixes) become separate n=1 requests
    cont = [dict(rows[0], prefix="a</think>"), dict(rows[1], prefix="b</think>")]
    sample_fn(cont, 64, False)
    requests, params = llm.calls[1]
    assert [r["prompt"][-9:] for r in requests] == ["a</think>", "b</think>"]
    assert [p.kwargs["n"] for p in params] == [1, 1] and params[0].kwargs["stop"] is None
    # seeded rows: consecutive seeds of one question share a request (its j-th sample: the first seed + j, vLLM's
    # children), a gap in them starts another request
    seeded = [dict(row, seed=100 + row["sample"]) for row in rows[:3]]
    for picked, requested in (([0, 1, 2], [(3, 100)]), ([0, 2], [(1, 100), (1, 102)]), ([1, 2], [(2, 101)])):
        sample_fn([seeded[i] for i in picked], 64, False)
        assert [(p.kwargs["n"], p.kwargs["seed"]) for p in llm.calls[-1][1]] == requested


def test_vllm_engine_arguments_end_to_end_with_fake_engine(tiny_checkpoint, tmp_path, monkeypatch):
    engines = []
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(
        LLM=lambda **kw: engines.append(FakeLLM(**kw)) or engines[-1], SamplingParams=FakeSamplingParams))
    write_tsv(tmp_path / "MMMU_tiny.tsv", ["index", "question", "A", "B", "answer", "id", "image"],
              [[0, "Colour of <image 1>?", "red", "blue", "A", "validation_Art_1", b64((255, 0, 0))],
               [1, "Which one?", "left", "right", "B", "validation_Math_2", b64((0, 0, 255))]])
    out = tmp_path / "out"
    assert E.main([f"--checkpoint={tiny_checkpoint}", f"--benchmarks={tmp_path / 'MMMU_tiny.tsv'}", "--k=3",
                   "--backend=vllm", "--tensor_parallel_size=8", "--max_images=7", f"--out_dir={out}",
                   "--wandb=False"]) == 0
    assert engines[0].engine_kwargs == dict(
        model=str(tiny_checkpoint), tokenizer=str(tiny_checkpoint), tensor_parallel_size=8, trust_remote_code=True,
        limit_mm_per_prompt={"image": 7, "video": 0}, gpu_memory_utilization=0.9, seed=0,
        dtype="bfloat16", logprobs_mode="raw_logprobs", enforce_eager=True,   # no GPU here
        max_model_len=4096)   # the default 32768 capped at the checkpoint's positions: vLLM refuses more
    requests, params = engines[0].calls[0]   # one request per question, its k samples as n, seeded by the item
    assert len(requests) == 2 and [p.kwargs["n"] for p in params] == [3, 3]
    assert [p.kwargs["seed"] for p in params] == [sampling.item_seed(0, "MMMU_tiny", i)
                                                  for i in ("validation_Art_1", "validation_Math_2")]
    gens = [json.loads(g) for g in (out / "MMMU_tiny/think_full/generations.jsonl").read_text().splitlines()]
    assert sorted((g["id"], g["sample"], g["response"]) for g in gens) == \
        [(i, s, f"s{s}") for i in ("validation_Art_1", "validation_Math_2") for s in range(3)]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tok = chat.build_tiny_tokenizer()
    config = model.tiny_config(vocab_size=len(tok))
    m = model.build_model(config)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    model.save_model(path, m.state_dict(), config, tokenizer=tok)
    return path


def test_nowait_never_emits_a_banned_token(tiny_checkpoint):
    tok = chat.load_tokenizer(tiny_checkpoint)
    m = model.load_model(tiny_checkpoint).eval()
    banned = sampling.nowait_banned_token_ids(tok, ["Wait", "Alternatively", "Hmm"])
    assert {tok.decode([i]) for i in banned} == {" Wait", " Hmm", " Alternatively"}
    assert [tok.decode([i]) for i in sampling.nothink_banned_token_ids(tok)] == [chat.THINK_START, chat.THINK_END]
    # push the banned tokens up so that, unbanned, the model says them all the time
    bias = torch.zeros(len(tok))
    bias[banned] = 4.0
    hook = m.language_model.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)
    try:
        prompt = tok.encode(chat.build_prompt([{"role": "user", "content": "How many circles?"}], tokenizer=tok),
                            add_special_tokens=False)
        kw = dict(max_new_tokens=16, temperature=1.0, stop_token_ids=sampling.stop_token_ids(tok),
                  generator=torch.Generator().manual_seed(0))
        image_ids = sampling.image_token_ids(tok)   # a text-only prompt must not sample image tokens either
        free = decode.generate(m, [prompt] * 12, banned_token_ids=image_ids, **kw)
        masked = decode.generate(m, [prompt] * 12, banned_token_ids=banned + image_ids, **kw)
    finally:
        hook.remove()
    count = lambda gens: sum(t in banned for g in gens for t in g["token_ids"])
    assert count(free) > 25                    # the test can fail: unmasked, they are ~30% of the tokens
    assert count(masked) == 0 and sum(len(g["token_ids"]) for g in masked) > 150


def test_bad_images_and_long_prompts_fail_at_startup_naming_the_record(tiny_checkpoint, tmp_path, monkeypatch):
    def sample(self, *args, **kwargs):
        raise AssertionError("generation started before the bad record was reported")

    monkeypatch.setattr(sampling.BuiltinSampler, "sample", sample)
    Image.new("RGB", (20, 20), (0, 200, 0)).save(tmp_path / "g.png")
    rows = [{"id": f"m{i}", "images": ["g.png"], "question": "1+1?", "answer": "2"} for i in range(3)]
    bench = tmp_path / "mine.jsonl"
    args = [f"--checkpoint={tiny_checkpoint}", f"--benchmarks={bench}", "--k=1", "--max_new_tokens=4",
            f"--out_dir={tmp_path / 'out'}", "--backend=builtin", "--wandb=False", "--batch_size=1"]
    # a missing image in the last record: an error naming file:line before the first generation
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] + [{**rows[2], "images": ["nope.png"]}]))
    with pytest.raises(FileNotFoundError, match=r"mine\.jsonl:3: image not found: .*nope\.png"):
        E.main(args)
    # a prompt past the model's positions (tiny config: 512): an error naming the record, nothing generated
    positions = model.ModelConfig.from_json(tiny_checkpoint / "config.json").llm_config["max_position_embeddings"]
    long = {**rows[2], "question": "one plus one " * positions}
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] + [long]))
    with pytest.raises(ValueError, match=rf"mine\.jsonl:3: prompt of item 'm2' is \d+ tokens, more than {positions - 1}"):
        E.main(args)


def test_end_to_end_builtin_generation_and_resume(tiny_checkpoint, tmp_path):
    header = ["index", "question", "A", "B", "answer", "split", "id", "image"]
    rows = [[0, "Colour of <image 1>?", "red", "blue", "A", "validation", "validation_Art_1", b64((255, 0, 0))],
            [1, "Which one?", "left", "right", "B", "validation", "validation_Math_2", b64((0, 0, 255))],
            [2, "dev item", "x", "y", "A", "dev", "dev_Math_1", b64((0, 255, 0))]]
    write_tsv(tmp_path / "MMMU_tiny.tsv", header, rows)
    Image.new("RGB", (20, 20), (0, 200, 0)).save(tmp_path / "g.png")
    # multiple choice: rewards.py decides letters in-process (no Math-Verify worker start-up in this test)
    (tmp_path / "mine.jsonl").write_text(json.dumps({"id": "m1", "images": ["g.png"], "question": "1+1?",
                                                     "options": {"A": "one", "B": "two"}, "answer": "B",
                                                     "split": "validation"}) + "\n")
    out = tmp_path / "out"
    args = [f"--checkpoint={tiny_checkpoint}", f"--benchmarks={tmp_path / 'MMMU_tiny.tsv'},{tmp_path / 'mine.jsonl'}",
            "--split=validation", "--k=2", "--max_new_tokens=6", "--mode=think,nowait", "--batch_size=3",
            f"--out_dir={out}", "--backend=builtin", "--wandb=False"]
    assert E.main(args) == 0
    gens = (out / "MMMU_tiny/think_full/generations.jsonl").read_text().splitlines()
    assert len(gens) == 4 and {json.loads(g)["id"] for g in gens} == {"validation_Art_1", "validation_Math_2"}
    overall = json.loads((out / "summary.json").read_text())
    think = json.loads((out / "MMMU_tiny/think_full/summary.json").read_text())
    assert set(overall["runs"]) == {"MMMU_tiny/think/full", "MMMU_tiny/nowait/full", "mine/think/full",
                                    "mine/nowait/full"}
    mine = json.loads((out / "mine/think_full/summary.json").read_text())
    assert overall["accuracy"] == pytest.approx((think["accuracy"] + mine["accuracy"]) / 2)
    assert overall["benchmarks"] == ["MMMU_tiny", "mine"] and mine["n_items"] == 1
    assert think["k"] == 2 and think["n_items"] == 2 and "mmmu_official" in think and "boxed_rule" in think
    assert "## Modes on MMMU_tiny (Table 4)" in (out / "summary.md").read_text()
    assert think["protocol"] == overall["protocol"] == "custom"   # the paper's preset with k=2, 6 tokens
    assert think["sampling"] == {"temperature": 1.0, "top_p": 1.0, "k": 2, "max_new_tokens": 6}   # generations say
    assert "nowait (not in the release) keeps the '<think>\\n' generation prompt" in " ".join(overall["deviations"])
    assert not any("no chat template" in d for d in overall["deviations"])   # the saved tokenizer keeps its template
    # rerun: nothing new is generated, the files are unchanged; a budget run adds its own directory
    assert E.main(args) == 0
    assert (out / "MMMU_tiny/think_full/generations.jsonl").read_text().splitlines() == gens
    assert E.main([args[0], f"--benchmarks={tmp_path / 'MMMU_tiny.tsv'}"] + args[2:4] +
                  ["--mode=think", "--budgets=[4]", "--answer_max_tokens=3"] + args[6:]) == 0
    budget = [json.loads(g) for g in (out / "MMMU_tiny/think_4/generations.jsonl").read_text().splitlines()]
    assert len(budget) == 4 and all(g["num_tokens"] <= 4 + 4 + 3 for g in budget)
    assert any(g["forced_think_end"] and E.FORCED_THINK_END in g["response"] for g in budget)
    assert E.main([f"--out_dir={out}", f"--benchmarks=['{tmp_path / 'MMMU_tiny.tsv'}']", "--split=validation",
                   "--k=2", "--score_only=True"]) == 0   # W&B on, in WANDB_MODE=disabled
    rescored = json.loads((out / "MMMU_tiny/think_full/summary.json").read_text())
    assert rescored["per_run"] == think["per_run"]   # same rng order -> the same verdicts
    assert rescored["sampling"] == think["sampling"]   # from the generations, not the rescore's defaults


def test_a_killed_and_resumed_eval_samples_what_an_uninterrupted_one_does(tiny_checkpoint, tmp_path):
    """At T = 1, avg@3: an eval killed mid-run (its generations cut after 4 records, the 5th torn) and resumed
    with another batch size writes the uninterrupted run's responses, sample for sample: each (item, sample) has
    its own seed. So does a thinking-budget run (its forced answers too) with one row per batch. --seed=1: others."""
    questions = ["1+1?", "How many circles are there?", "3-1?"]
    bench = tmp_path / "mine.jsonl"
    bench.write_text("".join(json.dumps({"id": f"m{i}", "images": [], "question": q, "answer": "2"}) + "\n"
                             for i, q in enumerate(questions)))
    args = lambda out, *extra: [f"--checkpoint={tiny_checkpoint}", f"--benchmarks={bench}", "--k=3",
                                "--max_new_tokens=12", "--backend=builtin", "--wandb=False", "--reward_workers=0",
                                f"--out_dir={tmp_path / out}", *extra]
    path = lambda out, run: tmp_path / out / "mine" / run / "generations.jsonl"
    responses = lambda out, run="think_full": sorted((g["id"], g["sample"], g["response"], g["num_tokens"])
                                                     for g in map(json.loads, path(out, run).read_text().splitlines()))
    assert E.main(args("whole", "--batch_size=4")) == 0
    whole = responses("whole")
    assert len(whole) == 9 and len({r[2] for r in whole}) > 5   # sampled: the samples of an item differ
    assert E.main(args("killed", "--batch_size=4")) == 0
    lines = path("killed", "think_full").read_text().splitlines()
    path("killed", "think_full").write_text("\n".join(lines[:4] + [lines[4][:15]]))   # as a kill leaves it
    assert E.main(args("killed", "--batch_size=2")) == 0
    assert responses("killed") == whole
    assert E.main(args("seed1", "--batch_size=4", "--seed=1")) == 0
    assert sum(a != b for a, b in zip(responses("seed1"), whole)) > 5
    budget = ["--budgets=[4]", "--answer_max_tokens=5"]
    assert E.main(args("budget4", "--batch_size=4", *budget)) == 0
    assert E.main(args("budget1", "--batch_size=1", *budget)) == 0
    assert responses("budget4", "think_4") == responses("budget1", "think_4")
    assert any(E.FORCED_THINK_END in r[2] for r in responses("budget1", "think_4"))


def test_a_run_copied_in_equals_generating_it(tiny_checkpoint, tmp_path):
    """demo.sh's Table 4 eval (think, nothink, nowait on test) copies in the think run of the final checkpoint's
    eval (think on test, then ood) and reads it back: the same runs as a Table 4 eval that generates everything,
    since every (item, sample) draws from its own seed, whatever ran before it (a nothink run alone draws what it
    draws after think)."""
    for name, qs in (("test", ("1+1?", "2+2?", "3+1?")), ("ood", ("5-1?", "4-2?"))):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"id": f"{name}{i}", "images": [], "question": q,
                                                                    "answer": "2"}) + "\n" for i, q in enumerate(qs)))
    common = [f"--checkpoint={tiny_checkpoint}", "--k=2", "--max_new_tokens=8", "--batch_size=4", "--backend=builtin",
              "--wandb=False", "--split=validation"]

    def run(out, benches, modes, copy=()):
        for src in copy:   # an identical earlier run, copied in as demo.sh does
            (tmp_path / out / src.parent.name / src.name).mkdir(parents=True)
            shutil.copy(src / "generations.jsonl", tmp_path / out / src.parent.name / src.name / "generations.jsonl")
        assert E.main([*common, f"--benchmarks={','.join(str(tmp_path / f'{b}.jsonl') for b in benches)}",
                       f"--mode={modes}", f"--out_dir={tmp_path / out}"]) == 0
        return {p.parent.relative_to(tmp_path / out).as_posix(): p.read_text()
                for p in sorted((tmp_path / out).glob("*/*/generations.jsonl"))}

    final = run("final", ["test", "ood"], "think")
    table4 = run("table4", ["test"], "think,nothink,nowait")
    reused = run("reused", ["test"], "think,nothink,nowait", [tmp_path / "final" / "test" / "think_full"])
    assert final["test/think_full"] == table4["test/think_full"] == reused["test/think_full"]
    assert reused == table4 and table4["test/nothink_full"] == run("alone", ["test"], "nothink")["test/nothink_full"]


def test_resume_refuses_another_model_at_the_same_path(tiny_checkpoint, tmp_path):
    """The model is identified by content: a checkpoint replaced at the same path is refused before any sample is
    added to the old model's avg@k; a copy of the same model at another path resumes."""
    ckpt = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, ckpt)
    (tmp_path / "mine.jsonl").write_text(json.dumps({"id": "m1", "images": [], "question": "1+1?", "answer": "2",
                                                     "split": "validation"}) + "\n")
    args = [f"--benchmarks={tmp_path / 'mine.jsonl'}", "--split=validation", "--max_new_tokens=2", "--mode=think",
            f"--out_dir={tmp_path / 'out'}", "--backend=builtin", "--wandb=False"]
    assert E.main([f"--checkpoint={ckpt}", "--k=1", *args]) == 0
    shutil.copytree(ckpt, tmp_path / "moved")
    weights = model.load_model(ckpt).state_dict()
    weights["mlp1.1.bias"] = weights["mlp1.1.bias"] + 1.0
    model.save_model(ckpt, weights, model.ModelConfig.from_json(ckpt / "config.json"), chat.load_tokenizer(ckpt))
    gens = (tmp_path / "out/mine/think_full/generations.jsonl").read_text()
    with pytest.raises(ValueError, match=r"holds generations of another model \(checkpoint .*/ck, content sha256"):
        E.main([f"--checkpoint={ckpt}", "--k=2", *args])
    assert (tmp_path / "out/mine/think_full/generations.jsonl").read_text() == gens
    assert E.main([f"--checkpoint={tmp_path / 'moved'}", "--k=2", *args]) == 0   # the first model, moved: resumes
    assert len((tmp_path / "out/mine/think_full/generations.jsonl").read_text().splitlines()) == 2


def test_sampling_protocol_presets_and_setting_deviations():
    assert E.protocol_of(E.sampling_of(E.EvalConfig())) == "paper" and E.protocol_of(None) == "unknown"
    released = E.parse_args(["--protocol=released"])
    assert (released.temperature, released.top_p, released.k, released.max_new_tokens) == (0.0, 1.0, 1, 16384)
    assert E.protocol_of(E.sampling_of(released)) == "released"
    assert E.setting_deviations(released, E.sampling_of(released)) == [
        "nowait (not in the release) keeps the '<think>\\n' generation prompt of think mode; its ['Wait', "
        "'Alternatively', 'Hmm'] tokens are banned."]
    overridden = E.parse_args(["--protocol=released", "--k=3"])   # flags override the preset's values
    assert (overridden.k, overridden.temperature, E.protocol_of(E.sampling_of(overridden))) == (3, 0.0, "custom")
    with pytest.raises(ValueError, match=r"'--protocol=greedy': expected one of \['paper', 'released'\]"):
        E.parse_args(["--protocol=greedy"])
    with pytest.raises(ValueError, match=r"'--mmmu_images=middle': expected one of \['front', 'inplace'\]"):
        E.parse_args(["--mmmu_images=middle"])
    cfg = E.EvalConfig(mmmu_images="inplace", system_prompt="Hi.")
    statements = " ".join(E.setting_deviations(cfg, E.sampling_of(cfg)))
    assert "Sampling (paper): {'temperature': 1.0, 'top_p': 1.0, 'k': 5, 'max_new_tokens': 16384}" in statements
    assert "MMMU: each <image k> is replaced by its image in place" in statements and "'Hi.'" in statements
    bare = chat.build_tiny_tokenizer()
    bare.chat_template = None
    assert "has no chat template" in E.setting_deviations(cfg, None, bare)[0]
    assert not any("chat template" in d for d in E.setting_deviations(cfg, None, chat.build_tiny_tokenizer()))
    assert "the runs record no common setting" in E.setting_deviations(cfg, None)[-1]
