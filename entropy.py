"""
Token entropy, critical-token entropy (paper §5.1, Fig. 5) and entropy-based checkpoint selection (§6.5, Fig. 10).

  1. math        in logprobs.py: token_logprobs_and_entropy (chunked, optional grad)
  2. critical    in token_entropy.py: critical_token_sequences / critical_mask ("Wait", "Alternatively", ...)
  3. metrics     in token_entropy.py: entropy_metrics (critical-token entropy, mean token entropy, share of
                 H > 6.8, histogram); GRPO logs the same at every step without importing this file's plotting
  4. CLI         python entropy.py --checkpoints DIR... --data VAL.jsonl [--generations FILE]
                                   [--accuracies SUMMARY...] --out OUT_DIR
                 samples (or reads) responses, scores them by a teacher-forced forward, ranks the checkpoints by
                 critical-token entropy, correlates it with accuracy, writes entropy_table.json + entropy.png.

The per-token alignment convention (which row predicts which token) is in logprobs.py, whose chunked
log-probs and entropy this file scores responses with.
"""
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib
import torch

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

import checkpoint
import configurator
import chat
import data
import decode
import model
import train_utils as tu
from logprobs import token_logprobs_and_entropy
from token_entropy import (DEFAULT_CRITICAL_WORDS, critical_mask, critical_token_sequences, entropy_metrics,
                           high_entropy_threshold)

# -----------------------------------------------------------------------------
# config of the checkpoint-selection CLI


@dataclass
class EntropyConfig:
    checkpoints: list = field(default_factory=list)  # checkpoint dirs (model.py format, tokenizer inside)
    data: str = ""                   # validation records (data.read_records): prompts and images
    generations: str = ""            # JSONL of existing responses; empty -> sample them with decode.generate
    accuracies: list = field(default_factory=list)  # one summary.json (or dir holding one) per checkpoint
    reuse: list = field(default_factory=list)   # entropy_table.json of earlier runs: a checkpoint they scored on
    #                                             the same responses and settings is not scored again (scored_sha256)
    out: str = "out/entropy"
    num_prompts: int = 32            # validation records used (0 = all)
    samples_per_prompt: int = 1
    max_new_tokens: int = 1024
    temperature: float = 1.0         # sampling temperature; entropy is always measured at T = 1
    top_p: float = 1.0
    batch_size: int = 8              # prompts per generate() call
    mode: Literal["think", "nothink"] = "think"   # prompt mode (chat.build_prompt)
    words: list = field(default_factory=lambda: list(DEFAULT_CRITICAL_WORDS))
    high_threshold: float = 0.0      # 0: 6.8 nats scaled to the checkpoint's vocabulary (high_entropy_threshold)
    hist_bins: int = 48
    hist_max: float = 12.0           # log(151,674) = 11.93: the largest entropy the 38B vocabulary allows
    chunk_size: int = 512
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"   # bfloat16 on GPU
    device: str = "cpu"
    seed: int = 0

# -----------------------------------------------------------------------------
# 4. checkpoint selection: correlation with accuracy (Fig. 5), distributions (Fig. 10)


def pearson(x, y):
    """Pearson r of two equal-length sequences; nan when fewer than 2 points or either is constant."""
    if len(x) != len(y):
        raise ValueError(f"pearson: {len(x)} vs {len(y)} values")
    n = len(x)
    if n < 2:
        return float("nan")
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def average_ranks(values):
    """1-based ranks; tied values share the mean of the ranks they span ([10, 20, 20] -> [1, 2.5, 2.5])."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y):
    """Spearman rho = Pearson r of the average ranks (exact with ties)."""
    return pearson(average_ranks(x), average_ranks(y))


def read_accuracy(path):
    """eval.py's summary.json (top-level "accuracy"), or a directory holding one (DIR/summary.json,
    DIR/eval/summary.json)."""
    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / "summary.json", path / "eval" / "summary.json") if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{path}: no summary.json or eval/summary.json inside")
        path = found[0]
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    acc = summary.get("accuracy") if isinstance(summary, dict) else None
    if isinstance(acc, bool) or not isinstance(acc, (int, float)):
        raise ValueError(f"{path}: field 'accuracy' must be a number, got {acc!r}")
    return float(acc), str(path)


def read_generation_rows(path):
    """JSONL rows {checkpoint?, id, sample?, prompt_ids? | prompt?, response_ids | response}; errors cite file:line.
    eval.py's generations.jsonl has this shape (id, sample, response)."""
    rows = []
    for where, row in data.read_jsonl(path):
        if not isinstance(row, dict) or "id" not in row:
            raise ValueError(f"{where}: a generation must be an object with an 'id'")
        if not isinstance(row.get("response_ids"), list) and not isinstance(row.get("response"), str):
            raise ValueError(f"{where}: needs 'response_ids' (list of ints) or 'response' (string)")
        for key in ("response_ids", "prompt_ids"):
            if key in row and not (isinstance(row[key], list) and all(type(t) is int for t in row[key])):
                raise ValueError(f"{where}: field {key!r} must be a list of ints")
        rows.append(dict(row, id=str(row["id"]), where=where))
    if not rows:
        raise ValueError(f"{path}: no generations")
    return rows


def rows_for_checkpoint(rows, ckpt):
    """Rows naming this checkpoint (as given, resolved, or by directory name); rows without a checkpoint field
    are scored under every checkpoint (the same text, teacher-forced through each model)."""
    names = {str(ckpt), str(Path(ckpt).resolve()), Path(ckpt).name}
    picked = [r for r in rows if "checkpoint" not in r or str(r["checkpoint"]) in names
              or Path(str(r["checkpoint"])).name == Path(ckpt).name]
    if not picked:
        raise ValueError(f"no generations for checkpoint {ckpt} (rows name: "
                         f"{sorted({str(r.get('checkpoint')) for r in rows})[:5]})")
    return picked


def build_prompt_inputs(row, records, tokenizer, config, cfg):
    """-> (prompt ids, pixel_values or None) of a generation row, from prompt_ids / prompt / the data record."""
    record = records.get(row["id"])
    encoded = data.encode_prompt(tokenizer, config, record, mode=cfg.mode) if record is not None else None
    pixel_values = encoded["pixel_values"] if encoded else None
    if "prompt_ids" in row:
        return row["prompt_ids"], pixel_values
    if isinstance(row.get("prompt"), str):
        text = row["prompt"]
        if encoded and encoded["num_tiles"]:
            text = chat.expand_image_tokens(text, encoded["num_tiles"], config.num_image_token)
        return tokenizer.encode(text, add_special_tokens=False), pixel_values
    if encoded is None:
        raise ValueError(f"{row['where']}: id {row['id']!r} is not in --data and the row has no prompt/prompt_ids")
    return encoded["input_ids"], pixel_values


@torch.no_grad()
def score_response(net, prompt_ids, response_ids, pixel_values, chunk_size):
    """Teacher-forced forward over prompt + response -> (logprobs [L], entropy [L]) at T = 1, aligned so that
    index t belongs to the distribution that sampled response_ids[t]."""
    device = next(net.parameters()).device
    P, L = len(prompt_ids), len(response_ids)
    if P == 0:
        raise ValueError("empty prompt: the first response token has no distribution to score")
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=device)
    pv = pixel_values.to(device=device, dtype=next(net.parameters()).dtype) if pixel_values is not None else None
    hidden = net(ids, pixel_values=pv, return_hidden=True)[0]  # [P+L, D]
    lm_head = net.language_model.get_output_embeddings()
    if getattr(lm_head, "bias", None) is not None:
        raise ValueError("lm_head has a bias; token_logprobs_and_entropy assumes logits = hidden @ W.T")
    return token_logprobs_and_entropy(hidden[P - 1:P + L - 1], lm_head.weight, ids[0, P:], chunk_size)


def sample_rows(net, tokenizer, records, cfg, ckpt):
    """Responses of one checkpoint with decode.generate: samples_per_prompt per record, the same seed for every
    checkpoint. -> generation rows (also written to OUT/generations.jsonl for reuse with --generations)."""
    prompts = []
    for record in records:
        encoded = data.encode_prompt(tokenizer, net.config, record, mode=cfg.mode)
        prompts += [(record, s, encoded) for s in range(cfg.samples_per_prompt)]
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    device, dtype = next(net.parameters()).device, next(net.parameters()).dtype
    rows, t0 = [], time.time()
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts[start:start + cfg.batch_size]
        pvs = [e["pixel_values"] for _, _, e in batch if e["pixel_values"] is not None]
        pixel_values = torch.cat(pvs).to(device=device, dtype=dtype) if pvs else None
        outs = decode.generate(net, [e["input_ids"] for _, _, e in batch], pixel_values=pixel_values,
                                 max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                 stop_token_ids=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id or 0,
                                 generator=generator)
        for (record, s, e), out in zip(batch, outs):
            rows.append({"checkpoint": str(ckpt), "id": record.id, "sample": s, "prompt_ids": e["input_ids"],
                         "response_ids": out["token_ids"], "logprobs": out["logprobs"],
                         "finish_reason": out["finish_reason"],
                         "response": tokenizer.decode(out["token_ids"], skip_special_tokens=False),
                         "where": f"sampled {record.where}"})
        print(f"  sampled {len(rows)}/{len(prompts)} responses ({time.time() - t0:.0f}s)")
    return rows


def stage_label(ckpt):
    """out/demo/sft/step_000300 -> "sft/step_000300": the stage (the run's directory) beside the step, so that an
    SFT checkpoint is not read as a late GRPO step."""
    ckpt = Path(ckpt)
    return f"{ckpt.parent.name}/{ckpt.name}" if ckpt.name.startswith("step_") and ckpt.parent.name else ckpt.name


def plot_checkpoints(table, path, cfg):
    """Fig. 5 (critical-token entropy vs accuracy) + Fig. 10 (token-entropy distribution, mean and share > 6.8)."""
    names = [r["name"] for r in table]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    with_acc = [r for r in table if r["accuracy"] is not None and not math.isnan(r["critical_entropy_mean"])]
    if with_acc:
        ax.scatter([r["critical_entropy_mean"] for r in with_acc], [r["accuracy"] for r in with_acc])
        for r in with_acc:
            ax.annotate(r["name"], (r["critical_entropy_mean"], r["accuracy"]), fontsize=8)
        ax.set_xlabel("critical-token entropy (nats)")
        ax.set_ylabel("accuracy")
        ax.set_title("critical-token entropy vs accuracy (Fig. 5)")
    else:
        ax.bar(names, [r["critical_entropy_mean"] for r in table])
        ax.set_ylabel("critical-token entropy (nats)")
        ax.set_title("critical-token entropy (no accuracies given)")
        ax.tick_params(axis="x", rotation=30)
    ax = axes[1]
    for r in table:
        edges, counts = r["histogram"]["edges"], r["histogram"]["counts"]
        total = max(sum(counts), 1)
        ax.stairs([c / total for c in counts], edges, label=r["name"])
    ax.axvline(cfg.high_threshold, color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("token entropy (nats)")
    ax.set_ylabel("share of tokens")
    ax.set_title("token-entropy distribution (Fig. 10)")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(names, [r["mean_token_entropy"] for r in table], "o-", label="mean token entropy")
    ax.set_ylabel("mean token entropy (nats)")
    ax.tick_params(axis="x", rotation=30)
    twin = ax.twinx()
    twin.plot(names, [r["high_entropy_frac"] for r in table], "s--", color="C1",
              label=f"share H > {cfg.high_threshold:.2f}")
    twin.set_ylabel(f"share of tokens with H > {cfg.high_threshold:.2f}")
    ax.set_title("mean entropy and high-entropy share (Fig. 10)")
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


NAN_FIELDS = ("critical_entropy_mean", "mean_token_entropy", "high_entropy_frac")   # nan when nothing counted


def scoring_sha256(ckpt, rows, cfg):
    """What a checkpoint's scores depend on: its weights and tokenizer (by content), the responses, the records
    that give their prompts and images, and the scoring settings. Equal -> the same numbers (--reuse)."""
    settings = {k: getattr(cfg, k) for k in ("mode", "words", "high_threshold", "hist_bins", "hist_max",
                                             "chunk_size", "dtype", "device")}
    key = [checkpoint.model_sha256(ckpt), checkpoint.file_sha256(cfg.data) if cfg.data else None, settings,
           [{k: v for k, v in r.items() if k != "where"} for r in rows]]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def accuracy_of(cfg, i, ckpt):
    """(accuracy, its source) of checkpoint i: --accuracies, else a summary.json beside it, else (None, None)."""
    if cfg.accuracies:
        return read_accuracy(cfg.accuracies[i])
    for candidate in (Path(ckpt) / "summary.json", Path(ckpt) / "eval" / "summary.json"):
        if candidate.is_file():
            return read_accuracy(candidate)
    return None, None


def parse_args(argv):
    """EntropyConfig from --key value / --key=value (lists: --checkpoints A B C), configurator.py's parser."""
    cfg = configurator.parse_config(EntropyConfig, argv)
    if not cfg.checkpoints:
        raise ValueError("--checkpoints DIR... is required")
    if not cfg.data and not cfg.generations:
        raise ValueError("give --data VAL.jsonl (prompts to sample) and/or --generations FILE")
    if cfg.accuracies and len(cfg.accuracies) != len(cfg.checkpoints):
        raise ValueError(f"--accuracies: {len(cfg.accuracies)} paths for {len(cfg.checkpoints)} checkpoints")
    return cfg


def main(argv=None):
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    records = data.read_records(cfg.data) if cfg.data else []
    if cfg.num_prompts and not cfg.generations:
        records = records[:cfg.num_prompts]
    by_id = {r.id: r for r in records}
    given_rows = read_generation_rows(cfg.generations) if cfg.generations else None
    reusable = {}   # scored_sha256 -> {"row", "from"}: the rows of --reuse tables, their nan back from JSON's null
    for path in cfg.reuse:
        for row in json.loads(Path(path).read_text())["checkpoints"]:
            if row.get("scored_sha256"):
                row = {k: (math.nan if v is None else v) if k in NAN_FIELDS else v for k, v in row.items()}
                row["critical_entropy_per_response"] = [math.nan if v is None else v
                                                        for v in row["critical_entropy_per_response"]]
                reusable[row["scored_sha256"]] = {"row": {k: v for k, v in row.items() if k != "rank"},
                                                  "from": f"{path}, {row['name']}"}
    dtype = tu.torch_dtype(cfg.dtype, cfg.device)
    table, sampled = [], []
    for i, ckpt in enumerate(cfg.checkpoints):
        print(f"[{i + 1}/{len(cfg.checkpoints)}] {ckpt}")
        net = model.load_model(ckpt, dtype=dtype, device=cfg.device).eval()
        tokenizer = chat.load_tokenizer(ckpt)
        sequences = critical_token_sequences(tokenizer, cfg.words)
        if not cfg.high_threshold:   # one threshold for the whole table: the checkpoints share a vocabulary
            cfg.high_threshold = high_entropy_threshold(net.language_model.get_output_embeddings().weight.shape[0])
            print(f"  high-entropy threshold: {cfg.high_threshold:.3f} nats (6.8 scaled by log V / log 151,674)")
        if given_rows is not None:
            rows = rows_for_checkpoint(given_rows, ckpt)
        else:
            if not records:
                raise ValueError(f"{cfg.data}: no records to sample from")
            rows = sample_rows(net, tokenizer, records, cfg, ckpt)
            sampled += rows
        scored_sha256 = scoring_sha256(ckpt, rows, cfg) if given_rows is not None else None
        if scored_sha256 in reusable:   # the same scores, computed once (demo.sh: Fig. 10 reuses Fig. 5's)
            print(f"  scored already: {reusable[scored_sha256]['from']}")
            table.append(dict(reusable[scored_sha256]["row"], checkpoint=str(ckpt), name=stage_label(ckpt),
                              **dict(zip(("accuracy", "accuracy_source"), accuracy_of(cfg, i, ckpt)))))
            continue
        entropies, criticals = [], []
        for row in rows:
            response_ids = row.get("response_ids")
            if response_ids is None:
                response_ids = tokenizer.encode(row["response"], add_special_tokens=False)
            if not response_ids:
                continue
            prompt_ids, pixel_values = build_prompt_inputs(row, by_id, tokenizer, net.config, cfg)
            _, ent = score_response(net, prompt_ids, response_ids, pixel_values, cfg.chunk_size)
            entropies.append(ent.cpu())
            criticals.append(critical_mask(response_ids, sequences))
        if not entropies:
            raise ValueError(f"{ckpt}: every response is empty; nothing to score")
        width = max(len(e) for e in entropies)
        ent = torch.zeros(len(entropies), width)
        mask = torch.zeros(len(entropies), width, dtype=torch.bool)
        crit = torch.zeros_like(mask)
        for j, (e, c) in enumerate(zip(entropies, criticals)):
            ent[j, :len(e)], mask[j, :len(e)], crit[j, :len(e)] = e, True, c
        metrics = entropy_metrics(ent, mask, crit, cfg.high_threshold, cfg.hist_bins, cfg.hist_max)
        accuracy, accuracy_source = accuracy_of(cfg, i, ckpt)
        per_sample = metrics.pop("per_sample")
        table.append({"checkpoint": str(ckpt), "name": stage_label(ckpt), "accuracy": accuracy,
                      "accuracy_source": accuracy_source, "num_responses": len(entropies), **metrics,
                      "critical_entropy_per_response": per_sample["critical_entropy_mean"],
                      "scored_sha256": scored_sha256})
        print(f"  {len(entropies)} responses, {metrics['num_tokens']} tokens, {metrics['critical_count']} critical: "
              f"critical H {metrics['critical_entropy_mean']:.3f}, mean H {metrics['mean_token_entropy']:.3f}, "
              f"H>{cfg.high_threshold:.2f} {metrics['high_entropy_frac']:.4f}")
        del net
    if sampled:
        with open(out / "generations.jsonl", "w", encoding="utf-8") as f:
            for row in sampled:
                f.write(json.dumps({k: v for k, v in row.items() if k != "where"}, ensure_ascii=False) + "\n")

    # rank: higher critical-token entropy = more genuine reasoning (§5.1); checkpoints without critical tokens last
    crit = [r["critical_entropy_mean"] for r in table]
    order = sorted(range(len(table)), key=lambda j: math.inf if math.isnan(crit[j]) else -crit[j])
    for rank, j in enumerate(order, start=1):
        table[j]["rank"] = rank
    paired = [r for r in table if r["accuracy"] is not None and not math.isnan(r["critical_entropy_mean"])]
    correlation = None
    if paired:
        xs, ys = [r["critical_entropy_mean"] for r in paired], [r["accuracy"] for r in paired]
        correlation = {"n": len(paired), "pearson": pearson(xs, ys), "spearman": spearman(xs, ys)}
    plot_checkpoints(table, out / "entropy.png", cfg)

    def clean(x):  # JSON has no nan
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    result = {"checkpoints": [table[j] for j in order], "correlation": correlation,
              "critical_token_sequences": [{"ids": s, "text": tokenizer.decode(s)} for s in sequences],
              "config": asdict(cfg)}
    (out / "entropy_table.json").write_text(json.dumps(clean(result), indent=1))
    print(f"{'rank':>4}  {'checkpoint':<30} {'crit H':>8} {'n crit':>7} {'mean H':>8} {'H>thr':>8} {'acc':>7}")
    for j in order:
        r = table[j]
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        print(f"{r['rank']:>4}  {r['name']:<30} {r['critical_entropy_mean']:>8.3f} {r['critical_count']:>7} "
              f"{r['mean_token_entropy']:>8.3f} {r['high_entropy_frac']:>8.4f} {acc:>7}")
    if correlation:
        print(f"critical-token entropy vs accuracy over {correlation['n']} checkpoints: "
              f"pearson {correlation['pearson']:.3f}, spearman {correlation['spearman']:.3f}")
    print(f"wrote {out / 'entropy_table.json'}, {out / 'entropy.png'}")
    return result


if __name__ == "__main__":
    main()
