"""The tables and plots that launch.sh and demo.sh write: accuracy tables from eval.py's summaries, training curves
from metrics.jsonl files (report.py's over seeds too), and the demo's closing lines. Nothing here trains or
evaluates; it only reads outputs.

    python tables.py acc_table OUT.md TITLE LABEL=EVAL_DIR...        one row per eval.py out_dir
    python tables.py plot_curves OUT.png METRIC,METRIC... LABEL=metrics.jsonl...
    python tables.py demo_summary DEMO_DIR                           the lines after the demo's table (stdout)
    python tables.py table1 OUT.md EVAL_DIR                          Table 1, the paper's column beside ours

Positional arguments, not the scripts' `--key=value` configs: these are called by the shell scripts with a list
of LABEL=PATH pairs, which reads best as it is written in launch.sh.
"""
import json
import math
import os
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

import records  # noqa: E402
from table1_spec import HUB_NAMES, TABLE1  # noqa: E402


def write_text(path, text):
    """Atomic write: a reader never sees half a table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_runs(eval_dir):
    """eval.py out_dir -> its summary.json's runs: {"BENCH/MODE/BUDGET": {"accuracy", "std", "avg_tokens", "k"}}."""
    path = Path(eval_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no eval.py summary (did the eval of {eval_dir} finish?)")
    return json.loads(path.read_text())["runs"]


def acc_table(title, rows):
    """rows [(label, runs)] -> markdown: a row per label, a column per run key (test first), mean tokens last."""
    cols = []
    for _, runs in rows:
        cols += sorted((k for k in runs if k not in cols), key=lambda k: (k.split("/")[0] != "test", k))
    lines = [f"## {title}", "", "| | " + " | ".join(c.replace("/think/full", "") for c in cols) + " | tokens |",
             "|---" * (len(cols) + 2) + "|"]
    for label, runs in rows:
        cells = [f"{100 * runs[c]['accuracy']:.1f} ± {100 * runs[c]['std']:.1f}" if c in runs else "-" for c in cols]
        tokens = sum(r["avg_tokens"] for r in runs.values()) / len(runs)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {tokens:.0f} |")
    k = {r["k"] for _, runs in rows for r in runs.values()}
    lines += ["", f"accuracy (%) = avg@{'/'.join(map(str, sorted(k)))} at T = 1.0 ± std over the k runs"]
    return "\n".join(lines) + "\n"


def plot_curves(out, metrics, runs):
    """Training curves side by side: a panel per metric, a line per (label, metrics.jsonl) run; steps where a
    metric is missing or not a number are left out of its line."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    for label, path in runs:
        rows = [r for _, r in records.read_jsonl(path, appended_log=True)]  # (file:line, record) pairs
        for ax, m in zip(axes[0], metrics):
            pts = [(r["step"], r[m]) for r in rows if isinstance(r.get(m), (int, float))]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
    for ax, m in zip(axes[0], metrics):
        ax.set_title(m)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    save(fig, out, dpi=110)


def smooth(values, width):
    """Centred moving average over `width` points (shorter at the ends)."""
    h = width // 2
    return [statistics.fmean(values[max(0, i - h):i + h + 1]) for i in range(len(values))]


def plot_arms(path, seeds, metrics, arms):
    """report.py's training curves over seeds: a panel per metric; per arm a thin line per seed, the seeds' mean
    (smoothed), and the band between the lowest and highest seed (smoothed). arms: [(label, run dir under each
    seed)]; seeds: report.Seeds (its .seeds and .metrics(seed, run))."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.6), squeeze=False)
    for color, (label, run) in enumerate(arms):
        curves = {}
        for s in seeds.seeds:
            rows = seeds.metrics(s, run) or []
            for m in metrics:
                pts = {r["step"]: r[m] for r in rows if isinstance(r.get(m), (int, float)) and math.isfinite(r[m])}
                if pts:
                    curves.setdefault(m, []).append(pts)
        for ax, m in zip(axes[0], metrics):
            per_seed = curves.get(m, [])
            if not per_seed:
                continue
            steps = sorted(set.intersection(*(set(p) for p in per_seed)))
            if not steps:
                continue
            width = max(1, len(steps) // 10)
            lines = [smooth([p[t] for t in steps], width) for p in per_seed]
            for line in lines:
                ax.plot(steps, line, color=f"C{color}", lw=0.6, alpha=0.4)
            ax.fill_between(steps, [min(v) for v in zip(*lines)], [max(v) for v in zip(*lines)], color=f"C{color}",
                            alpha=0.15)
            ax.plot(steps, [statistics.fmean(v) for v in zip(*lines)], color=f"C{color}", lw=1.8,
                    label=f"{label} ({len(lines)} seeds)")
    for ax, m in zip(axes[0], metrics):
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save(fig, path)


def plot_points(path, title, xlabel, ylabel, series):
    """series: [(label, xs, [per-seed ys])] -> a line per seed (thin) and the mean (bold)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for color, (label, xs, per_seed) in enumerate(series):
        for ys in per_seed:
            pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=f"C{color}", lw=0.6, ms=3, alpha=0.5)
        means = [statistics.fmean(v) if None not in v else None for v in zip(*per_seed)] if per_seed else []
        pts = [(x, y) for x, y in zip(xs, means) if y is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s-", color=f"C{color}", lw=2, label=f"{label} (mean)")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    save(fig, path)


def save(fig, path, dpi=100):
    """Atomic PNG write, as write_text: a reader never sees half a plot."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)


def demo_summary(demo):
    """The lines after the demo's table: GRPO's gain over cold-start SFT on test, and the entropy-based pick once
    fig5 (demo.sh fig5, or paper_demo) has made it; until then, the command that makes it."""
    demo = Path(demo)
    acc = {s: read_runs(demo / "eval" / s)["test/think/full"]["accuracy"] for s in ("sft", "grpo")}
    lines = f"\nGRPO - cold-start SFT on test: {100 * (acc['grpo'] - acc['sft']):+.1f} points\n\n"
    table = demo / "entropy" / "entropy_table.json"
    if not table.is_file():
        return lines + ("Entropy-based selection over the GRPO checkpoints (§5.1): `SCALE=demo bash launch.sh fig5` "
                        "(with this run's SEED) scores every checkpoint's val responses, reusing its stages\n")
    entropy = json.loads(table.read_text())
    best = entropy["checkpoints"][0]  # entropy.py sorts them best first
    corr = entropy["correlation"] or {}
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    return lines + (f"Entropy-based selection over the GRPO checkpoints (§5.1): {best['name']}, critical-token "
                    f"entropy {fmt(best['critical_entropy_mean'])} nats, val accuracy {fmt(best['accuracy'])}; "
                    f"Pearson(entropy, val accuracy) over {len(entropy['checkpoints'])} checkpoints "
                    f"{fmt(corr.get('pearson'))} ({demo / 'entropy' / 'entropy.png'})\n")


def table1(runs):
    """eval.py's runs of out/table1 -> the paper's Table 1 layout: the paper's column beside ours, each row with
    the metric it reports and the judge (rules, or rules+model) that gave its verdicts."""
    lines = ["## Table 1: Skywork-R1V3-38B, paper vs this run", "",
             "| benchmark | metric | paper | ours (avg@k ± std) | judge | files |", "|---|---|---|---|---|---|"]
    section = None
    for sec, label, paper, stems in TABLE1:
        if sec != section:
            lines.append(f"| *{sec}* | | | | | |")
            section = sec
        found = [runs.get(f"{s}/think/full") or runs.get(f"{HUB_NAMES.get(s)}/think/full") for s in stems]
        found = [r for r in found if r]
        if len(found) == len(stems):
            ours = f"{100 * sum(r['accuracy'] for r in found) / len(found):.1f} ± " \
                   f"{100 * max(r['std'] for r in found):.1f} (k={found[0]['k']})"
            metric = " / ".join(sorted({r.get("metric", "acc.") for r in found}))
            judge = " / ".join(sorted({r.get("judge", {}).get("by", "rules") for r in found}))
            counts = [r.get("judge", {}).get("samples", {}) for r in found]
            unparsed = sum(c.get("unparseable", 0) + c.get("failed", 0) for c in counts)
            judge += f" ({unparsed} samples without a judge verdict)" if unparsed else ""
        else:
            ours, metric, judge = "not run", "", ""
        lines.append(f"| {label} | {metric} | {paper:.1f} | {ours} | {judge} | {', '.join(stems)} |")
    lines += ["", "paper: Table 1 of the report (avg@5, T = 1.0, 16,384 tokens). MMMU-Pro: the mean of its two "
              "settings (± the larger std). Where ours still differs from the paper's protocol: summary.json "
              "\"deviations\" and README."]
    return "\n".join(lines) + "\n"


def label_pairs(args):
    """["LABEL=PATH", ...] -> [(label, path)]; the label may not be empty and must be followed by '='."""
    pairs = [a.split("=", 1) for a in args]
    bad = [a for a, p in zip(args, pairs) if len(p) != 2 or not p[0] or not p[1]]
    if bad or not pairs:
        raise SystemExit(f"tables.py: expected LABEL=PATH arguments, got {bad or 'none'}")
    return pairs


def main(argv):
    command, args = (argv[0], argv[1:]) if argv else ("help", [])
    if command == "acc_table" and len(args) >= 3:
        out, title, pairs = args[0], args[1], label_pairs(args[2:])
        text = acc_table(title, [(label, read_runs(d)) for label, d in pairs])
        write_text(out, text)
        print(text, end="")
    elif command == "plot_curves" and len(args) >= 3:
        plot_curves(args[0], args[1].split(","), label_pairs(args[2:]))
        print(f"wrote {args[0]}")
    elif command == "table1" and len(args) == 2:
        text = table1(read_runs(args[1]))
        write_text(args[0], text)
        print(text, end="")
    elif command == "demo_summary" and len(args) == 1:
        print(demo_summary(args[0]), end="")
    else:
        raise SystemExit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main(sys.argv[1:])
