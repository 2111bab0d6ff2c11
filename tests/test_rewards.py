"""Tests for rewards.py: format reward (eq. 1), extraction, rule accuracy, verifier client, eq. 2-3, pool, CLI."""
import http.server
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import rewards  # noqa: E402
from rewards import RewardConfig, VerifierClient, extract_answer, format_reward, rule_accuracy, score_batch  # noqa: E402

K12 = Path(__file__).parents[1] / "../shared/data/mm-eureka-k12/k12.json"
THINK = "<think>\nLet me work it out.\n</think>\n"
OPTIONS = {"A": "30°", "B": "45°", "C": "60°", "D": "$\\frac{1}{2}$"}

# (gold, response, expected[, options]); responses without </think> are scored on the whole text
CASES = [
    # multiple choice: our own letter rules, every common form
    ("B", THINK + "\\boxed{B}", True),
    ("B", "The answer is (B).", True),
    ("B", "B. 45°", True),
    ("B", "so the answer is b", True),
    ("B", "\\boxed{\\text{B}}", True),
    ("C", "\\boxed{\\text{(C)}}", True),
    ("D", "Final choice: **D**", True),
    ("A", "Option (A) is correct.", True),
    ("$$A$$", "Answer: A", True),
    ("(B)", "\\boxed{B}", True),
    ("B", "\\boxed{(C)}", False),
    ("C", "The answer is 5", False),
    ("A", "A quadrilateral with equal sides.", False),
    ("A", "first \\boxed{A}, no wait: \\boxed{B}", False),
    ("B", THINK + "\\boxed{45°}", True, OPTIONS),      # option text mapped back to its letter
    ("B", THINK + "\\boxed{30^\\circ}", False, OPTIONS),
    ("D", THINK + "\\boxed{0.5}", True, OPTIONS),
    ("45°", THINK + "\\boxed{B}", True, OPTIONS),        # gold given as option text
    ("45°", THINK + "\\boxed{A}", False, OPTIONS),
    # numbers: tolerance, fractions, percent, degrees, units
    ("$\\frac{1}{\\sqrt3}$", THINK + "\\boxed{\\frac{\\sqrt{3}}{3}}", True),
    ("$$\\dfrac{3}{2}$$", THINK + "\\boxed{1.5}", True),
    ("$\\frac{1}{3}$", THINK + "\\boxed{0.333}", False),
    ("$\\frac{1}{3}$", THINK + "\\boxed{0.333333}", True),
    ("$1\\frac{1}{4}$", THINK + "\\boxed{\\frac{5}{4}}", True),
    ("3", THINK + "\\boxed{4}", False),
    ("-3", THINK + "\\boxed{3}", False),
    ("1,500", THINK + "\\boxed{1500}", True),
    ("30°", THINK + "\\boxed{30}", True),
    ("$$20^{\\circ}$$", THINK + "\\boxed{20°}", True),
    ("30${}^\\circ $", THINK + "\\boxed{30^{\\circ}}", True),
    ("30°", THINK + "\\boxed{\\frac{\\pi}{6}}", False),
    ("$$0.49$$", THINK + "\\boxed{49\\%}", True),
    ("75%", THINK + "\\boxed{0.75}", True),
    ("75%", THINK + "\\boxed{0.7}", False),
    ("4286m", THINK + "\\boxed{4286}", True),
    ("40m.", THINK + "\\boxed{40\\text{ m}}", True),
    ("4 cm²", THINK + "\\boxed{4\\,\\text{cm}^2}", True),
    ("12 meters.", THINK + "\\boxed{12}", True),
    ("12 meters.", THINK + "\\boxed{13}", False),
    ("2π", THINK + "\\boxed{2\\pi}", True),
    ("2π", THINK + "\\boxed{6.28}", False),
    ("$$108\\mathrm \\pi$$", THINK + "\\boxed{108\\pi}", True),
    ("$$\\number{7500}$$", THINK + "\\boxed{7500}", True),
    ("$4\\sqrt{3}$", THINK + "\\boxed{√48}", True),
    ("$$2\\sqrt{2}$$", THINK + "\\boxed{\\sqrt{8}}", True),
    ("$$9+4\\sqrt{5}$$", THINK + "\\boxed{4\\sqrt{5}+9}", True),
    ("$$x=\\dfrac{3}{2}$$", THINK + "\\boxed{x = 1.5}", True),
    ("$$x=\\dfrac{3}{2}$$", THINK + "\\boxed{1.5}", True),
    # expressions, equations, tuples, intervals, relations (numeric identity or Math-Verify)
    ("$5n-4$", THINK + "\\boxed{-4+5n}", True),
    ("$5n-4$", THINK + "\\boxed{5n+4}", False),
    ("$\\frac{{{2}^{n}}-1}{{{2}^{n}}}$", THINK + "\\boxed{1-\\frac{1}{2^n}}", True),
    ("$\\sqrt{a^{2}+3b^{2}}$", THINK + "\\boxed{\\sqrt{3b^2+a^2}}", True),
    ("$$y=-3x+18$$", THINK + "\\boxed{y = 18 - 3x}", True),
    ("$$\\dfrac{x^{2}}{8}+\\dfrac{y^{2}}{4}=1$$", THINK + "\\boxed{x^2+2y^2=8}", True),
    ("$2\\sin (2x-\\frac{\\pi }{6})$", THINK + "\\boxed{2\\sin\\left(2x-\\frac{\\pi}{6}\\right)}", True),
    ("$2\\sin (2x-\\frac{\\pi }{6})$", THINK + "\\boxed{2\\sin(2x+\\frac{\\pi}{6})}", False),
    ("$(x+1)^2$", THINK + "\\boxed{x^2+2x+1}", True),
    ("AC=BD", THINK + "\\boxed{BD=AC}", True),
    ("AC=BD", THINK + "\\boxed{OE=4EF}", False),
    ("$$a^2-b^2=(a+b)(a-b)$$", THINK + "\\boxed{a^2-b^5=(a+b)(a-b)}", False),
    ("(7, 3)", THINK + "\\boxed{(7,3)}", True),
    ("(7, 3)", THINK + "\\boxed{(3,7)}", False),
    ("$$[-4,3]$$", THINK + "\\boxed{[-4, 3]}", True),
    ("$$[-4,3]$$", THINK + "\\boxed{(-4,3)}", False),
    ("$x > 1$", THINK + "\\boxed{1 < x}", True),
    ("$x > 1$", THINK + "\\boxed{x \\geq 1}", False),
    ("$$x \\geqslant 2$$", THINK + "\\boxed{x\\ge 2}", True),
    ("$\\{1,2\\}$", THINK + "\\boxed{\\{2,1\\}}", True),
    ("6 or 2 or 10", THINK + "\\boxed{2, 6, 10}", True),
    ("9\n19\n5\n9", THINK + "\\boxed{9, 19, 5, 9}", True),
    ("1.3.4.5.", THINK + "\\boxed{1, 3, 4, 5}", True),
    ("1.3.4.5.", THINK + "\\boxed{1.3.4}", False),
    ("$$1:\\sqrt{3}$$", THINK + "\\boxed{1:\\sqrt3}", True),
    ("$2:3$", THINK + "\\boxed{3:2}", False),
    ("$ < $", THINK + "\\boxed{<}", True),
    ("$ < $", THINK + "\\boxed{>}", False),
    # text and messy K12 golds
    ("Equal", THINK + "\\boxed{\\text{equal}}", True),
    ("Yes", THINK + "\\boxed{No}", False),
    ("$$0.49$$", THINK + "\\boxed{yes}", False),
    ("Thus, the number of students is approximately 300.", THINK + "\\boxed{300}", True),
    # extraction: after the last </think>, last balanced box, answer phrases, last line
    ("5", "<think>\nthe answer is 3\n</think>\nThe answer is 5.", True),
    ("3", "<think>\nthe answer is 3\n</think>\nThe answer is 5.", False),
    ("5", "I first got \\boxed{3}, which is wrong; final: \\boxed{5}", True),
    ("$\\frac{8}{3}$", "Answer: $\\frac{8}{3}$.", True),
    ("7", "Therefore the result is **7**", True),
    ("7", "some work\n7", True),
    ("7", "", False),
    ("7", THINK, False),
]


def _case_args(case):
    gold, response, expected = case[:3]
    return gold, response, expected, (case[3] if len(case) > 3 else None)


@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{c[0][:12]}|{c[1][-24:]}" for i, c in enumerate(CASES)])
def test_rule_table(case):
    gold, response, expected, options = _case_args(case)
    assert rule_accuracy(response, gold, options) is expected


def test_table_is_big_and_has_negatives():
    assert len(CASES) >= 60
    assert sum(not c[2] for c in CASES) >= 20


def test_table_through_workers_matches_in_process():
    # the same verdicts from score_batch (worker pool + in-process fast path) as from rule_accuracy
    golds, responses, expected, options = zip(*map(_case_args, CASES))
    out = score_batch(list(responses), list(golds), list(options))
    wrong = [(g, r[-40:], o["reason"]) for g, r, e, o in zip(golds, responses, expected, out) if o["rule"] != float(e)]
    assert not wrong, wrong
    assert rewards.last_stats.items == len(CASES) and rewards.last_stats.timeouts == 0


# ------------------------------------------------------------------------------------------------ eq. 1

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


# ------------------------------------------------------------------------------------------------ eqs. 2-3

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


# ------------------------------------------------------------------------------------------------ K12 golds

def _k12_golds():
    if not K12.exists():
        pytest.skip(f"K12 data not found at {K12.resolve()} (shared data not mounted)")
    return [r["answer"] for r in json.loads(K12.read_text())]


def _plain(gold: str) -> str:
    # independent of rewards.py: drop $, spaces, degree marks and trailing dots
    s = re.sub(r"\$|\s|\\,|°|\^\{?\\circ\}?|\\number\{([^}]*)\}", lambda m: m.group(1) or "", gold)
    return s.rstrip(".").replace("\\dfrac", "\\frac")


def test_k12_golds_verify_against_themselves():
    golds = _k12_golds()
    assert len(golds) == 500
    out = score_batch(golds, golds)   # the gold text as the response
    failed = [g for g, o in zip(golds, out) if o["accuracy"] != 1.0]
    assert not failed, failed[:10]
    boxed = [THINK + "The answer is $\\boxed{" + g.replace("$", "").strip() + "}$" for g in golds]
    failed = [g for g, o in zip(golds, score_batch(boxed, golds)) if o["accuracy"] != 1.0]
    assert not failed, failed[:10]


def test_k12_gold_vs_random_other_gold():
    golds = _k12_golds()
    rng = random.Random(0)
    perm = list(range(len(golds)))
    while any(i == p for i, p in enumerate(perm)):   # a derangement: never a gold against itself
        rng.shuffle(perm)
    others = [golds[p] for p in perm]
    out = score_batch(others, golds)
    matches = [(g, o) for g, o, r in zip(golds, others, out) if r["accuracy"] == 1.0]
    rate = len(matches) / len(golds)
    print(f"\nK12 gold vs a different random gold: {len(matches)}/{len(golds)} = {rate:.2%} verify; {matches}")
    assert rate <= 0.01
    for gold, other in matches:   # a "match" is only allowed between golds of equal value
        assert _plain(gold) == _plain(other), (gold, other)


# ------------------------------------------------------------------------------------------------ adversarial

ADVERSARIAL = {
    "100 KB": THINK + "1+" * 50_000 + " so the answer is \\boxed{" + "x+" * 300 + "1}",
    "100 KB no box": "<think>" + "a" * 100_000,
    "5000 nested braces": THINK + "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
    "5000 open braces": THINK + "\\boxed{" + "{" * 5000,
    "power tower": THINK + "\\boxed{5^{5^{5^{5^{5}}}}}",
    "NUL and RTL": THINK + "\\boxed{\x00\u202e3\u202c\x00}\x00",
    "empty": "",
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_inputs_return_within_timeout(name):
    cfg = RewardConfig(timeout_s=2.0)
    rewards.start_rule_workers(cfg)
    t0 = time.monotonic()
    out = score_batch([ADVERSARIAL[name]], ["3"], cfg=cfg)[0]
    elapsed = time.monotonic() - t0
    assert elapsed < cfg.timeout_s + 1.0, (name, elapsed, out)
    assert out["accuracy"] == (1.0 if name == "NUL and RTL" else 0.0), out
    assert 0.0 <= out["reward"] <= 1.0


# the child scores bench/bench_rewards.py's 32 adversarial inputs one at a time and reports each; the parent kills it
# when one item runs past the limit (a catastrophic regex runs in C and cannot be interrupted from inside)
_ADVERSARIAL_CHILD = """
import json, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/bench"]
import rewards, bench_rewards
cfg = rewards.RewardConfig(timeout_s=float(sys.argv[2]))
rewards.start_rule_workers(cfg)
print("ready", flush=True)
for name, response, gold, options in bench_rewards.ADVERSARIAL:
    t0 = time.monotonic()
    out = rewards.score_batch([response], [gold], [options], cfg=cfg)[0]
    print(json.dumps({"name": name, "seconds": time.monotonic() - t0, "accuracy": out["accuracy"]}), flush=True)
"""


def test_32_adversarial_inputs_each_within_timeout_plus_1s():
    import select
    timeout_s = 2.0
    child = subprocess.Popen([sys.executable, "-c", _ADVERSARIAL_CHILD, str(REPO), str(timeout_s)],
                             stdout=subprocess.PIPE, text=True)
    sys.path.insert(0, str(REPO / "bench"))
    import bench_rewards
    names, results = [n for n, *_ in bench_rewards.ADVERSARIAL], []
    try:
        limit = 120.0   # the worker pool's start (spawn + Math-Verify import), then timeout_s + 1 s per item
        for expected in ["ready"] + names:
            ready, _, _ = select.select([child.stdout], [], [], limit)
            line = child.stdout.readline() if ready else ""
            assert line, f"{expected!r}: no result within {limit:.0f} s (hung; child killed)"
            if expected != "ready":
                results.append(json.loads(line))
                assert results[-1]["name"] == expected
            limit = timeout_s + 1.0 + 0.5   # + pipe and scheduling slack; the child's own clock is checked below
    finally:
        child.kill()   # the child we started, by its own handle
        child.wait()
    slow = [(r["name"], round(r["seconds"], 2)) for r in results if r["seconds"] > timeout_s + 1.0]
    assert len(results) == 32 and not slow, slow
    correct = {r["name"] for r in results if r["accuracy"] == 1.0}
    assert correct == {"1 MB think", "MC: 1 MB of 'answer is b '", "MC: boxed letter + 1 MB spaces + x"}, correct


def test_hung_item_is_killed_counted_and_pool_recovers():
    # timeout_s below Math-Verify's own 1 s SIGALRM: only the hard kill can stop the power tower
    cfg = RewardConfig(timeout_s=0.5)
    assert rewards.start_rule_workers(cfg)
    t0 = time.monotonic()
    out = score_batch([THINK + "\\boxed{5^{5^{5^{5^{5}}}}}", THINK + "\\boxed{4}"], ["3", "4"], cfg=cfg)
    assert time.monotonic() - t0 < 2.5
    assert out[0]["timed_out"] and out[0]["reason"] == "timeout" and out[0]["accuracy"] == 0.0
    assert out[1]["accuracy"] == 1.0
    assert rewards.last_stats.timeouts == 1 and rewards.last_stats.worker_restarts == 1
    out = score_batch([THINK + "\\boxed{1<x}"], ["$x>1$"])   # a Math-Verify item on the replacement pool
    assert out[0]["accuracy"] == 1.0 and rewards.last_stats.worker_checks == 1, out


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


def test_dead_worker_is_replaced():
    cfg = RewardConfig()
    assert rewards.start_rule_workers(cfg)
    victim = rewards._POOL.schedule(os.getpid).result(timeout=10)   # a worker we started, by its pid
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while rewards._POOL.active and time.monotonic() < deadline:   # pebble notices within its 0.1 s tick
        time.sleep(0.05)
    out = score_batch([THINK + "\\boxed{x<2}"], ["$2>x$"], cfg=cfg)
    assert out[0]["accuracy"] == 1.0 and rewards.last_stats.worker_restarts >= 1


# ------------------------------------------------------------------------------------------------ verifier

class _FakeVerifier(http.server.BaseHTTPRequestHandler):
    mode = "yes"
    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if self.mode == "sleep":
            time.sleep(1.5)
        if self.mode == "hang":   # a verifier that accepts the connection and never answers
            time.sleep(20)
            return
        if self.mode == "trickle":   # one byte every 0.2 s, headers included: ~20 s for the whole reply
            reply = b'HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n{"choices": [{"message": {"content": "Yes"}}]}'
            try:
                for byte in reply:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
            return
        if self.mode == "http500":
            self.send_response(500)
            self.end_headers()
            return
        content = {"yes": "Yes", "no": "No.", "garbage": "Maybe, it depends."}.get(self.mode, "Yes")
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):   # the client gave up (timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def verifier_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeVerifier)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _FakeVerifier.requests = []
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode,expected", [("yes", True), ("no", False), ("garbage", None)])
def test_verifier_verdicts(verifier_server, mode, expected):
    _, url = verifier_server
    _FakeVerifier.mode = mode
    client = VerifierClient(url, model="judge", timeout_s=5, retries=0, concurrency=4)
    assert client.judge(["q1", "q2"], ["1/2", "3"], ["0.5", "4"]) == [expected, expected]
    sent = _FakeVerifier.requests[0]
    assert sent["model"] == "judge" and sent["temperature"] == 0.0
    prompt = sent["messages"][0]["content"]
    assert "Reference answer: 1/2" in prompt or "Reference answer: 3" in prompt
    assert prompt.rstrip().endswith("Yes or No.")


def test_verifier_timeout_retries_then_gives_up(verifier_server):
    _, url = verifier_server
    _FakeVerifier.mode = "sleep"
    client = VerifierClient(url, timeout_s=0.3, retries=1)
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="timed out"):
        assert client.judge([""], ["1"], ["1"]) == [None]
    assert len(_FakeVerifier.requests) == 2 and time.monotonic() - t0 < 3.0


def test_verifier_deadline_is_total_for_a_trickling_server(verifier_server):
    # every socket read gets a byte within 0.2 s, so a per-read timeout never fires: the deadline must be total
    _, url = verifier_server
    _FakeVerifier.mode = "trickle"
    client = VerifierClient(url, timeout_s=1.0, retries=0)
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="timed out"):
        assert client.judge(["q"], ["1"], ["2"]) == [None]
    assert time.monotonic() - t0 < 2.0


def test_verifier_timeouts_trip_the_cooldown(verifier_server):
    # a hung verifier: the first wave of calls times out (with its retry), the rest of the batch and the next
    # batch skip it for down_cooldown_s instead of waiting ceil(n / concurrency) x (retries + 1) x timeout again
    _, url = verifier_server
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
    _, url = verifier_server
    _FakeVerifier.mode = "http500"
    client = VerifierClient(url + "/v1", retries=2)   # ".../v1" is completed to /v1/chat/completions
    with pytest.warns(RuntimeWarning, match="HTTP 500"):
        assert client.judge(["q"], ["1"], ["2"]) == [None]
    assert len(_FakeVerifier.requests) == 3


def test_verifier_or_rule_in_score_batch(verifier_server):
    # eq. 2: accuracy = rule OR verifier; only rule-wrong items are sent to the verifier
    _, url = verifier_server
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
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = RewardConfig(verifier_url=f"http://127.0.0.1:{port}", verifier_retries=1)
    with pytest.warns(RuntimeWarning, match="unreachable") as caught:
        out = score_batch([THINK + "\\boxed{6}", THINK + "\\boxed{7}", THINK + "\\boxed{5}"], ["5"] * 3, cfg=cfg)
        out2 = score_batch([THINK + "\\boxed{8}"], ["5"], cfg=cfg)
    assert len([w for w in caught if "verifier" in str(w.message)]) == 1
    assert [o["accuracy"] for o in out] == [0.0, 0.0, 1.0] and out2[0]["accuracy"] == 0.0
    assert all(o["verifier"] is None for o in out + out2)
    assert rewards.last_stats.verifier_fallbacks == 1
    assert rewards.total_stats.verifier_fallbacks >= 3


# ------------------------------------------------------------------------------------------------ CLI

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
