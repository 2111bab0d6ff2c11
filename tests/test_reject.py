"""reject.py: rejection sampling (§2) on the tiny checkpoint of tests/test_sft.py."""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import chat
import data
import decode
import reject
import sampling
import sft
import train_utils as tu
from test_sft import decode as detokenize, make_config, tiny, write_jsonl  # noqa: F401   tiny is a fixture

# -----------------------------------------------------------------------------
# rejection sampling (§2)

QUESTIONS = [
    {"id": "q1", "images": ["red.png"], "question": "How many circles?", "answer": "3", "source": "count"},
    {"id": "q2", "images": [], "question": "Which is two?", "options": {"A": "one", "B": "two"}, "answer": "B",
     "source": "choice"},
    {"id": "q3", "images": [], "question": "What is 3 + 4?", "answer": "7", "source": "count"},
]
LONG = "Let me check again. " * 12
# (text after the prompt's "<think>\n", finish_reason); which of them are right is written beside each
RESPONSES = {
    "q1": [("I count 3.\n</think>\n\nThe answer is \\boxed{3}.", "stop"),     # right
           ("I count 4.\n</think>\n\nThe answer is \\boxed{4}.", "stop"),     # wrong answer
           ("I count 3. The answer is \\boxed{3}.", "stop")],                 # right answer, no </think>: bad format
    "q2": [("Two is B.\n</think>\n\n\\boxed{B}", "stop"),                     # right
           ("One.\n</think>\n\n\\boxed{A}", "stop"),                          # wrong
           ("So B.\n</think>\n\nThe answer is B.", "stop")],                  # right
    "q3": [("3 + 4 = 7.\n</think>\n\n\\boxed{7}", "length"),                  # right but cut off: dropped
           (LONG + "7.\n</think>\n\n\\boxed{7}", "stop"),                     # right but too long: dropped
           ("3 + 4 = 8.\n</think>\n\n\\boxed{8}", "stop")],                   # wrong
}
KEPT = {"q1": [0], "q2": [0, 2], "q3": []}


@pytest.fixture
def questions(tiny, tmp_path):
    return write_jsonl(tiny.root / "questions.jsonl", QUESTIONS)


def reject_config(tiny, tmp_path, **overrides):
    max_kept = max(len(tiny.tok.encode(RESPONSES[q][j][0] + "<|im_end|>")) for q in KEPT for j in KEPT[q])
    assert len(tiny.tok.encode(RESPONSES["q3"][1][0])) > max_kept
    kwargs = dict(checkpoint=str(tiny.init), data=str(tiny.root / "questions.jsonl"),
                  out=str(tmp_path / "sft_data" / "cold.jsonl"), k=3, max_per_question=0,
                  max_response_tokens=max_kept, reward_workers=0, batch_size=8, max_new_tokens=64)
    return reject.Config(**{**kwargs, **overrides})


def fake_generate(tok, calls):
    """decode.generate stand-in: row i of a question's k copies gets RESPONSES[question][i]. Rows: each prompt
    `copies` times (the tiles are the prompts')."""
    def generate(net, prompts, pixel_values=None, stop_token_ids=(), copies=None, **kwargs):
        copies = copies or [1] * len(prompts)
        calls.append(sum(copies))
        n_tiles = 0
        outs, seen = [], {}
        for p, n in zip(prompts, copies):
            text = detokenize(tok, p)
            q = next(q["id"] for q in QUESTIONS if q["question"] in text)
            n_tiles += text.count("<img>")
            for _ in range(n):
                response, finish = RESPONSES[q][seen.setdefault(q, 0)]
                seen[q] += 1
                ids = tok.encode(response) + ([stop_token_ids[0]] if finish == "stop" else [])
                outs.append({"token_ids": ids, "logprobs": [0.0] * len(ids), "finish_reason": finish})
        assert (0 if pixel_values is None else pixel_values.shape[0]) == n_tiles
        return outs
    return generate


def test_rejection_sampling_keeps_exactly_the_right_answers(tiny, tmp_path, questions, monkeypatch):
    calls = []
    monkeypatch.setattr(decode, "generate", fake_generate(tiny.tok, calls))
    counts = reject.reject(reject_config(tiny, tmp_path, backend="builtin"))
    assert calls == [9]  # 3 questions x k=3 in one batch
    out = tmp_path / "sft_data" / "cold.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["question_id"], r["messages"][-1]["content"]) for r in rows] == \
        [(q, "<think>\n" + RESPONSES[q][j][0]) for q in KEPT for j in KEPT[q]]
    records = {r.id: r for r in data.read_records(questions)}
    for r in rows:
        assert r["messages"][0] == {"role": "user", "content": data.format_question(records[r["question_id"]])}
    assert counts["count"] == {"questions": 2, "questions_kept": 1, "prompt_too_long": 0, "sampled": 6,
                               "correct": 4, "well_formed": 5, "cut_off": 1, "passed": 2, "too_long": 1, "kept": 1}
    assert counts["choice"]["kept"] == 2 and counts["total"]["kept"] == 3 and counts["total"]["questions"] == 3
    assert json.loads(out.with_name("cold.jsonl.counts.json").read_text()) == counts
    # the output is SFT data: images resolve relative to it, and it tokenises with labels
    chats = data.read_chat_jsonl(out)
    assert chats[0]["images"] and Path(chats[0]["images"][0]).resolve() == (tiny.root / "red.png").resolve()
    cfg = make_config(tiny, tmp_path, data=str(out))
    samples, skipped, _ = sft.tokenize_share(chats, [0, 1, 2], cfg, tiny.tok, tiny.mc, tu.Dist())
    assert skipped == 0 and detokenize(tiny.tok, [t for t in samples[0]["labels"] if t != -100]) == \
        "<think>\n" + RESPONSES["q1"][0][0] + "<|im_end|>"


def test_rejection_sampling_per_question_cap_and_restart(tiny, tmp_path, questions, monkeypatch):
    calls = []
    monkeypatch.setattr(decode, "generate", fake_generate(tiny.tok, calls))
    cfg = reject_config(tiny, tmp_path, backend="builtin", max_per_question=1, batch_size=2)
    counts = reject.reject(cfg)
    out = Path(cfg.out)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["q1#0", "q2#0"]
    assert counts["total"]["kept"] == 2 and calls == [6, 3]
    # a crash after q2's samples were written but before its progress line: the rerun redoes q2 only
    progress = out.with_name("cold.jsonl.progress.jsonl")
    lines = progress.read_text().splitlines()
    progress.write_text("".join(line + "\n" for line in lines if json.loads(line)["id"] != "q2"))
    calls.clear()
    assert reject.reject(cfg) == counts and calls == [3]
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["q1#0", "q2#0"]


def test_reject_cli_end_to_end_with_the_real_builtin_sampler(tiny, tmp_path, questions):
    out = tmp_path / "cli.jsonl"
    argv = [f"--checkpoint={tiny.init}", f"--data={questions}", f"--out={out}", "--k=2",
            "--max_new_tokens=6", "--backend=builtin", "--reward_workers=0", "--batch_size=2"]
    assert reject.main(argv) == 0
    counts = json.loads(out.with_name("cli.jsonl.counts.json").read_text())
    assert counts["total"]["questions"] == 3 and counts["total"]["sampled"] == 6
    assert counts["total"]["cut_off"] + counts["total"]["passed"] <= 6  # random weights: answers are noise
    assert len(out.read_text().splitlines()) == counts["total"]["kept"]


def test_vllm_backend_arguments_with_a_fake_vllm(tiny, tmp_path, questions, monkeypatch):
    made = {}

    class FakeSamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class FakeLLM:
        def __init__(self, **kwargs):
            made["engine"] = kwargs

        def generate(self, requests, params, use_tqdm=True):
            made.setdefault("requests", []).extend(requests)
            made["params"] = [p.kwargs for p in params]
            results = []
            for req in requests:
                q = next(q["id"] for q in QUESTIONS if q["question"] in req["prompt"])
                results.append(SimpleNamespace(prompt_token_ids=None, outputs=[
                    SimpleNamespace(text=text + ("<|im_end|>" if finish == "stop" else ""),
                                    token_ids=tiny.tok.encode(text), finish_reason=finish, logprobs=None)
                    for text, finish in RESPONSES[q][:params[0].kwargs["n"]]]))
            return results

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: torch.zeros(8, dtype=torch.uint8))   # no real GPU
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state: None)
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams))
    cfg = reject_config(tiny, tmp_path, backend="auto", tensor_parallel_size=4, max_tiles=6, max_model_len=8192)
    counts = reject.reject(cfg)
    assert made["engine"] == dict(model=str(tiny.init), tokenizer=str(tiny.init), trust_remote_code=True,
                                  dtype="bfloat16", tensor_parallel_size=4,
                                  max_model_len=4096,   # 8192 capped at the checkpoint's positions
                                  gpu_memory_utilization=0.85, seed=0, logprobs_mode="raw_logprobs",
                                  limit_mm_per_prompt={"image": 1, "video": 0}, hf_overrides={"max_dynamic_patch": 6},
                                  enforce_eager=False)
    ids = [tiny.tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    assert made["params"][0] == dict(n=3, temperature=1.0, top_p=1.0, max_tokens=64, stop_token_ids=sorted(ids),
                                     stop=None, include_stop_str_in_output=True, logprobs=0,
                                     logit_bias={i: -100.0 for i in sampling.image_token_ids(tiny.tok)},
                                     skip_special_tokens=False, seed=sampling.item_seed(0, "q1"))
    # each question's own seed (its k samples: + j, vLLM's children), whatever batch it came in
    assert [p["seed"] for p in made["params"]] == [sampling.item_seed(0, q) for q in ("q1", "q2", "q3")]
    q1, q2, q3 = made["requests"]
    assert q1["prompt"] == chat.build_prompt([{"role": "user", "content": data.format_question(
        data.read_records(questions)[0])}], tokenizer=tiny.tok)
    # ChatML ending in "<|im_start|>assistant\n<think>\n", <image> unexpanded
    assert "<image>" in q1["prompt"] and "<IMG_CONTEXT>" not in q1["prompt"]
    assert [im.size for im in q1["multi_modal_data"]["image"]] == [(60, 40)] and "multi_modal_data" not in q2
    assert counts["total"]["kept"] == 3  # same decisions as the built-in sampler


def test_a_torn_progress_line_is_redone_not_a_crash(tiny, tmp_path, questions, monkeypatch):
    """A crash in the middle of appending a progress line leaves a torn last line: the rerun drops it
    (data.read_jsonl's one torn-line policy), redoes that question, and the files come out whole."""
    calls = []
    monkeypatch.setattr(decode, "generate", fake_generate(tiny.tok, calls))
    cfg = reject_config(tiny, tmp_path, backend="builtin", max_per_question=1, batch_size=2)
    counts = reject.reject(cfg)
    progress = Path(cfg.out).with_name("cold.jsonl.progress.jsonl")
    lines = progress.read_text().splitlines()
    progress.write_text("".join(line + "\n" for line in lines[:-1]) + lines[-1][:10])   # q3's line, torn
    calls.clear()
    assert reject.reject(cfg) == counts and calls == [3]   # only q3 sampled again
    assert [json.loads(line)["id"] for line in progress.read_text().splitlines()] == ["q1", "q2", "q3"]
    assert [json.loads(line)["id"] for line in Path(cfg.out).read_text().splitlines()] == ["q1#0", "q2#0"]
