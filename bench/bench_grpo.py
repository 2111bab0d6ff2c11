"""
Benchmark for grpo.py: one GRPO step split into rollout / reward / train / sync, and tokens/s, for the tiny
model on CPU (builtin decode.generate rollouts, the real rewards.score_batch).

    cd /work/main && .venv/bin/python bench/bench_grpo.py [--steps 6] [--prompts 8] [--rollouts 8]
                                                          [--max_tokens 64] [--threads 1] [--json OUT]
                                                          [--compile_decode on]

A fresh tiny checkpoint (random weights, tiny tokenizer) and 32 records (every other one with an image) are
written to a temporary directory; grpo.main runs --steps steps and the table shows the median of each phase
over the steps after the first (warm-up). tokens/s counts prompt + response tokens of every rollout of a step
over the whole step's time. Sync is 0 here: the builtin sampler is the policy itself (vLLM would push weights).
"""
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import chat  # noqa: E402
import configurator  # noqa: E402
import grpo  # noqa: E402
import model  # noqa: E402


def make_workspace(root, n_records=32):
    tok = chat.build_tiny_tokenizer()
    cfg = model.tiny_config(vocab_size=len(tok))
    torch.manual_seed(0)
    model.save_model(root / "ckpt", model.build_model(cfg).state_dict(), cfg, tok)
    Image.new("RGB", (120, 90), (200, 30, 30)).save(root / "img.png")
    with open(root / "train.jsonl", "w") as f:
        for i in range(n_records):
            f.write(json.dumps({"id": f"q{i}", "images": ["img.png"] if i % 2 else [],
                                "question": f"How many circles are there? ({i})", "answer": str(i % 4)}) + "\n")
    return root / "ckpt", root / "train.jsonl"


@dataclass
class Args:
    steps: int = 6
    prompts: int = 8
    rollouts: int = 8
    max_tokens: int = 64
    micro_batch_size: int = 16
    reward_workers: int = 0
    threads: int = 1         # torch intra-op threads (the 2 shared CI cores: 1)
    compile_decode: str = "auto"   # grpo.py's: "on" compiles the CPU decode step too
    json: str = ""           # also write the results here


def main():
    args = configurator.parse_config(Args)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, records = make_workspace(Path(tmp))
        cfg = grpo.Config(init_from=str(ckpt), data=str(records), out_dir=str(Path(tmp) / "out"), steps=args.steps,
                          prompts_per_step=args.prompts, rollouts_per_prompt=args.rollouts,
                          response_length_schedule=[(0, args.max_tokens)], micro_batch_size=args.micro_batch_size,
                          rollout_batch_size=args.prompts * args.rollouts, reward_workers=args.reward_workers,
                          lr=1e-4, save_every=10 ** 9, max_prompt_tokens=1024,
                          compile_decode=args.compile_decode)
        t0 = time.time()
        history = grpo.main(cfg)
        total = time.time() - t0
    timed = history[1:] if len(history) > 1 else history

    def med(key):
        return statistics.median(m[key] for m in timed)

    phases = ["time/rollout", "time/reward", "time/train", "time/sync", "time/step"]
    step_s = med("time/step")
    print(f"\ntiny model ({sum(p.numel() for p in model.build_model(model.tiny_config(), device='meta').parameters()) / 1e6:.1f}M"
          f" params), CPU, {torch.get_num_threads()} thread(s); {args.prompts} prompts x {args.rollouts} rollouts, "
          f"<= {args.max_tokens} new tokens; median of steps 2..{len(history)}")
    print(f"{'phase':<10} {'seconds':>8} {'share':>6}")
    for key in phases:
        print(f"{key[5:]:<10} {med(key):8.3f} {med(key) / step_s:6.1%}")
    print(f"response tokens/rollout {med('response/len_mean'):.1f}, tokens/s {med('perf/tokens_per_s'):.0f} "
          f"(prompt + response), whole run {total:.1f} s incl. setup")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": asdict(args), "median": {k: med(k) for k in phases +
                                                                              ["perf/tokens_per_s"]},
                                               "history": history}, indent=1))


if __name__ == "__main__":
    main()
