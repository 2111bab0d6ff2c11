"""
Evaluation: benchmarks from local files, slow thinking / NoThink / NoWait, thinking budgets, avg@k,
the hallucination split. Every table of the paper is one of these runs:

  Table 1   16 benchmarks, temperature 1.0, 16,384 tokens, avg@5 (--protocol=paper, the default)
            python eval.py --checkpoint=CKPT --benchmarks=MMMU_DEV_VAL.tsv,MathVista_MINI.tsv --split=validation
            --protocol=released: the released evaluation config instead (greedy, 1 sample, 16,384 tokens)
  Table 4   think vs nothink vs nowait (accuracy + avg tokens):   ... --mode=think,nothink,nowait
  Fig. 9    thinking budgets 1K..16K:                             ... --budgets="[1024,2048,4096,8192,16384]"
  Table 5   "I can't see the image" in the CoT: count, accuracy with/without (always computed; phrases configurable)

  python eval.py --mmmu_outputs DIR --json OUT    scores the official MMMU example-output layout
                                                  (DIR/<Subject>/output.json) with the official rules.
  python eval.py --out_dir=DIR --score_only=True  re-scores existing generations (no model needed).

Reads top to bottom: config, analyses, generation (over sampling.py), scoring a run, outputs, main. Benchmark
readers and prompts are benchmarks.py; the per-answer scorers scorers.py (and rewards.py, puzzles.py); each
benchmark's reported metric bench_metrics.py; the LLM judges on --verifier_url judges.py.

Files (one run = one benchmark x mode x budget): OUT/<benchmark>/<mode>_<budget>/generations.jsonl
(resumable: (id, sample) pairs already there are skipped), scores.jsonl, summary.json; and OUT/summary.json
+ OUT/summary.md with every run found under OUT (so separate invocations fill the same tables).
Seeds: sample s of an item draws from a stream of its own, seeded sampling.item_seed(seed, benchmark, id) + s (after
a forced "</think>": item_seed(..., "answer") + s; each backend draws its own way): the same random numbers for the
same item in every arm (checkpoint, mode, budget), in any batch, and in a resumed run as in an uninterrupted one.

Modes (paper §6.2). think: the generation prompt ends with "<think>\\n". nothink: it does not, and the <think> and
</think> tokens are banned at sampling time (a model that opens its own thinking block cannot).
nowait: the think prompt, with every token that spells "Wait", "Alternatively" or "Hmm" masked out of the logits
(sampling.nowait_banned_token_ids). NoWait keeps the think block: the paper's NoWait answers average 1040
tokens against 263 for NoThink (Table 4), so it still reasons.

Thinking-budget rule (Fig. 9), applied per sample in think/nowait mode when `budgets` is set:
  1. sample at most B tokens, stopping at <|im_end|> or at "</think>";
  2. if it stopped at <|im_end|>, that is the response;
  3. otherwise (it closed its think block, or it used up B tokens) append "\\n</think>\\n\\n" when the block
     is still open, and sample at most `answer_max_tokens` more tokens, stopping at <|im_end|>.
  The token count reported includes the forced tokens. Without `budgets` there is no forcing: a single
  generation of at most `max_new_tokens` (the paper's 16,384 generation budget, §4).

Prompts: each benchmark's released prompt (benchmarks.build_messages), rendered with the checkpoint's own chat
template (chat.build_prompt). summary.json records the sampling protocol, and under "deviations" the
reference scorers' (benchmarks.DEVIATIONS) plus those of the settings (setting_deviations: sampling, nowait,
system turn, MMMU image placement).
"""

import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

import chat
import checkpoint
import data
import model as M
import rewards
import sampling
import bench_metrics
import judges
from benchmarks import DEVIATIONS, build_messages, load_items, load_rgb, own_rule_verdict, score_mmmu_outputs, \
    score_response, score_with_rewards, scorer_family, scoring_options
from configurator import parse_config, print_config


# -----------------------------------------------------------------------------
# config


@dataclass
class EvalConfig:
    checkpoint: str = ""                 # model.py checkpoint dir (config.json + safetensors + tokenizer)
    benchmarks: list = field(default_factory=list)   # .tsv (VLMEvalKit), .parquet or a dir of shards (HF hub),
    #                                                  .jsonl (ours), .json (K12); the file stem names the benchmark
    split: str = ""                      # keep rows whose `split` column equals this (MMMU_DEV_VAL: "validation")
    max_items: int = 0                   # 0 = all; else the first N items of each benchmark (smoke tests)
    mode: str = "think"                  # think | nothink | nowait, or a comma list ("think,nothink,nowait")
    protocol: Literal["paper", "released"] = "paper"   # sampling preset (PROTOCOLS): k, temperature, top_p,
    #                                      max_new_tokens; flags and config files override single values ("custom")
    k: int = 5                           # samples per question -> avg@k with its std (Table 1: avg@5)
    temperature: float = 1.0             # §4: decoding temperature 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16384          # §4: generation budget 16,384
    budgets: list = field(default_factory=list)      # thinking budgets (Fig. 9), e.g. [1024, 2048, 4096, 8192, 16384]
    answer_max_tokens: int = 1024        # tokens allowed after a forced "</think>" (budget rule above)
    batch_size: int = 8                  # builtin backend: rows (question x sample) per generate call
    compile_decode: Literal["auto", "on", "off"] = "auto"   # builtin: torch.compile of the decode step (grpo.py's)
    vllm_chunk: int = 256                # vLLM: questions per llm.generate call (resume granularity)
    backend: str = "auto"                # auto (vllm if importable and a GPU is there, else builtin) | vllm | builtin
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 32768           # vLLM context, capped at the checkpoint's max_position_embeddings
    max_images: int = 8                  # vLLM limit_mm_per_prompt (MMMU has up to 7 images per question)
    dtype: str = "auto"                  # auto: bfloat16 on GPU, float32 on CPU
    device: str = "auto"
    system_prompt: str = ""              # "" = the benchmark's released one (MMK12) or none; applies to all
    mmmu_images: Literal["front", "inplace"] = "front"   # MMMU <image k>: front (the released pipeline) | inplace
    seed: int = 0                        # sample s of an item draws from item_seed(seed, benchmark, id) + s (above)
    nowait_words: list = field(default_factory=lambda: ["Wait", "Alternatively", "Hmm"])  # §6.2
    hallucination_phrases: list = field(default_factory=lambda: list(rewards.UNSEEN_IMAGE_PHRASES))  # Table 5
    nothink_instruction: bool = False    # nothink mode asks our JSONL items with data.NOTHINK_INSTRUCTION, the one a
    #                                      synthetic.py --nothink_instruction SFT pairs with direct answers (the
    #                                      demo's NoThink); off = the paper's NoThink: only the template changes
    verifier_url: str = ""               # OpenAI-compatible endpoint (rewards.VerifierClient); "" = rules only
    verifier_model: str = ""
    verifier_api_key_env: str = ""       # name of the environment variable holding its API key (never the key)
    reward_workers: int = 2              # Math-Verify processes (rewards.RewardConfig.num_workers); 0 = in-process,
    #                                      no hard timeout (the CPU demo: saves the pool's start-up per eval)
    out_dir: str = "out/eval"
    score_only: bool = False             # re-score what is in out_dir, generate nothing
    wandb: bool = True                   # honours WANDB_MODE (disabled/offline)
    wandb_project: str = "r1v3-eval"
    run_name: str = ""


# sampling presets. paper: §4, temperature 1.0, 16,384 tokens, avg@5. released: SkyworkAI/Skywork-R1V
# eval/vlmevalkit/vlmeval/config.py L509-517 "R1V3-alpha" = LMDeployAPI(temperature=0, max_tokens=16384), which
# sends n=1 and no top_p (vlmeval/api/lmdeploy.py L298-304; vLLM's default 1.0): greedy, one sample.
PROTOCOLS = {"paper": dict(temperature=1.0, top_p=1.0, k=5, max_new_tokens=16384),
             "released": dict(temperature=0.0, top_p=1.0, k=1, max_new_tokens=16384)}


def sampling_of(cfg):
    """The settings a protocol fixes, as this invocation has them."""
    return {key: getattr(cfg, key) for key in PROTOCOLS["paper"]}


def protocol_of(sampling):
    """The name of the preset that these sampling settings equal, else "custom" (None: "unknown")."""
    if sampling is None:
        return "unknown"
    return next((name for name, preset in PROTOCOLS.items() if preset == sampling), "custom")


MODES = ("think", "nothink", "nowait")
FORCED_THINK_END = "\n</think>\n\n"

# -----------------------------------------------------------------------------
# analyses: per subject, hallucination split, a run's summary, tables


def hallucination_split(scored, phrases):
    """Table 5 over every response: how many say so in the thinking, and the accuracy with / without."""
    hit = [rewards.claims_unseen_image(s["response"], phrases) for s in scored]

    def part(mask):
        picked = [s["correct"] for s, m in zip(scored, mask) if m]
        return {"n": len(picked), "accuracy": float(np.mean(picked)) if picked else None}

    return {"all": part([True] * len(scored)), "without": part([not h for h in hit]), "with": part(hit)}


def per_subject_accuracy(scored):
    groups = {}
    for s in scored:
        groups.setdefault(s.get("subject") or "-", []).append(s["correct"])
    return {k: {"n": len(v), "accuracy": float(np.mean(v))} for k, v in sorted(groups.items())}


def summarize_run(scored, cfg_phrases, family, items=None):
    """scored: one record per (id, sample) with correct, response, num_tokens, subject (+ scorer parts).
    items (the benchmark's EvalItems): "accuracy" is then its reported metric (bench_metrics: CircularEval,
    HallusionBench, WeMath strict; plain accuracy elsewhere), avg@k over the sample runs, with its parts, and
    "plain_accuracy" the per-row avg@k. "judge" says who gave the verdicts: "rules", or "rules+model" when
    the LLM judge was asked about any sample (its counts under "samples")."""
    by_item = {}
    for s in sorted(scored, key=lambda s: (s["id"], s["sample"])):
        by_item.setdefault(s["id"], []).append(s)
    summary = bench_metrics.avg_at_k({i: [s["correct"] for s in v] for i, v in by_item.items()})
    kind = bench_metrics.metric_kind(items[0].benchmark) if items else "accuracy"
    summary["metric"] = bench_metrics.METRIC_NAMES[kind]
    if kind != "accuracy":
        per_run, parts = bench_metrics.metric_per_run(kind, [it for it in items if it.id in by_item],
                                                      {i: [s["correct"] for s in v] for i, v in by_item.items()})
        summary.update(plain_accuracy=summary["accuracy"], **bench_metrics.mean_std(per_run), parts=parts)
    hows = {h: sum(s.get("judge", "rules") == h for s in scored) for h in ("rules", "model", "unparseable", "failed")}
    summary["judge"] = {"by": "rules" if hows["rules"] == len(scored) else "rules+model", "samples": hows}
    summary["avg_tokens"] = float(np.mean([s["num_tokens"] for s in scored]))
    summary["per_subject"] = per_subject_accuracy(scored)
    summary["hallucination"] = hallucination_split(scored, cfg_phrases)
    if family == "mmmu":   # each scorer on its own too (the paper reports the OR)
        for part in ("mmmu_official", "boxed_rule"):
            r = bench_metrics.avg_at_k({i: [s[part] for s in v] for i, v in by_item.items()})
            summary[part] = {"accuracy": r["accuracy"], "std": r["std"]}
        summary["random_fallbacks"] = sum(s["random_fallback"] for s in scored)
    if family == "rule":   # the rule checker alone, next to rule OR verifier (eq. 2)
        r = bench_metrics.avg_at_k({i: [s["rule"] for s in v] for i, v in by_item.items()})
        summary["rule"] = {"accuracy": r["accuracy"], "std": r["std"]}
        summary["timeouts"] = sum(s["timed_out"] for s in scored)
    if family == "mathvista":
        summary["extraction"] = {h: sum(s["extraction"] == h for s in scored) for h in ("prefetch", "llm", "rule")}
    return summary


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def markdown_report(runs):
    """runs: {(benchmark, mode, budget): summary}. Overview, Table 4 (modes), Fig. 9 (budgets), Table 5, subjects."""
    lines = ["# Evaluation", "", "| benchmark | mode | budget | k | avg@k | std | avg tokens | parts |",
             "|---|---|---|---|---|---|---|---|"]
    for (bench, mode, budget), s in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        parts = ", ".join(f"{p} {pct(s[p]['accuracy'])}" for p in ("mmmu_official", "boxed_rule", "rule") if p in s)
        lines.append(f"| {bench} | {mode} | {budget or 'none'} | {s['k']} | {pct(s['accuracy'])} | "
                     f"{100 * s['std']:.2f} | {s['avg_tokens']:.0f} | {parts} |")
    for bench in sorted({b for b, _, _ in runs}):
        modes = [(m, runs[(bench, m, None)]) for m in MODES if (bench, m, None) in runs]
        if len(modes) > 1:
            lines += ["", f"## Modes on {bench} (Table 4)", "", "| | " + " | ".join(m for m, _ in modes) + " |",
                      "|---" * (len(modes) + 1) + "|",
                      "| Avg Tokens | " + " | ".join(f"{s['avg_tokens']:.0f}" for _, s in modes) + " |",
                      "| Accuracy (%) | " + " | ".join(pct(s["accuracy"]) for _, s in modes) + " |"]
        for mode in MODES:
            sweep = sorted((b, s) for (bb, m, b), s in runs.items() if bb == bench and m == mode and b)
            if sweep:
                lines += ["", f"## Thinking budget on {bench}, {mode} (Fig. 9)", "",
                          "| budget | accuracy (%) | std | avg tokens |", "|---|---|---|---|"]
                lines += [f"| {b} | {pct(s['accuracy'])} | {100 * s['std']:.2f} | {s['avg_tokens']:.0f} |"
                          for b, s in sweep]
    for (bench, mode, budget), s in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        h = s["hallucination"]
        lines += ["", f"## {bench} {mode} budget {budget or 'none'}: \"can't see the image\" (Table 5)", "",
                  "| subset | samples | accuracy (%) |", "|---|---|---|",
                  f"| All | {h['all']['n']} | {pct(h['all']['accuracy'])} |",
                  f"| Without | {h['without']['n']} | {pct(h['without']['accuracy'])} |",
                  f"| With | {h['with']['n']} | {pct(h['with']['accuracy'])} |"]
        if len(s["per_subject"]) > 1:
            lines += ["", "| subject | samples | accuracy (%) |", "|---|---|---|"]
            lines += [f"| {k} | {v['n']} | {pct(v['accuracy'])} |" for k, v in s["per_subject"].items()]
    return "\n".join(lines) + "\n"

# -----------------------------------------------------------------------------
# generation: shared pieces (resumable JSONL, the budget rule)


def run_dir_for(out_dir, benchmark, mode, budget):
    return Path(out_dir) / benchmark / f"{mode}_{budget if budget else 'full'}"


def read_generations(path):
    """{(id, sample): record} of a generations.jsonl. data.read_jsonl's policy: a torn last line (a killed
    run's) is dropped, and regenerated; a bad line elsewhere is an error naming file:line."""
    path = Path(path)
    if not path.exists():
        return {}
    located = data.read_jsonl(path, appended_log=True)
    text = path.read_bytes()
    if text and not text.endswith(b"\n"):   # without the torn line: appends start on a fresh line
        data.write_jsonl(path, [rec for _, rec in located])
    done = {}
    for where, rec in located:
        try:
            done[(str(rec["id"]), int(rec["sample"]))] = rec
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad generation record: {type(e).__name__}: {e}") from None
    return done


def generate_rows(rows, sample_fn, mode, budget, cfg):
    """The budget rule of the module docstring. rows: [{"prefix": "", ...}]; sample_fn(rows, max_tokens,
    stop_at_think_end) -> [{"text", "num_tokens", "finish_reason"}] continuing each row after its prefix.
    -> [{"response", "num_tokens", "finish_reason", "forced_think_end"}]"""
    if not budget or mode == "nothink":
        outs = sample_fn(rows, budget or cfg.max_new_tokens, False)
        return [{"response": o["text"], "num_tokens": o["num_tokens"], "finish_reason": o["finish_reason"],
                 "forced_think_end": False} for o in outs]
    first = sample_fn(rows, budget, True)
    results, again = [], []
    for row, o in zip(rows, first):
        ended_think = o["text"].rstrip().endswith("</think>")
        res = {"response": o["text"], "num_tokens": o["num_tokens"], "finish_reason": o["finish_reason"],
               "forced_think_end": False}
        if o["finish_reason"] == "length" or ended_think:
            if "</think>" not in o["text"]:
                res["response"] += FORCED_THINK_END
                res["num_tokens"] += row["forced_tokens"]
                res["forced_think_end"] = True
            again.append((res, dict(row, prefix=row["prefix"] + res["response"], seed=row.get("answer_seed"))))
        results.append(res)
    if again:
        second = sample_fn([r for _, r in again], cfg.answer_max_tokens, False)
        for (res, _), o in zip(again, second):
            res["response"] += o["text"]
            res["num_tokens"] += o["num_tokens"]
            res["finish_reason"] = o["finish_reason"]
    return results


def row_sampler(sampler, tokenizer, banned):
    """sample_fn for generate_rows over a sampling.py sampler. Rows with the same prompt and prefix and consecutive
    seeds (the k samples of a question) become one prompt: n = their count, seed the first one's (its j-th sample:
    + j). Built-in: token ids with our image expansion; vLLM: ChatML text and PIL images, expanded by vLLM."""

    def encode(row):
        images = [load_rgb(im) for im in row["images"]]
        if isinstance(sampler, sampling.VLLMSampler):
            return {"prompt": row["prompt"] + row["prefix"], "images": images}
        config = sampler.net.config
        tiles = [data.image_to_pixel_values(im, config) for im in images]
        text = chat.expand_image_tokens(row["prompt"], [t.shape[0] for t in tiles], config.num_image_token)
        return {"input_ids": tokenizer.encode(text + row["prefix"], add_special_tokens=False),
                "pixel_values": torch.cat(tiles) if tiles else None}

    def sample_fn(rows, max_tokens, stop_at_think_end):
        groups, last = [], {}   # a row joins the last group of its (id, prefix) if its seed is the group's next
        for i, row in enumerate(rows):
            seed, members = row.get("seed"), last.get(key := (row["id"], row["prefix"]))
            if members is None or seed is not None and seed != rows[members[0]]["seed"] + len(members):
                groups.append(members := [])
                last[key] = members
            members.append(i)
        seeds = [rows[members[0]].get("seed") for members in groups]
        outs = sampler.sample([encode(rows[members[0]]) for members in groups], [len(members) for members in groups],
                              max_tokens, stop=[chat.THINK_END] if stop_at_think_end else [], banned_ids=banned,
                              seeds=None if None in seeds else seeds)
        by_row = {}
        for members, samples in zip(groups, outs):
            by_row.update(zip(members, samples))
        return [by_row[i] for i in range(len(rows))]

    return sample_fn


def run_prompts(cfg, items, mode, tokenizer, model_config=None, max_prompt_tokens=None):
    """{item id: the row of generate_run}: build_messages rendered by chat.build_prompt with the checkpoint's
    tokenizer (its chat template), the images, and the forced "</think>"'s token count (budget rule).
    max_prompt_tokens (with model_config): a longer prompt is an error naming its item, before any generation
    (vLLM would reject it; decode.generate would run past the model's positions)."""
    forced = 0 if tokenizer is None else len(tokenizer.encode(FORCED_THINK_END, add_special_tokens=False))
    prompts = {}
    for item in items:
        instruction = data.NOTHINK_INSTRUCTION if mode == "nothink" and cfg.nothink_instruction else \
            data.DEFAULT_INSTRUCTION
        messages, images = build_messages(item, cfg.system_prompt, cfg.mmmu_images, instruction)
        text = chat.build_prompt(messages, mode, tokenizer=tokenizer)
        prompts[item.id] = {"prompt": text, "images": images, "prefix": "", "forced_tokens": forced}
        if max_prompt_tokens:   # images expanded as model.py does (vLLM's processor does the same)
            tiles = [data.image_to_pixel_values(load_rgb(im), model_config).shape[0] for im in images]
            n = len(tokenizer.encode(chat.expand_image_tokens(text, tiles, model_config.num_image_token),
                                     add_special_tokens=False))
            if n > max_prompt_tokens:
                raise ValueError(f"{item.extra.get('where') or item.benchmark}: prompt of item {item.id!r} is {n} "
                                 f"tokens, more than {max_prompt_tokens} (min(max_model_len, "
                                 f"max_position_embeddings) - 1); drop the item or raise the limit")
    return prompts


def generate_run(cfg, items, mode, budget, sample_fn, prompts, model_sha256=None):
    """Generate the missing (id, sample) pairs of one run (prompts: run_prompts'), appending each finished batch
    to its generations.jsonl. model_sha256: checkpoint.model_sha256 of cfg.checkpoint, stored in every record."""
    gen_path = run_dir_for(cfg.out_dir, items[0].benchmark, mode, budget) / "generations.jsonl"
    gen_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_generations(gen_path)
    others = {rec.get("model_sha256") for rec in done.values()} - {model_sha256}
    if others:   # resuming must never mix two models' samples in one avg@k: the model by content, not its path
        paths = sorted({str(rec.get("checkpoint")) for rec in done.values()})
        raise ValueError(f"{gen_path} holds generations of another model (checkpoint {', '.join(paths)}, content "
                         f"sha256 {', '.join(sorted(map(str, others)))}), not of {cfg.checkpoint!r} as it is now "
                         f"({model_sha256}): use another out_dir")
    settings = {key: value for key, value in sampling_of(cfg).items() if key != "k"}   # k may grow on resume
    others = {json.dumps(rec["sampling"]) for rec in done.values() if rec.get("sampling", settings) != settings}
    if others:   # nor two protocols' samples (greedy and T = 1) in one avg@k
        raise ValueError(f"{gen_path} holds generations sampled with {', '.join(sorted(others))}, not "
                         f"{json.dumps(settings)}: use another out_dir")
    pending = [(item, s) for item in items for s in range(cfg.k) if (item.id, s) not in done]
    print(f"{gen_path.parent}: {len(done)} samples already generated, {len(pending)} to go")
    chunk = max(1, cfg.batch_size if cfg.backend == "builtin" else cfg.vllm_chunk * cfg.k)
    seed = lambda item, *phase: sampling.item_seed(cfg.seed, item.benchmark, item.id, *phase)   # + s: sample s's
    t0 = time.time()
    for start in range(0, len(pending), chunk):
        part = pending[start:start + chunk]
        rows = [dict(prompts[item.id], id=item.id, sample=s, seed=seed(item) + s, answer_seed=seed(item, "answer") + s)
                for item, s in part]
        results = generate_rows(rows, sample_fn, mode, budget, cfg)
        with open(gen_path, "a", encoding="utf-8") as f:
            for (item, s), r in zip(part, results):
                rec = {"id": item.id, "sample": s, "benchmark": item.benchmark, "mode": mode, "budget": budget,
                       "checkpoint": cfg.checkpoint, "model_sha256": model_sha256, "sampling": settings, **r}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                done[(item.id, s)] = rec
        n = start + len(part)
        rate = n / max(time.time() - t0, 1e-9)
        print(f"  {n}/{len(pending)} samples, {rate:.2f}/s, ETA {(len(pending) - n) / max(rate, 1e-9):.0f}s")
    return done


# -----------------------------------------------------------------------------
# scoring a run, writing outputs, W&B


def score_run(items, generations, cfg, mode):
    """Score every generation in item order, then sample order (the MMMU random fallback draws from one rng seeded
    42 in that order, so a rescore gives the same verdicts). Returns one scored record per (id, sample), each
    saying which judge gave its verdict ("rules", "model", or "unparseable" / "failed": the judge was asked and
    gave no verdict, so the rules' one stands)."""
    rng = random.Random(42)
    llm_extract = judges.mathvista_extractor(cfg.verifier_url, cfg.verifier_model or
                                             rewards.RewardConfig.verifier_model,
                                             rewards.verifier_api_key(cfg)) if cfg.verifier_url else None
    scored, batched, judged = [], [], []
    for item in items:
        for s in range(cfg.k):
            g = generations.get((item.id, s))
            if g is None:
                continue
            rec = {"id": item.id, "sample": s, "subject": item.subject, "response": g["response"],
                   "num_tokens": g["num_tokens"], "judge": "rules"}
            if scorer_family(item.benchmark) == "rule":
                own = own_rule_verdict(item, g["response"])
                if own is None:
                    batched.append((rec, item))
                else:
                    rec.update(own)
                judged.append((rec, item))
            else:
                rec.update(score_response(item, g["response"], rng, llm_extract))
                if rec.get("extraction") == "llm":
                    rec["judge"] = "model"
            scored.append(rec)
    if batched:   # one batch, rules only: Math-Verify workers with hard timeouts
        reward_cfg = rewards.RewardConfig(think_mode=mode != "nothink", num_workers=cfg.reward_workers)
        verdicts = score_with_rewards([it for _, it in batched], [r["response"] for r, _ in batched], reward_cfg)
        for (rec, _), verdict in zip(batched, verdicts):
            rec.update(verdict)
        print(f"rewards: {rewards.last_stats.as_dict()}")
    wrong = [(rec, it) for rec, it in judged if judges.needs_judge(it, rec)]
    if cfg.verifier_url and wrong:   # each benchmark's own judge prompt, asked about what the rules scored wrong
        judge = judges.Judge(cfg.verifier_url, cfg.verifier_model or rewards.RewardConfig.verifier_model,
                             rewards.verifier_api_key(cfg))
        answers = judge.judge_all([(it, rec["response"], scoring_options(it)) for rec, it in wrong])
        for (rec, _), (verdict, how) in zip(wrong, answers):
            rec["verifier"], rec["judge"], rec["correct"] = verdict, how, verdict is True
        print(f"judge {judge.url}: {judge.counts}")
    return scored


def setting_deviations(cfg, sampling, tokenizer=None):
    """Deviations from the released evaluation (VLMEvalKit R1V3-alpha over vLLM's OpenAI server) that depend on
    the settings, worded from the settings and from chat.build_prompt itself, so that they cannot go stale.
    sampling: the runs' settings (run_sampling; None: they differ or are not recorded). tokenizer: the
    checkpoint's (None when only scoring: the template is then not known)."""
    out = []
    if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        out.append("The checkpoint's tokenizer has no chat template: prompts use ChatML without a system turn "
                   "(the released tokenizer_config.json template is not public).")
    nowait = chat.build_prompt([{"role": "user", "content": "Q"}], "nowait", tokenizer=tokenizer)
    think_prefix = chat.THINK_START + "\n"
    out.append(f"nowait (not in the release) {'keeps' if nowait.endswith(think_prefix) else 'drops'} the "
               f"{think_prefix!r} generation prompt of think mode; its {cfg.nowait_words} tokens are banned.")
    if cfg.system_prompt:
        out.append(f"System turn {cfg.system_prompt!r} on every benchmark (released: none; MMK12 its own).")
    if cfg.mmmu_images == "inplace":
        out.append("MMMU: each <image k> is replaced by its image in place (released: every image first, the "
                   "text pieces between markers joined with '\\n').")
    if sampling is None:
        out.append("Sampling: the runs record no common setting (see runs/*/sampling).")
    elif sampling != PROTOCOLS["released"]:
        out.append(f"Sampling ({protocol_of(sampling)}): {sampling} (released evaluation: greedy, 1 sample, "
                   f"16384 tokens).")
    return out


def run_sampling(generations, cfg):
    """A run's sampling settings, as its generations record them (a rescore may be given other flags); None
    when they do not say (files written before they did) or disagree."""
    found = {json.dumps(g.get("sampling"), sort_keys=True) for g in generations.values()}
    settings = json.loads(found.pop()) if len(found) == 1 else None
    return {**settings, "k": cfg.k} if settings else None


def write_run(run_dir, scored, summary):
    run_dir = Path(run_dir)
    data.write_jsonl(run_dir / "scores.jsonl", [{k: v for k, v in s.items() if k != "response"} for s in scored])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))


def write_overall(cfg, out_dir, main_keys, tokenizer=None):
    """OUT/summary.json: top-level accuracy/std = the main runs of this invocation (first mode, no budget or the
    largest), macro-averaged over benchmarks run by run; every run found under OUT under "runs"."""
    runs = {}
    for f in sorted(Path(out_dir).glob("*/*/summary.json")):
        s = json.loads(f.read_text())
        runs[(s["benchmark"], s["mode"], s["budget"])] = s
    mains = [runs[k] for k in main_keys if k in runs]
    overall = {"accuracy": None, "std": None}
    if mains:
        per_run = np.mean([m["per_run"] for m in mains], axis=0)   # same k everywhere: one invocation
        overall = {"accuracy": float(np.mean(per_run)),
                   "std": float(np.std(per_run, ddof=1)) if len(per_run) > 1 else 0.0,
                   "per_run": [float(x) for x in per_run], "benchmarks": [m["benchmark"] for m in mains]}
        if len(mains) == 1:   # one benchmark: its breakdowns at the top level too
            overall.update({k: mains[0][k] for k in ("k", "n_items", "avg_tokens", "per_subject", "hallucination")})
    overall["runs"] = {f"{b}/{m}/{bud or 'full'}": s for (b, m, bud), s in runs.items()}
    samplings = {json.dumps(m["sampling"], sort_keys=True) for m in mains}   # those of the main runs
    sampling = (json.loads(samplings.pop()) if len(samplings) == 1 else None) if mains else sampling_of(cfg)
    overall["protocol"] = protocol_of(sampling)
    overall["deviations"] = DEVIATIONS + setting_deviations(cfg, sampling, tokenizer)
    overall["config"] = asdict(cfg)
    (Path(out_dir) / "summary.json").write_text(json.dumps(overall, indent=1, ensure_ascii=False))
    (Path(out_dir) / "summary.md").write_text(markdown_report(runs), encoding="utf-8")
    return overall, runs


def log_wandb(cfg, overall, runs):
    if not cfg.wandb or os.environ.get("WANDB_MODE", "").lower() == "disabled":   # as tu.RunLogger: no import
        return
    try:   # imported here: wandb is optional (results are on disk; a missing package skips W&B)
        import wandb
    except ImportError:
        print("wandb not installed: skipping W&B logging")
        return
    try:   # the results are on disk already: a W&B problem (no API key, no network) must not fail the run
        run = wandb.init(project=cfg.wandb_project, name=cfg.run_name or None, config=asdict(cfg),
                         dir=cfg.out_dir, job_type="eval")
    except Exception as e:
        print(f"W&B logging skipped: {type(e).__name__}: {e} (set WANDB_MODE=offline or disabled)")
        return
    metrics = {"eval/accuracy": overall["accuracy"], "eval/std": overall["std"]}
    table = wandb.Table(columns=["benchmark", "mode", "budget", "k", "accuracy", "std", "avg_tokens",
                                 "halluc_n", "acc_with", "acc_without"])
    for (b, m, bud), s in runs.items():
        key = f"eval/{b}/{m}/{bud or 'full'}"
        metrics[f"{key}/accuracy"] = s["accuracy"]
        metrics[f"{key}/avg_tokens"] = s["avg_tokens"]
        h = s["hallucination"]
        table.add_data(b, m, bud or 0, s["k"], s["accuracy"], s["std"], s["avg_tokens"], h["with"]["n"],
                       h["with"]["accuracy"], h["without"]["accuracy"])
    metrics["eval/runs"] = table
    run.log(metrics)
    run.finish()

# -----------------------------------------------------------------------------
# main


def parse_args(argv):
    """The sampling preset that `protocol` names, then config files and --key=value overrides, type-checked
    against EvalConfig (configurator.parse_config)."""
    protocol = parse_config(EvalConfig, argv).protocol
    cfg = parse_config(replace(EvalConfig(), **PROTOCOLS[protocol]), argv)
    print_config(cfg)
    return cfg


@dataclass
class MMMUOutputsConfig:
    mmmu_outputs: str = ""   # DIR with <Subject>/output.json
    json: str = ""           # where to write {accuracy, items}
    answers: str = ""        # answer_dict_val.json (else each entry's 'answer')


def main_mmmu_outputs(argv):
    args = parse_config(MMMUOutputsConfig, argv)
    if not args.mmmu_outputs or not args.json:
        raise SystemExit("usage: python eval.py --mmmu_outputs DIR --json OUT [--answers answer_dict_val.json]")
    result = score_mmmu_outputs(args.mmmu_outputs, args.answers or None)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"MMMU official rules: {result['correct']}/{result['total']} = {100 * result['accuracy']:.2f}% "
          f"({result['random_fallbacks']} random fallbacks); boxed rule {100 * result['boxed_rule_accuracy']:.2f}%, "
          f"OR {100 * result['or_accuracy']:.2f}%  -> {args.json}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--mmmu_outputs" or a.startswith("--mmmu_outputs=") for a in argv):
        return main_mmmu_outputs(argv)
    cfg = parse_args(argv)
    checkpoint.lock_out_dir(cfg.out_dir)   # one eval per out_dir: two would append to the same generations
    modes = [m.strip() for m in cfg.mode.split(",") if m.strip()]
    if set(modes) - set(MODES):
        raise ValueError(f"--mode: {sorted(set(modes) - set(MODES))} not in {MODES}")
    if not cfg.benchmarks:
        raise ValueError("--benchmarks: give a list of benchmark files, e.g. --benchmarks=\"['MMMU_DEV_VAL.tsv']\"")
    rewards.verifier_api_key(cfg)   # a named but unset key variable fails now, not after generating
    benchmarks = []
    for path in cfg.benchmarks:
        items = load_items(path, cfg.split, cfg.max_items)
        if items[0].benchmark in [b[0].benchmark for b in benchmarks]:
            raise ValueError(f"{path}: a second benchmark named {items[0].benchmark!r} (its outputs would collide)")
        bench = items[0].benchmark
        print(f"{path}: {len(items)} items, benchmark {bench} (scorer: {scorer_family(bench)})")
        benchmarks.append(items)
    budgets = sorted(int(b) for b in cfg.budgets) or [None]

    sampler, tokenizer, model_sha256 = None, None, None
    if not cfg.score_only:
        backend = cfg.backend = sampling.pick_backend(cfg.backend)
        if not cfg.checkpoint:
            raise ValueError("--checkpoint is required to generate (or use --score_only=True)")
        tokenizer = chat.load_tokenizer(cfg.checkpoint)
        model_config = M.ModelConfig.from_json(Path(cfg.checkpoint) / "config.json")
        model_sha256 = checkpoint.model_sha256(cfg.checkpoint)
        max_model_len = sampling.context_length(model_config, cfg.max_model_len)
        max_prompt_tokens = max_model_len - 1
        sampler = sampling.make_sampler(
            backend, tokenizer, cfg.checkpoint, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
            batch_size=cfg.batch_size, compile_decode=cfg.compile_decode, device=cfg.device, dtype=cfg.dtype,
            tensor_parallel_size=cfg.tensor_parallel_size, gpu_memory_utilization=cfg.gpu_memory_utilization,
            max_model_len=max_model_len, max_images=cfg.max_images)

    main_keys = []
    for items in benchmarks:
        bench = items[0].benchmark
        for mode in modes:
            banned = []
            if mode == "nowait" and tokenizer is not None:
                banned = sampling.nowait_banned_token_ids(tokenizer, cfg.nowait_words)
                print(f"nowait: {len(banned)} banned token ids")
            if mode == "nothink" and tokenizer is not None:
                banned = sampling.nothink_banned_token_ids(tokenizer)
            if not cfg.score_only:
                prompts = run_prompts(cfg, items, mode, tokenizer, model_config, max_prompt_tokens)
            for budget in budgets:
                run_dir = run_dir_for(cfg.out_dir, bench, mode, budget)
                if cfg.score_only:
                    generations = read_generations(run_dir / "generations.jsonl")
                else:
                    generations = generate_run(cfg, items, mode, budget, row_sampler(sampler, tokenizer, banned),
                                               prompts, model_sha256)
                missing = [(it.id, s) for it in items for s in range(cfg.k) if (it.id, s) not in generations]
                if missing:
                    raise ValueError(f"{run_dir}: {len(missing)} (id, sample) pairs not generated, e.g. {missing[:3]}")
                scored = score_run(items, generations, cfg, mode)
                run_settings = run_sampling(generations, cfg)
                summary = {"benchmark": bench, "mode": mode, "budget": budget,
                           "protocol": protocol_of(run_settings), "sampling": run_settings,
                           **summarize_run(scored, cfg.hallucination_phrases, scorer_family(bench), items)}
                write_run(run_dir, scored, summary)
                print(f"{bench} {mode} budget={budget or 'none'}: avg@{summary['k']} = {pct(summary['accuracy'])} "
                      f"± {100 * summary['std']:.2f}, {summary['avg_tokens']:.0f} tokens")
                if mode == modes[0] and budget == budgets[-1]:
                    main_keys.append((bench, mode, budget))
    overall, runs = write_overall(cfg, cfg.out_dir, main_keys, tokenizer)
    print(f"accuracy {pct(overall['accuracy'])} -> {Path(cfg.out_dir) / 'summary.json'}, summary.md")
    log_wandb(cfg, overall, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
