"""Tests for rewards.py: format reward (eq. 1), extraction, eqs. 2-3 and the counters, the verifier
client, the CLI, the "can't see the image" phrases. R_rule itself (the verdict table, the worker
pool): tests/test_rule_check.py."""
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import rewards  # noqa: E402
import stub_server  # noqa: E402
from rewards import (RewardConfig, VerifierClient, extract_answer, format_reward,  # noqa: E402
                     score_batch)

THINK = "<think>\nLet me work it out.\n</think>\n"

# ------------------------------------------------------------------------------------------ eq. 1

@pytest.mark.parametrize("response,think_mode,expected", [
    ("reasoning</think>\nanswer", True, 1.0),               # prompt ended with "<think>\n"
    ("<think>\nreasoning</think>\nanswer", True, 1.0),      # caller kept the opening tag
    ("  <think>reasoning</think>answer<|im_end|>", True, 1.0),
    ("reasoning</think>\n", True, 0.0),                     # empty answer
    ("reasoning</think>\n<|im_end|>", True, 0.0),
    ("</think>answer", True, 0.0),                          # no reasoning
    ("no tags at all", True, 0.0),
    ("a</think>b</think>c", True, 0.0),                     # two closing tags
    ("<think>a</think>b<think>c</think>d", True, 0.0),      # two think blocks
    ("r</think>a<think>", True, 0.0),
    ("reasoning</think>answer", False, 0.0),                # no-think prompt: the model must open the block
    ("<think>reasoning</think>answer", False, 1.0),
    ("", True, 0.0),
])
def test_format_reward(response, think_mode, expected):
    assert format_reward(response, think_mode) == expected


def test_extract_answer():
    assert extract_answer("<think>\\boxed{1}</think>so \\boxed{\\frac{1}{2}} and then") == "\\frac{1}{2}"
    assert extract_answer("\\boxed{a} \\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert extract_answer("x \\boxed{3} \\boxed{4") == "3"                  # unbalanced last box is skipped
    assert extract_answer("The answer is $x=2$.\nDone") == "$x=2$"
    assert extract_answer("**Answer:** 12 cm") == "12 cm"
    assert extract_answer("we get **42** apples") == "42"
    assert extract_answer("line one\n\n  last line  \n") == "last line"
    assert extract_answer("<think>\\boxed{9}") == "9"                        # no </think>: whole text
    assert extract_answer("</think>") == "" and extract_answer("") == ""


# --------------------------------------------------------------------------------------- eqs. 2-3

def test_reward_combination_eq3():
    out = score_batch([THINK + "\\boxed{5}", THINK + "\\boxed{6}", "\\boxed{5}", "\\boxed{6}"], ["5"] * 4)
    assert [(o["accuracy"], o["format"]) for o in out] == [(1, 1), (0, 1), (1, 0), (0, 0)]
    assert [o["reward"] for o in out] == pytest.approx([1.0, 0.2, 0.8, 0.0])
    out = score_batch([THINK + "\\boxed{6}"], ["5"], cfg=RewardConfig(accuracy_weight=0.5))
    assert out[0]["reward"] == pytest.approx(0.5)
    assert set(out[0]) == {"accuracy", "format", "reward", "extracted", "reason", "timed_out", "rule", "verifier"}
    assert out[0]["extracted"] == "6" and out[0]["verifier"] is None and out[0]["timed_out"] is False


def test_score_batch_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 responses, 1 golds"):
        score_batch(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"golds\[0\]"):
        score_batch(["a"], [None])


def test_stats_cache_and_in_process_mode():
    rewards._CACHE.clear()
    batch = ([THINK + "\\boxed{x\\le 3}", THINK + "\\boxed{x\\le 3}", THINK + "\\boxed{7}"], ["$3 \\ge x$", "$3 \\ge x$", "7"])
    out = score_batch(*batch)
    assert [o["accuracy"] for o in out] == [1.0, 1.0, 1.0]
    stats = rewards.last_stats
    assert (stats.items, stats.fast_path, stats.worker_checks, stats.cache_hits) == (3, 1, 1, 0)   # deduplicated
    score_batch(*batch)
    assert (rewards.last_stats.worker_checks, rewards.last_stats.cache_hits) == (0, 2)
    rewards._CACHE.clear()
    out = score_batch(*batch, cfg=RewardConfig(num_workers=0))   # debugging mode: Math-Verify in this process
    assert [o["accuracy"] for o in out] == [1.0, 1.0, 1.0] and rewards.last_stats.worker_checks == 1


# --------------------------------------------------------------------------------------- verifier

TEST_KEY = "sk-r1v3-test-0123456789abcdef"


class _FakeVerifier:
    """The verifier behind stub_server.chat_endpoint, misbehaving as each test sets `mode`."""
    mode = "yes"
    requests: list = []

    @classmethod
    def respond(cls, handler, body):
        cls.requests.append(body)
        if cls.mode == "sleep":
            time.sleep(1.5)
        if cls.mode == "hang":   # a verifier that accepts the connection and never answers
            time.sleep(20)
            return
        if cls.mode == "trickle":   # one byte every 0.2 s, headers included: ~20 s for the whole reply
            reply = b'HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n{"choices": [{"message": {"content": "Yes"}}]}'
            try:
                for byte in reply:
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass
            handler.close_connection = True
            return
        if cls.mode == "http500":
            handler.send_response(500)
            handler.end_headers()
            return
        if cls.mode == "auth" and handler.headers.get("Authorization") != f"Bearer {TEST_KEY}":
            handler.send_response(401)   # vllm serve --api-key
            handler.end_headers()
            return
        if cls.mode == "huge":   # 2 MB of reply: more than a verdict can need
            stub_server.reply_chat(handler, "Yes" + " " * (2 << 20))
            return
        content = {"yes": "Yes", "no": "No.", "garbage": "Maybe, it depends."}.get(cls.mode, "Yes")
        stub_server.reply_chat(handler, content)


@pytest.fixture
def verifier_server():
    _FakeVerifier.requests = []
    with stub_server.chat_endpoint(_FakeVerifier.respond) as url:
        yield url


@pytest.mark.parametrize("mode,expected", [("yes", True), ("no", False), ("garbage", None)])
def test_verifier_verdicts(verifier_server, mode, expected):
    url = verifier_server
    _FakeVerifier.mode = mode
    client = VerifierClient(url, model="judge", timeout_s=5, retries=0, concurrency=4)
    assert client.judge(["q1", "q2"], ["1/2", "3"], ["0.5", "4"]) == [expected, expected]
    sent = _FakeVerifier.requests[0]
    assert sent["model"] == "judge" and sent["temperature"] == 0.0
    prompt = sent["messages"][0]["content"]
    assert "Reference answer: 1/2" in prompt or "Reference answer: 3" in prompt
    assert prompt.rstrip().endswith("Yes or No.")


def test_verifier_timeout_retries_then_gives_up(verifier_server):
    url = verifier_server
    _FakeVerifier.mode = "sleep"
    client = VerifierClient(url, timeout_s=0.3, retries=1)
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="timed out"):
        assert client.judge([""], ["1"], ["1"]) == [None]
    assert len(_FakeVerifier.requests) == 2 and time.monotonic() - t0 < 3.0


def test_verifier_deadline_is_total_for_a_trickling_server(verifier_server):
    # every socket read gets a byte within 0.2 s, so a per-read timeout never fires: the deadline
    # must be total
    url = verifier_server
    _FakeVerifier.mode = "trickle"
    client = VerifierClient(url, timeout_s=1.0, retries=0)
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="timed out"):
        assert client.judge(["q"], ["1"], ["2"]) == [None]
    assert time.monotonic() - t0 < 2.0


def test_verifier_timeouts_trip_the_cooldown(verifier_server):
    # a hung verifier: the first wave of calls times out (with its retry), the rest of the batch and
    # the next batch skip it for down_cooldown_s instead of waiting
    # ceil(n / concurrency) x (retries + 1) x timeout again
    url = verifier_server
    _FakeVerifier.mode = "hang"
    client = VerifierClient(url, timeout_s=0.5, retries=1, concurrency=4)
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="timed out"):
        assert client.judge(["q"] * 16, ["1"] * 16, ["2"] * 16) == [None] * 16
    first = time.monotonic() - t0
    t0 = time.monotonic()
    assert client.judge(["q"] * 16, ["1"] * 16, ["2"] * 16) == [None] * 16
    second = time.monotonic() - t0
    assert first < 2.0 and second < 0.2, (first, second)
    assert len(_FakeVerifier.requests) == 8   # 4 calls x 2 attempts, then nothing until the cooldown ends


def test_verifier_retries_server_errors(verifier_server):
    url = verifier_server
    _FakeVerifier.mode = "http500"
    client = VerifierClient(url + "/v1", retries=2)   # ".../v1" is completed to /v1/chat/completions
    with pytest.warns(RuntimeWarning, match="HTTP 500"):
        assert client.judge(["q"], ["1"], ["2"]) == [None]
    assert len(_FakeVerifier.requests) == 3


def test_verifier_or_rule_in_score_batch(verifier_server):
    # eq. 2: accuracy = rule OR verifier; only rule-wrong items are sent to the verifier
    url = verifier_server
    _FakeVerifier.mode = "yes"
    cfg = RewardConfig(verifier_url=url)
    out = score_batch([THINK + "\\boxed{5}", THINK + "\\boxed{five}"], ["5", "5"], questions=["q", "How many?"], cfg=cfg)
    assert [o["rule"] for o in out] == [1.0, 0.0]
    assert [o["verifier"] for o in out] == [None, 1.0] and [o["accuracy"] for o in out] == [1.0, 1.0]
    assert len(_FakeVerifier.requests) == 1 and "How many?" in _FakeVerifier.requests[0]["messages"][0]["content"]
    assert rewards.last_stats.verifier_calls == 1 and rewards.last_stats.verifier_yes == 1
    _FakeVerifier.mode = "no"
    out = score_batch([THINK + "\\boxed{six}"], ["5"], cfg=cfg)
    assert out[0]["verifier"] == 0.0 and out[0]["accuracy"] == 0.0


def test_verifier_server_down_warns_once_and_falls_back():
    cfg = RewardConfig(verifier_url=f"http://127.0.0.1:{stub_server.unused_port()}", verifier_retries=1)
    with pytest.warns(RuntimeWarning, match="unreachable") as caught:
        out = score_batch([THINK + "\\boxed{6}", THINK + "\\boxed{7}", THINK + "\\boxed{5}"], ["5"] * 3, cfg=cfg)
        out2 = score_batch([THINK + "\\boxed{8}"], ["5"], cfg=cfg)
    assert len([w for w in caught if "verifier" in str(w.message)]) == 1
    assert [o["accuracy"] for o in out] == [0.0, 0.0, 1.0] and out2[0]["accuracy"] == 0.0
    assert all(o["verifier"] is None for o in out + out2)
    assert rewards.last_stats.verifier_fallbacks == 1
    assert rewards.total_stats.verifier_fallbacks >= 3


def test_verifier_reply_body_is_capped(verifier_server):
    url = verifier_server
    _FakeVerifier.mode = "huge"
    client = VerifierClient(url, retries=0, max_reply_bytes=1 << 20)
    with pytest.warns(RuntimeWarning, match="reply body over 1048576 bytes"):
        assert client.judge(["q"], ["1"], ["2"]) == [None]
    assert client.outcomes == {"timeouts": 0, "failures": 1, "skipped": 0}
    with pytest.raises(rewards.ReplyTooLarge):
        rewards.post_json(url + "/v1/chat/completions", {}, 5.0, max_bytes=1000)


def test_verifier_api_key_from_the_named_environment_variable(verifier_server, monkeypatch):
    """The config names the variable, the key goes out as a Bearer header; unset, it is an error at once (a
    key-protected verifier answered 401 to every call, silently scoring rule-only)."""
    url = verifier_server
    _FakeVerifier.mode = "auth"
    cfg = RewardConfig(verifier_url=url, verifier_api_key_env="R1V3_TEST_VERIFIER_KEY")
    assert TEST_KEY not in json.dumps(dataclasses.asdict(cfg))
    monkeypatch.delenv("R1V3_TEST_VERIFIER_KEY", raising=False)
    with pytest.raises(ValueError, match="verifier_api_key_env='R1V3_TEST_VERIFIER_KEY': the environment variable"):
        score_batch([THINK + "\\boxed{five}"], ["5"], cfg=cfg)
    monkeypatch.setenv("R1V3_TEST_VERIFIER_KEY", TEST_KEY)
    out = score_batch([THINK + "\\boxed{five}"], ["5"], cfg=cfg)
    assert out[0]["verifier"] == 1.0 and rewards.last_stats.verifier_failures == 0
    monkeypatch.setenv("R1V3_TEST_VERIFIER_KEY", "a-wrong-key")
    with pytest.warns(RuntimeWarning, match="HTTP 401"):
        out = score_batch([THINK + "\\boxed{five}"], ["5"], cfg=cfg)
    assert out[0]["verifier"] is None and rewards.last_stats.verifier_failures == 1   # counted, every batch


def test_verifier_outcomes_are_counted_per_batch(verifier_server):
    url = verifier_server
    _FakeVerifier.mode = "hang"
    cfg = RewardConfig(verifier_url=url, verifier_timeout_s=0.3, verifier_retries=0, verifier_concurrency=1)
    with pytest.warns(RuntimeWarning, match="timed out"):
        score_batch([THINK + "\\boxed{six}", THINK + "\\boxed{seven}"], ["5", "5"], cfg=cfg)
    stats = rewards.last_stats
    assert (stats.verifier_calls, stats.verifier_fallbacks, stats.verifier_timeouts, stats.verifier_skipped) == \
        (2, 2, 1, 1)   # the first call timed out and opened the circuit: the second was not sent
    assert rewards.verifier_circuit_open(cfg) and not rewards.verifier_circuit_open(RewardConfig())


# -------------------------------------------------------------------------------------------- CLI

def test_cli_round_trip(tmp_path):
    rows = [
        {"response": THINK + "\\boxed{B}", "answer": "B", "options": {"A": "1", "B": "2"}, "question": "q"},
        {"response": THINK + "The answer is \\boxed{\\frac{1}{2}}", "answer": "$0.5$"},
        {"response": "no think \\boxed{3}", "answer": "4"},
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = subprocess.run([sys.executable, str(REPO / "rewards.py"), "--jsonl", str(src), "--out", str(dst)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [o["answer"] for o in out] == ["B", "$0.5$", "4"]          # same order, input kept
    assert [o["accuracy"] for o in out] == [1.0, 1.0, 0.0]
    assert [o["format"] for o in out] == [1.0, 1.0, 0.0]
    assert [o["reward"] for o in out] == pytest.approx([1.0, 1.0, 0.0])
    assert [o["extracted"] for o in out] == ["B", "\\frac{1}{2}", "3"]
    assert "accuracy 0.667" in result.stdout


def test_cli_bad_line_names_file_and_line(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"response": "x", "answer": "1"}) + "\n" + json.dumps({"response": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'answer'"):
        rewards.main(["--jsonl", str(src), "--out", str(tmp_path / "o.jsonl")])


def test_claims_unseen_image_reads_the_thinking_only():
    # one list for grpo.py's blind_phrase_rate and eval.py's Table 5, matched in the thinking only
    assert rewards.claims_unseen_image("<think>I can\u2019t see the image, so I guess.</think>B")
    assert rewards.claims_unseen_image("I CANNOT SEE THE IMAGE, and the answer is")     # no </think>: all thinking
    assert rewards.claims_unseen_image("我看不到图片，只能猜。</think>A")
    assert not rewards.claims_unseen_image("<think>The bars are 3, 4, 5.</think>I can't see the image.")
    assert not rewards.claims_unseen_image("<think>I can't see the image</think>A", ["no image provided"])
    assert len(set(rewards.UNSEEN_IMAGE_PHRASES)) == len(rewards.UNSEEN_IMAGE_PHRASES)
