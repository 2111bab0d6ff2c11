"""Tests for rule_check.py (R_rule, eq. 2): the verdict table (in process and through the
workers), the K12 golds, adversarial inputs, and the worker pool's hard time limit and restarts."""
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.append(str(REPO / "bench"))   # bench_rewards: the adversarial inputs
import bench_rewards  # noqa: E402
import rewards  # noqa: E402
import math_verify_pool  # noqa: E402
import rule_check  # noqa: E402
from rewards import RewardConfig, rule_accuracy, score_batch  # noqa: E402

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
    ("$2\\sin (2x-\\frac{\\pi }{6})$",
     THINK + "\\boxed{2\\sin\\left(2x-\\frac{\\pi}{6}\\right)}", True),
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


@pytest.mark.parametrize("case", CASES,
                         ids=[f"{i}:{c[0][:12]}|{c[1][-24:]}" for i, c in enumerate(CASES)])
def test_rule_table(case):
    gold, response, expected, options = _case_args(case)
    assert rule_accuracy(response, gold, options) is expected


def test_table_is_big_and_has_negatives():
    assert len(CASES) >= 60
    assert sum(not c[2] for c in CASES) >= 20


def test_table_through_workers_matches_in_process():
    # the same verdicts from score_batch (worker pool + in-process fast path) as from rule_accuracy
    golds, responses, expected, options = zip(*map(_case_args, CASES))
    # a generous per-item limit: the verdicts are under test here, not the hard timeout (its own tests below);
    # the default 5 s timed out once on a CI box under load
    out = score_batch(list(responses), list(golds), list(options), cfg=RewardConfig(timeout_s=60.0))
    wrong = [(g, r[-40:], o["reason"]) for g, r, e, o in zip(golds, responses, expected, out)
             if o["rule"] != float(e)]
    assert not wrong, wrong
    assert rewards.last_stats.items == len(CASES) and rewards.last_stats.timeouts == 0


POLICY = [   # rule_check.py's docstring: the policy for a gold that is one number (all right before it)
    ("3", "\\boxed{0=3}", False, "an equation that does not hold"),
    ("3", "\\boxed{2+1=3}", True, "equation of numbers"),
    ("0", "\\boxed{0\\|1\\|2\\|3}", False, "several candidate answers"),
    ("0", "\\boxed{0|1|2|3}", False, "several candidate answers"),
    ("0", "\\boxed{x=0 \\lor x=3}", False, "several candidate answers"),
    ("1", "\\boxed{1<1<1<1<1}", False, "a relation, not a value"),
    ("1", "\\boxed{1<1<\\ldots<1}", False, "a relation, not a value"),
    ("1", "\\boxed{1 \\le 1}", False, "a relation, not a value"),
    ("3", "\\boxed{| left: 3 can Green count: 3 =D}", True, "the one number in prose"),
    ("3", "\\boxed{3 shapes}", True, "the one number in prose"),
    ("3", "\\boxed{2 apples and 3 pears}", False, "several different numbers in prose"),
    ("1500", "\\boxed{1,500 apples}", True, "the one number in prose"),
    ("3", "\\boxed{|-3|}", True, "math-verify"),   # absolute value bars are not a hedge
    ("2^{65536}", "\\boxed{2^{65536}}", True, "exact"),
    # the stated limit: a tower beyond float range is not evaluated (Math-Verify does not either)
    ("2^{65536}", "\\boxed{2^{2^{2^{2^2}}}}", False, "math-verify: not equal"),
]


@pytest.mark.parametrize("gold, response, expected, reason", POLICY, ids=[p[1] for p in POLICY])
def test_policy_for_hedges_relations_and_towers(gold, response, expected, reason):
    out = score_batch([THINK + response], [gold], cfg=RewardConfig(num_workers=0))[0]
    assert (out["rule"], out["reason"]) == (float(expected), reason)


# -------------------------------------------------------------------------------------- K12 golds

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
    print(f"\nK12 gold vs a different random gold: {len(matches)}/{len(golds)} = {rate:.2%} "
          f"verify; {matches}")
    assert rate <= 0.01
    for gold, other in matches:   # a "match" is only allowed between golds of equal value
        assert _plain(gold) == _plain(other), (gold, other)


# ------------------------------------------------------------------------------------ adversarial

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
    math_verify_pool.start_rule_workers(cfg)
    t0 = time.monotonic()
    out = score_batch([ADVERSARIAL[name]], ["3"], cfg=cfg)[0]
    elapsed = time.monotonic() - t0
    assert elapsed < cfg.timeout_s + 1.0, (name, elapsed, out)
    assert out["accuracy"] == (1.0 if name == "NUL and RTL" else 0.0), out
    assert 0.0 <= out["reward"] <= 1.0


# the child scores bench/bench_rewards.py's 32 adversarial inputs one at a time and reports each;
# the parent kills it when one item runs past the limit (a catastrophic regex runs in C and cannot
# be interrupted from inside)
_ADVERSARIAL_CHILD = """
import json, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/bench"]
import bench_rewards, math_verify_pool, rewards
cfg = rewards.RewardConfig(timeout_s=float(sys.argv[2]))
math_verify_pool.start_rule_workers(cfg)
print("ready", flush=True)
for name, response, gold, options in bench_rewards.ADVERSARIAL:
    t0 = time.monotonic()
    out = rewards.score_batch([response], [gold], [options], cfg=cfg)[0]
    result = {"name": name, "seconds": time.monotonic() - t0, "accuracy": out["accuracy"]}
    print(json.dumps(result), flush=True)
"""


def test_32_adversarial_inputs_each_within_timeout_plus_1s():
    timeout_s = 2.0
    child = subprocess.Popen([sys.executable, "-c", _ADVERSARIAL_CHILD, str(REPO), str(timeout_s)],
                             stdout=subprocess.PIPE, text=True)
    names, results = [n for n, *_ in bench_rewards.ADVERSARIAL], []
    try:
        limit = 120.0   # the worker pool's start (spawn + imports), then timeout_s + 1 s per item
        for expected in ["ready"] + names:
            ready, _, _ = select.select([child.stdout], [], [], limit)
            line = child.stdout.readline() if ready else ""
            assert line, f"{expected!r}: no result within {limit:.0f} s (hung; child killed)"
            if expected != "ready":
                results.append(json.loads(line))
                assert results[-1]["name"] == expected
            # + pipe and scheduling slack; the child's own clock is checked below
            limit = timeout_s + 1.0 + 0.5
    finally:
        child.kill()   # the child we started, by its own handle
        child.wait()
    slow = [(r["name"], round(r["seconds"], 2)) for r in results if r["seconds"] > timeout_s + 1.0]
    assert len(results) == 32 and not slow, slow
    correct = {r["name"] for r in results if r["accuracy"] == 1.0}
    assert correct == {"1 MB think", "MC: 1 MB of 'answer is b '",
                       "MC: boxed letter + 1 MB spaces + x"}, correct


def test_hung_item_is_killed_counted_and_pool_recovers():
    # timeout_s below Math-Verify's own 1 s SIGALRM: only the hard kill can stop the power tower
    cfg = RewardConfig(timeout_s=0.5)
    assert math_verify_pool.start_rule_workers(cfg)
    t0 = time.monotonic()
    out = score_batch([THINK + "\\boxed{5^{5^{5^{5^{5}}}}}", THINK + "\\boxed{4}"], ["3", "4"],
                      cfg=cfg)
    assert time.monotonic() - t0 < 2.5
    assert out[0]["timed_out"] and out[0]["reason"] == "timeout" and out[0]["accuracy"] == 0.0
    assert out[1]["accuracy"] == 1.0
    assert rewards.last_stats.timeouts == 1 and rewards.last_stats.worker_restarts == 1
    out = score_batch([THINK + "\\boxed{1<x}"], ["$x>1$"])   # Math-Verify on the replacement pool
    assert out[0]["accuracy"] == 1.0 and rewards.last_stats.worker_checks == 1, out


def test_dead_worker_is_replaced():
    cfg = RewardConfig()
    assert math_verify_pool.start_rule_workers(cfg)
    victim = math_verify_pool._POOL.schedule(os.getpid).result(timeout=10)   # a worker we started
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while math_verify_pool._POOL.active and time.monotonic() < deadline:   # pebble's tick is 0.1 s
        time.sleep(0.05)
    out = score_batch([THINK + "\\boxed{x<2}"], ["$2>x$"], cfg=cfg)
    assert out[0]["accuracy"] == 1.0 and rewards.last_stats.worker_restarts >= 1


