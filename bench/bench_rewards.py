"""
Benchmark for rewards.py and rule_check.py: scoring one GRPO episode of 1024 responses, and 32
adversarial inputs (their total).

    cd /work/main && .venv/bin/python bench/bench_rewards.py [--n=1024] [--wrong=0.3] [--num_workers=2]
        [--math_verify_only=True]   # baseline: Math-Verify alone on everything but multiple-choice letters

Responses are built from the real MM-EUREKA K12 gold answers (../shared/data/mm-eureka-k12/k12.json):
a ~1.5 KB <think> block, then "The answer is \\boxed{...}". Correct ones box the gold without its $...$;
wrong ones (30%) box the gold with its last number changed (the usual failure: right form, wrong value),
or another random gold when the gold has no number. Target: <= 2 s per 1024 on 2 cores (rule checker).
"""
import json
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import configurator  # noqa: E402
import rewards  # noqa: E402
import math_verify_pool  # noqa: E402
import rule_check  # noqa: E402

K12 = Path(__file__).resolve().parents[1] / "../shared/data/mm-eureka-k12/k12.json"
THOUGHT = ("Let me look at the figure carefully. The triangle has sides 3, 4 and 5, so it is a right triangle. "
           "Then the area is \\frac{1}{2} \\cdot 3 \\cdot 4 = 6. Wait, let me double-check the question. ") * 8


def clean(gold: str) -> str:
    return gold.replace("$", "").strip().rstrip(".").strip()


def make_episode(golds: list[str], n: int, wrong_rate: float, seed: int = 0):
    rng = random.Random(seed)
    responses, answers = [], []
    for _ in range(n):
        gold = rng.choice(golds)
        boxed = clean(gold)
        if rng.random() < wrong_rate:
            numbers = list(re.finditer(r"\d+", boxed))
            if numbers:
                m = numbers[-1]
                boxed = boxed[:m.start()] + str(int(m.group()) + rng.randint(1, 9)) + boxed[m.end():]
            else:
                boxed = clean(rng.choice(golds))
        responses.append(f"{THOUGHT}\n</think>\nSo the final answer is $\\boxed{{{boxed}}}$.")
        answers.append(gold)
    return responses, answers


def clear_caches():
    rewards._CACHE.clear()
    for cached in (rule_check._canon_cached, rule_check._readings, rule_check._numeric_verdict):
        cached.cache_clear()


def math_verify_only(answer_text, extracted, gold, options, max_chars,
                     fast_verdict=rule_check.fast_verdict):
    # the baseline the issue asks for: Math-Verify alone (with the cache and de-duplication); letters stay ours
    # (Math-Verify reads "B" as a symbol), and so does the empty answer
    if not extracted and not answer_text:
        return False, "empty answer"
    if rule_check._gold_letter(gold, rule_check._option_letters(options)) is not None:
        return fast_verdict(answer_text, extracted, gold, options, max_chars)
    return None, "math-verify"


OPTIONS = {"A": "1", "B": "2", "C": "3", "D": "4"}
MB = 999_000   # so that every input stays under 1 MB
THINK = "<think>\nhmm\n</think>\n\n"
# The 32 adversarial inputs (name, response, gold, options), each <= ~1 MB. tests/test_rule_check.py runs them with a
# hard per-item limit of timeout_s + 1 s. The multiple-choice ones hit the letter regexes (once O(N^4) in N blanks).
ADVERSARIAL = [
    ("MC: answer + 1,000 newlines", THINK + "So the answer" + "\n" * 1000 + ".", "B", OPTIONS),
    ("MC: answer + 1 MB newlines", THINK + "So the answer" + "\n" * MB + ".", "B", OPTIONS),
    ("MC: answer is + 1 MB spaces", THINK + "The answer is" + " " * MB + "?", "B", OPTIONS),
    ("MC: option + 1 MB tabs + digit", THINK + "option" + "\t" * MB + "1", "B", OPTIONS),
    ("MC: boxed option + 3,000 spaces", THINK + "\\boxed{option" + " " * 3000 + "1}", "B", OPTIONS),
    ("MC: boxed option + 1 MB spaces", THINK + "\\boxed{option" + " " * MB + "1}", "B", OPTIONS),
    ("MC: choice + 1 MB ' *'", THINK + "choice:" + " *" * (MB // 2) + "!", "B", OPTIONS),
    ("MC: answer is ( + 1 MB spaces", THINK + "answer is (" + " " * MB + "1)", "B", OPTIONS),
    ("MC: 1 MB of 'answer is b '", THINK + "answer is b " * (MB // 12), "B", OPTIONS),
    ("MC: boxed letter + 1 MB spaces + x", THINK + "\\boxed{option B" + " " * MB + "x}", "B", OPTIONS),
    ("MC: 1 MB gold option text", THINK + "\\boxed{C}", "B", {"A": "x" * MB, "B": "2", "C": "3"}),
    ("1 MB think", "<think>" + "a" * MB + "</think>\\boxed{3}", "3", None),
    ("1 MB answer", THINK + "1+" * (MB // 2), "3", None),
    ("1 MB boxed content", THINK + "\\boxed{" + "x+" * (MB // 2) + "1}", "3", None),
    ("1 MB gold", THINK + "\\boxed{3}", "1+" * (MB // 2), None),
    ("5000 nested braces", THINK + "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}", "3", None),
    ("5000 unclosed braces", THINK + "\\boxed{" + "{" * 5000 + "1", "3", None),
    ("2000 \\left(", THINK + "\\boxed{" + "\\left(" * 2000 + "1}", "3", None),
    ("10,000 unclosed \\boxed{", THINK + "\\boxed{" * 10_000, "3", None),
    ("10,000 \\boxed{1}", THINK + "\\boxed{1}" * 10_000, "3", None),
    ("tower 9^{9^{9^{9}}}", THINK + "\\boxed{9^{9^{9^{9}}}}", "9^{9^{9^{8}}}", None),
    ("tower 2^2^2^2^2^2", THINK + "\\boxed{2^{2^{2^{2^{2^{2}}}}}}", "3", None),
    ("10^{10^{10}}+1", THINK + "\\boxed{10^{10^{10}}+1}", "3", None),
    ("(10^{10})!", THINK + "\\boxed{(10^{10})!}", "3", None),
    ("\\frac depth 500", THINK + "\\boxed{" + "\\frac{1}{" * 500 + "2" + "}" * 500 + "}", "3", None),
    ("\\sqrt depth 500", THINK + "\\boxed{" + "\\sqrt{" * 500 + "9" + "}" * 500 + "}", "3", None),
    ("20k unicode garbage", THINK + "\\boxed{" + "a\u0301\u202e\u200b\x00\U0001F600" * 4000 + "}", "3", None),
    ("lone surrogates", THINK + "\\boxed{\ud800 3 \udfff}", "\ud800", None),
    ("100k-digit number", THINK + "\\boxed{" + "9" * 100_000 + "}", "3", None),
    ("(x+1)^{1000000}", THINK + "\\boxed{(x+1)^{1000000}}", "x^2+1", None),
    ("200x200 pmatrix", THINK + "\\boxed{\\begin{pmatrix}" + "\\\\".join(["&".join(["1"] * 200)] * 200)
     + "\\end{pmatrix}}", "3", None),
    ("300k **a", THINK + "**a" * 300_000, "3", None),
]


@dataclass
class Args:
    n: int = 1024                   # responses per episode
    wrong: float = 0.3              # share of wrong responses
    repeats: int = 3                # cold-cache episodes (the median is reported)
    num_workers: int = 2            # Math-Verify worker processes
    all_golds: bool = False         # include multi-part / sentence golds
    math_verify_only: bool = False  # skip rule_check.py's own checker except letters: Math-Verify decides the rest


def main():
    args = configurator.parse_config(Args)
    if args.math_verify_only:
        rule_check.fast_verdict = math_verify_only
    cfg = rewards.RewardConfig(num_workers=args.num_workers)
    golds = [r["answer"] for r in json.loads(K12.read_text())]
    if not args.all_golds:   # training-style golds: one line, short, no prose (LaTeX commands are fine)
        golds = [g for g in golds if "\n" not in g and len(g) <= 60 and not re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{4,}", g)]
    print(f"golds: {len(golds)} from {K12.name}; n={args.n}, wrong={args.wrong:.0%}, workers={args.num_workers}")

    t0 = time.perf_counter()
    math_verify_pool.start_rule_workers(cfg)
    print(f"worker start (spawn + Math-Verify import): {time.perf_counter() - t0:.2f} s")

    times = []
    for rep in range(args.repeats):
        responses, answers = make_episode(golds, args.n, args.wrong, seed=rep)
        clear_caches()                  # cold: every distinct (gold, answer) is checked again
        t0 = time.perf_counter()
        out = rewards.score_batch(responses, answers, cfg=cfg)
        times.append(time.perf_counter() - t0)
        acc = sum(o["accuracy"] for o in out) / len(out)
        print(f"episode {rep}: {times[-1]:.3f} s  accuracy {acc:.3f}  {json.dumps(rewards.last_stats.as_dict())}")
    t0 = time.perf_counter()
    rewards.score_batch(responses, answers, cfg=cfg)
    warm = time.perf_counter() - t0
    print(f"EPISODE {args.n} responses: median {statistics.median(times):.3f} s (cold cache), "
          f"{warm:.3f} s (warm cache); target <= 2 s")

    print(f"adversarial: {len(ADVERSARIAL)} inputs, timeout_s = {cfg.timeout_s:.1f} (limit per item: timeout_s + 1 s)")
    total = 0.0
    for name, response, gold, options in ADVERSARIAL:
        t0 = time.perf_counter()
        out = rewards.score_batch([response], [gold], [options], cfg=cfg)[0]
        dt = time.perf_counter() - t0
        total += dt
        print(f"  {name:36s} {dt:6.3f} s  acc={out['accuracy']:.0f} timed_out={out['timed_out']} "
              f"reason={out['reason'][:40]!r}")
    print(f"ADVERSARIAL {len(ADVERSARIAL)} inputs: total {total:.2f} s")
    kill_cfg = rewards.RewardConfig(num_workers=args.num_workers, timeout_s=0.5)   # below the 1 s SIGALRM
    t0 = time.perf_counter()
    out = rewards.score_batch([THINK + "\\boxed{5^{5^{5^{5^{5}}}}}"], ["3"], cfg=kill_cfg)[0]
    print(f"  {'power tower, hard kill':22s} {time.perf_counter() - t0:6.3f} s  timed_out={out['timed_out']} "
          f"reason={out['reason']!r} restarts={rewards.last_stats.worker_restarts} (timeout_s=0.5)")
    math_verify_pool.shutdown_pool()


if __name__ == "__main__":
    main()
