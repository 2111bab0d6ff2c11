"""
Benchmark for rewards.py: scoring one GRPO episode of 1024 responses, and adversarial inputs.

    cd /work/main && .venv/bin/python bench/bench_rewards.py [--n 1024] [--wrong 0.3] [--num_workers 2]

Responses are built from the real MM-EUREKA K12 gold answers (../shared/data/mm-eureka-k12/k12.json):
a ~1.5 KB <think> block, then "The answer is \\boxed{...}". Correct ones box the gold without its $...$;
wrong ones (30%) box the gold with its last number changed (the usual failure: right form, wrong value),
or another random gold when the gold has no number. Target: <= 2 s per 1024 on 2 cores (rule checker).
"""
import argparse
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rewards  # noqa: E402

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
    for cached in (rewards._canon_cached, rewards._readings, rewards._numeric_verdict):
        cached.cache_clear()


ADVERSARIAL = {
    "100 KB": "<think>\nhmm\n</think>\n" + "1+" * 50_000 + "\\boxed{" + "x^{2}+" * 2000 + "1}",
    "5000 nested braces": "</think>\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
    "5000 unclosed braces": "</think>\\boxed{" + "{" * 5000 + "1",
    "power tower": "</think>\\boxed{5^{5^{5^{5^{5}}}}}",
    "huge factorial": "</think>\\boxed{(10^{7})!}",
    "NUL + RTL chars": "</think>\\boxed{\x00\u202e3\u202c\x00}",
    "empty": "",
    "only </think>": "</think>",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--wrong", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--all_golds", action="store_true", help="include multi-part / sentence golds")
    args = parser.parse_args()
    cfg = rewards.RewardConfig(num_workers=args.num_workers)
    golds = [r["answer"] for r in json.loads(K12.read_text())]
    if not args.all_golds:   # training-style golds: one line, short, no prose (LaTeX commands are fine)
        golds = [g for g in golds if "\n" not in g and len(g) <= 60 and not re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{4,}", g)]
    print(f"golds: {len(golds)} from {K12.name}; n={args.n}, wrong={args.wrong:.0%}, workers={args.num_workers}")

    t0 = time.perf_counter()
    rewards.start_rule_workers(cfg)
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

    print("adversarial (timeout_s = %.1f):" % cfg.timeout_s)
    for name, response in ADVERSARIAL.items():
        t0 = time.perf_counter()
        out = rewards.score_batch([response], ["3"], cfg=cfg)[0]
        dt = time.perf_counter() - t0
        print(f"  {name:22s} {dt:6.3f} s  acc={out['accuracy']:.0f} timed_out={out['timed_out']} reason={out['reason']!r}")
    kill_cfg = rewards.RewardConfig(num_workers=args.num_workers, timeout_s=0.5)   # below the 1 s SIGALRM
    t0 = time.perf_counter()
    out = rewards.score_batch([ADVERSARIAL["power tower"]], ["3"], cfg=kill_cfg)[0]
    print(f"  {'power tower, hard kill':22s} {time.perf_counter() - t0:6.3f} s  timed_out={out['timed_out']} "
          f"reason={out['reason']!r} restarts={rewards.last_stats.worker_restarts} (timeout_s=0.5)")
    rewards.shutdown_pool()


if __name__ == "__main__":
    main()
