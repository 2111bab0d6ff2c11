"""
Rejection sampling (paper §2): k responses per question from a model, keep those whose final answer is
right (eq. 2) and well formed (eq. 1); the kept ones are cold-start SFT data (sft.py), and Table 3's
distilled SFT arm (§6.1).

    python reject.py --checkpoint=DIR --data=questions.jsonl --k=8 --out=coldstart.jsonl

It runs in one process: vLLM uses tensor_parallel_size GPUs (or decode.generate on CPU, --backend=builtin).
Restartable: OUT.progress.jsonl has one line per finished question, and a rerun skips those; question i samples
from its own seeds (sampling.item_seed(seed, id) + j), so a rerun draws what an uninterrupted run would have.
"""
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import chat
import configurator
import data
import decode
import model
import rewards
import sampling


@dataclass
class Config:
    checkpoint: str = ""                 # model.py checkpoint dir to sample from
    data: str = ""                       # question records (data.read_records)
    out: str = ""                        # SFT chat JSONL to write (+ OUT.progress.jsonl, OUT.counts.json)
    k: int = 8                           # responses sampled per question
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 8192
    max_response_tokens: int = 0         # length filter on kept responses; 0 = off
    max_per_question: int = 1            # correct responses kept per question; 0 = all of them
    system: str = ""                     # optional system prompt, written into the SFT samples too
    max_tiles: int = 0                   # image tiles per image; 0 = the checkpoint's max_dynamic_patch
    backend: Literal["auto", "vllm", "builtin"] = "auto"   # auto: vLLM if importable and a GPU is there
    batch_size: int = 8                  # questions per sampling call
    compile_decode: Literal["auto", "on", "off"] = "auto"   # builtin: torch.compile of the decode step (grpo.py's)
    tensor_parallel_size: int = 1        # vLLM
    gpu_memory_utilization: float = 0.85  # vLLM
    max_model_len: int = 16384           # vLLM context (capped at the checkpoint's positions); longer prompts are
                                         # skipped and counted
    reward_workers: int = 2              # rewards.py Math-Verify processes
    verifier_url: str = ""               # rewards.py LLM verifier (eq. 2 R_theta), off when empty
    verifier_api_key_env: str = ""       # name of the environment variable holding its API key (never the key)
    seed: int = 0


# per question: sampled responses; correct (eq. 2); well formed (eq. 1); cut off at max_new_tokens; passed = all
# three good; too long (passed, over max_response_tokens); kept (written, at most max_per_question)
PROGRESS_COUNTS = ("prompt_too_long", "sampled", "correct", "well_formed", "cut_off", "passed", "too_long", "kept")


def select_responses(scored, cfg):
    """scored: [(response, rewards.score_batch item)] of one question -> (kept responses, progress counts).
    Kept: right (eq. 2) AND well formed (eq. 1) AND finished, within max_response_tokens, at most
    max_per_question of them in sampling order."""
    passed = [o for o, s in scored if s["accuracy"] == 1.0 and s["format"] == 1.0 and o["finish_reason"] == "stop"]
    short = [o for o in passed if not cfg.max_response_tokens or o["num_tokens"] <= cfg.max_response_tokens]
    kept = short[:cfg.max_per_question] if cfg.max_per_question else short
    return kept, {"sampled": len(scored), "correct": sum(s["accuracy"] == 1.0 for _, s in scored),
                  "well_formed": sum(s["format"] == 1.0 for _, s in scored),
                  "cut_off": sum(o["finish_reason"] == "length" for o, _ in scored),
                  "passed": len(passed), "too_long": len(passed) - len(short), "kept": len(kept)}


def sft_sample(record, j, response, system, out_dir):
    """One SFT chat line: the exact user turn the response was sampled for, and the response."""
    user = {"role": "user", "content": data.format_question(record)}
    # the generation prompt ended with "<think>\n" (chat.build_prompt): the trained answer starts with it
    answer = {"role": "assistant", "content": chat.THINK_START + "\n" + response["text"]}
    return {"id": f"{record.id}#{j}", "question_id": record.id, "source": record.source,
            "messages": ([{"role": "system", "content": system}] if system else []) + [user, answer],
            "images": [os.path.relpath(p, Path(out_dir).resolve()) for p in record.images],  # relative to OUT
            "num_tokens": response["num_tokens"]}


def reject(cfg, sampler=None):
    """Writes cfg.out (SFT chat JSONL) and returns the counts per source (also in OUT.counts.json).
    Restartable: OUT.progress.jsonl has one line per finished question, and a rerun skips those.
    sampler: a sampling.py sampler; None makes one for --backend (vLLM expands each <image> of the ChatML
    prompt itself, from the PIL images, with the same tiling as model.py)."""
    if not (cfg.checkpoint and cfg.data and cfg.out):
        raise ValueError("reject.py needs --checkpoint, --data (question records) and --out")
    records = data.read_records(cfg.data)
    tokenizer = chat.load_tokenizer(cfg.checkpoint)
    model_config = model.ModelConfig.from_json(Path(cfg.checkpoint) / "config.json")
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    progress_path = out.with_name(out.name + ".progress.jsonl")
    counts_path = out.with_name(out.name + ".counts.json")
    # data.read_jsonl drops a torn last line; the rewrite below leaves both files whole for the appends
    done = {p["id"]: p for _, p in data.read_jsonl(progress_path, appended_log=True)} if progress_path.exists() else {}
    data.write_jsonl(progress_path, list(done.values()))
    # a crash between writing samples and their progress line leaves samples of unfinished questions:
    # drop them
    samples = [s for _, s in data.read_jsonl(out, appended_log=True)] if out.exists() else []
    data.write_jsonl(out, [s for s in samples if s["question_id"] in done])
    todo = [r for r in records if r.id not in done]
    print(f"reject: {len(records)} questions, {len(done)} already done, k={cfg.k}")
    max_model_len = sampling.context_length(model_config, cfg.max_model_len)
    if sampler is None:
        print(f"reject: sampling with {sampling.pick_backend(cfg.backend)}")
        # builtin: one decode.generate call per batch of questions, batch_size x k rows
        sampler = sampling.make_sampler(
            cfg.backend, tokenizer, cfg.checkpoint, temperature=cfg.temperature, top_p=cfg.top_p,
            seed=cfg.seed, batch_size=cfg.batch_size * cfg.k, compile_decode=cfg.compile_decode,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization, max_model_len=max_model_len,
            max_images=max((len(r.images) for r in todo), default=1), max_tiles=cfg.max_tiles)
    reward_cfg = rewards.RewardConfig(num_workers=cfg.reward_workers, verifier_url=cfg.verifier_url,
                                      verifier_api_key_env=cfg.verifier_api_key_env)
    rewards.verifier_api_key(reward_cfg)   # a named but unset key variable fails now, not at the first batch
    max_prompt_tokens = max_model_len - cfg.max_new_tokens if max_model_len > cfg.max_new_tokens else None

    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start:start + cfg.batch_size]
        prompts = [data.encode_prompt(tokenizer, model_config, r, mode="think", system=cfg.system or None,
                                      max_prompt_tokens=max_prompt_tokens, max_tiles=cfg.max_tiles or None)
                   for r in chunk]
        fits = [i for i, p in enumerate(prompts) if p is not None]
        # each question's k samples from its own seeds (sampling.item_seed): the same whatever batch it is in
        outputs = sampler.sample([prompts[i] for i in fits], cfg.k, cfg.max_new_tokens,
                                 seeds=[sampling.item_seed(cfg.seed, chunk[i].id) for i in fits]) if fits else []
        responses = dict(zip(fits, outputs))
        flat = [(i, o) for i in fits for o in responses[i]]
        scores = rewards.score_batch([o["text"] for _, o in flat], [chunk[i].answer for i, _ in flat],
                                     [chunk[i].options for i, _ in flat], [chunk[i].question for i, _ in flat],
                                     reward_cfg) if flat else []
        scored = {i: [] for i in range(len(chunk))}
        for (i, o), score in zip(flat, scores):
            scored[i].append((o, score))
        samples, progress = [], []
        for i, r in enumerate(chunk):
            kept, line = select_responses(scored[i], cfg)
            samples += [sft_sample(r, j, o, cfg.system, out.parent) for j, o in enumerate(kept)]
            progress.append({"id": r.id, "source": r.source, "prompt_too_long": prompts[i] is None, **line})
        with open(out, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
        with open(progress_path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(p) + "\n" for p in progress)
        done.update({p["id"]: p for p in progress})
        print(f"reject: {len(done)}/{len(records)} questions, {sum(p['kept'] for p in done.values())} samples kept")

    counts = {}
    for p in done.values():
        for source in (p["source"], "total"):
            c = counts.setdefault(source, {"questions": 0, "questions_kept": 0, **dict.fromkeys(PROGRESS_COUNTS, 0)})
            c["questions"] += 1
            c["questions_kept"] += p["kept"] > 0
            for key in PROGRESS_COUNTS:
                c[key] += int(p[key])
    counts_path.write_text(json.dumps(counts, indent=1))
    for source, c in counts.items():
        print(f"{source:>20}: {c['kept']} kept from {c['questions']} questions ({c['questions_kept']} with one), "
              f"{c['correct']}/{c['sampled']} correct, {c['well_formed']} well formed, {c['cut_off']} cut off, "
              f"{c['passed']} passed, {c['too_long']} of them too long")
    return counts


def main(argv=None):
    cfg = configurator.parse_config(Config, argv)
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ValueError("reject.py runs in one process (vLLM uses tensor_parallel_size GPUs): use python")
    reject(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
