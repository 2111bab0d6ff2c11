"""The paper's claims at demo scale, over seeds: `bash launch.sh paper_demo` runs every demo target once per seed
(demo.sh all_targets under PAPER_DEMO/seedN), then this writes PAPER_DEMO/report.md: one section per table or
figure with the paper's claim, our per-seed numbers, a plot, and a verdict per claim.

    python report.py out/paper_demo --seeds 0 1 2 [--wall_s S] [--readme README.md]

Statistics. Every claim is a paired difference between two arms of the same seed (same data, same start): we
report the per-seed differences, their mean and a 95% Student-t interval, mean ± t(0.975, n-1) * sd / sqrt(n).
With n = 3 seeds t = 4.30, so the interval is ±2.5 sample standard deviations wide: only a difference that is
large against its seed-to-seed spread leaves it. Verdicts: "reproduced" when the interval lies entirely on the
paper's side of 0, "not reproduced" when it lies entirely on the other side (a result against the paper stays in
the report), "inconclusive" otherwise (the reason names the interval), or when fewer than 2 seeds have the numbers.

Nothing here trains or evaluates: it reads eval.py summaries, grpo.py metrics.jsonl and entropy.py tables. A file
that is missing is named in its section (that seed is left out of the claim), never silently skipped.
"""
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

import configurator  # noqa: E402
import data  # noqa: E402
from grpo_metrics import NO_SIGNAL_WARNING  # noqa: E402
from tables import write_text  # noqa: E402

# two-sided 95% Student-t quantiles t(0.975, df), df = n - 1 (from any t table; scipy is not a dependency)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}
MIN_PHRASE_RESPONSES = 20   # Table 5: responses with the phrase a seed needs before its "with" accuracy counts


def t975(df):
    """t(0.975, df); between table entries the next smaller df's (wider, conservative); 1.96 beyond 30."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    return T975[max(d for d in T975 if d <= df)] if df <= 30 else 1.96


def paired(a, b):
    """Per-seed values of two arms (None or NaN = missing) -> the paired difference a - b over the seeds that have
    both:
    {"diffs", "n", "mean", "sd", "half", "lo", "hi"} (sd is the sample sd; half = t * sd / sqrt(n); with n < 2
    there is no interval and half/lo/hi are None)."""
    if len(a) != len(b):
        raise ValueError(f"paired: {len(a)} values against {len(b)}")
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x - y)]
    n = len(diffs)
    out = {"diffs": diffs, "n": n, "mean": statistics.fmean(diffs) if n else None, "sd": None, "half": None,
           "lo": None, "hi": None}
    if n >= 2:
        out["sd"] = statistics.stdev(diffs)
        out["half"] = t975(n - 1) * out["sd"] / math.sqrt(n)
        out["lo"], out["hi"] = out["mean"] - out["half"], out["mean"] + out["half"]
    return out


def verdict(stats, sign):
    """sign +1: the paper says a - b > 0; -1: a - b < 0. -> (verdict, reason)."""
    n = stats["n"]
    if n < 2:
        return "inconclusive", f"{n} seed(s) with numbers: no interval"
    lo, hi, m = stats["lo"], stats["hi"], stats["mean"]
    interval = f"95% interval [{lo:+.2f}, {hi:+.2f}] over {n} seeds (t = {t975(n - 1):.2f}, ±{stats['half']:.2f})"
    if sign * lo > 0 and sign * hi > 0:
        return "reproduced", f"{interval} excludes 0 on the paper's side"
    if sign * lo < 0 and sign * hi < 0:
        return "not reproduced", f"{interval} excludes 0 on the other side: against the paper"
    side = "mean 0" if m == 0 else f"mean on {'the paper’s' if sign * m > 0 else 'the opposite'} side"
    return "inconclusive", f"{interval} contains 0 ({side})"


# -----------------------------------------------------------------------------
# reading one seed's outputs (None when missing; the file is recorded in `missing`)

class Seeds:
    def __init__(self, root, seeds):
        self.root, self.seeds, self.missing = Path(root), list(seeds), []

    def dir(self, seed):
        return self.root / f"seed{seed}"

    def _json(self, path):
        if not path.is_file():
            self.missing.append(str(path))
            return None
        return json.loads(path.read_text())

    def run(self, seed, eval_name, bench, mode="think", budget=None):
        """One eval.py run of $DEMO/eval/EVAL_NAME: {"accuracy", "avg_tokens", "hallucination", ...} or None."""
        summary = self._json(self.dir(seed) / "eval" / eval_name / "summary.json")
        for r in (summary or {}).get("runs", {}).values():
            if r["benchmark"] == bench and r["mode"] == mode and r["budget"] == budget:
                return r
        if summary is not None:
            self.missing.append(f"{self.dir(seed) / 'eval' / eval_name}: no run {bench}/{mode}/{budget}")
        return None

    def acc(self, eval_name, bench, mode="think", budget=None):
        """Accuracy (%) per seed."""
        runs = [self.run(s, eval_name, bench, mode, budget) for s in self.seeds]
        return [None if r is None else 100 * r["accuracy"] for r in runs]

    def acc_mean(self, eval_name, benches=("test", "ood")):
        """Mean accuracy (%) over benches, per seed (the demo's stand-in for one overall benchmark score)."""
        per = [self.acc(eval_name, b) for b in benches]
        return [None if None in vals else statistics.fmean(vals) for vals in zip(*per)]

    def tokens(self, eval_name, bench, mode="think", budget=None):
        runs = [self.run(s, eval_name, bench, mode, budget) for s in self.seeds]
        return [None if r is None else r["avg_tokens"] for r in runs]

    def metrics(self, seed, run):
        """grpo.py metrics.jsonl of $DEMO/RUN -> [rows] (None when missing)."""
        path = self.dir(seed) / run / "metrics.jsonl"
        if not path.is_file():
            self.missing.append(str(path))
            return None
        return [r for _, r in data.read_jsonl(path, appended_log=True)]

    def entropy_table(self, seed, name):
        return self._json(self.dir(seed) / name / "entropy_table.json")


def window_mean(rows, metric, first, last):
    """Mean of a metric over steps first..last (1-based, inclusive) of a metrics.jsonl; None when absent."""
    if rows is None:
        return None
    vals = [r[metric] for r in rows if first <= r["step"] <= last and isinstance(r.get(metric), (int, float))]
    return statistics.fmean(vals) if vals else None


def dead_arms(seeds, runs):
    """Warnings for GRPO arms that did not train: as many steps without a learning signal as
    grpo.py warns about (grpo_metrics.NO_SIGNAL_WARNING)."""
    out = []
    for s in seeds.seeds:
        for run in runs:
            rows = seeds.metrics(s, run)
            if rows and rows[-1].get("train/no_signal_steps", 0) >= NO_SIGNAL_WARNING:
                out.append(f"**WARNING: seed {s} `{run}` did not train**: {rows[-1]['train/no_signal_steps']:.0f} of "
                           f"{len(rows)} steps had no learning signal (all rewards in each group equal, or zero "
                           f"gradient); reward/mean at the end {rows[-1]['reward/mean']:.3f}")
    return out


# -----------------------------------------------------------------------------
# plots

def smooth(values, width):
    """Centred moving average over `width` points (shorter at the ends)."""
    h = width // 2
    return [statistics.fmean(values[max(0, i - h):i + h + 1]) for i in range(len(values))]


def plot_arms(path, seeds, metrics, arms):
    """Training curves: a panel per metric; per arm a thin line per seed, the seeds' mean (smoothed), and the band
    between the lowest and highest seed (smoothed). arms: [(label, run dir under each seed)]."""
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


def save(fig, path):
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


# -----------------------------------------------------------------------------
# the report's pieces

def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def value_table(seeds, rows, unit=""):
    """rows: [(label, per-seed values)] -> markdown: a column per seed, then the mean over the seeds that have it."""
    head = "| | " + " | ".join(f"seed {s}" for s in seeds.seeds) + " | mean |"
    lines = [head, "|---" * (len(seeds.seeds) + 2) + "|"]
    for label, vals in rows:
        have = [v for v in vals if v is not None]
        mean = statistics.fmean(have) if have else None
        lines.append(f"| {label} | " + " | ".join(fmt(v) for v in vals) + f" | {fmt(mean)}{unit} |")
    return "\n".join(lines)


class Claim:
    """One claim: the paired difference a - b, the side the paper is on, and what the paper measured."""

    def __init__(self, target, text, paper, a, b, sign, unit="points"):
        self.target, self.text, self.paper, self.sign, self.unit = target, text, paper, sign, unit
        self.stats = paired(a, b)
        self.verdict, self.reason = verdict(self.stats, sign)

    def line(self):
        st = self.stats
        diffs = ", ".join(f"{d:+.2f}" for d in st["diffs"]) or "none"
        mean = "-" if st["mean"] is None else f"{st['mean']:+.2f} {self.unit}"
        return (f"- {self.text} (paper: {self.paper}). Ours: mean {mean}, per seed [{diffs}]. "
                f"**Verdict: {self.verdict}** ({self.reason}).")

    def row(self):
        st = self.stats
        ours = "-" if st["mean"] is None else f"{st['mean']:+.1f}"
        if st["lo"] is not None:
            ours += f" [{st['lo']:+.1f}, {st['hi']:+.1f}]"
        return f"| {self.target} | {self.text} | {self.paper} | {ours} (n = {st['n']}) | {self.verdict} |"


def build(seeds, out):
    """-> (sections [(title, markdown)], claims). Each section: claim, numbers, plot, verdict lines."""
    sections, claims = [], []
    S = seeds

    def section(title, paper, body, plot=None, new_claims=(), notes=()):
        claims.extend(new_claims)
        parts = [f"## {title}", "", f"Paper: {paper}", "", body]
        if plot:
            parts += ["", f"![{title}]({plot})"]
        parts += [""] + [c.line() for c in new_claims] + [f"- {n}" for n in notes]
        sections.append((title, "\n".join(parts)))

    # Table 1: the eval suite
    rows = [(f"{b} (connector-tuned)", S.acc("connector" if b != "val" else "table1_val", b))
            for b in ("test", "ood", "val")]
    section("Table 1: the eval suite", "Table 1 reports the released model on its benchmarks (no claim to test).",
            value_table(S, rows, " %") + "\n\naccuracy (%) = avg@k at T = 1.0 of the final checkpoint",
            notes=["Verdict: n/a (no claim; this is the suite the other sections use)."])

    # Table 2: tuning after RL
    arms = [("RL stage (baseline)", "grpo"), ("connector-only", "connector"),
            ("connector + LLM", "table2_connector+llm"), ("connector + ViT + LLM", "table2_connector+vision+llm")]
    vals = {label: S.acc_mean(name) for label, name in arms}
    plot_points(out / "table2.png", "Table 2 (demo): mean of test and ood", "", "accuracy (%)",
                [("accuracy", list(range(len(arms))), [[vals[label][i] for label, _ in arms]
                                                       for i in range(len(S.seeds))])])
    section("Table 2: tuning after RL", "connector-only 76.0 > RL 74.5 > connector + LLM 73.2 > connector + ViT + "
            "LLM 69.7 (MMMU)", value_table(S, [(label, v) for label, v in vals.items()], " %")
            + "\n\naccuracy (%): mean of test and ood; x axis of the plot: the rows in this order", "table2.png", [
                Claim("table2", "connector-only − RL", "+1.5", vals["connector-only"],
                      vals["RL stage (baseline)"], 1),
                Claim("table2", "connector-only − connector+LLM", "+2.8", vals["connector-only"],
                      vals["connector + LLM"], 1),
                Claim("table2", "connector-only − connector+ViT+LLM", "+6.3", vals["connector-only"],
                      vals["connector + ViT + LLM"], 1)])

    # Table 3: RL vs SFT on the same questions
    t = {(arm, b): S.acc(name, b) for arm, name in (("baseline", "sft"), ("RL", "grpo"), ("SFT", "table3_sft"))
         for b in ("test", "ood")}
    plot_points(out / "table3.png", "Table 3 (demo): in-domain (test) and out-of-domain (ood)", "0 = test, 1 = ood",
                "accuracy (%)", [(arm, [0, 1], [[t[(arm, "test")][i], t[(arm, "ood")][i]] for i in range(len(S.seeds))])
                                 for arm in ("baseline", "RL", "SFT")])
    section("Table 3: RL vs SFT on the same data", "baseline 71.3 / 68.1, RL 77.2 / 74.5, SFT 75.9 / 65.4 (in-domain "
            "MathVista / out-of-domain MMMU): only RL generalises",
            value_table(S, [(f"{arm} {b}", v) for (arm, b), v in t.items()], " %"), "table3.png", [
                Claim("table3", "RL − SFT, out of domain", "+9.1", t[("RL", "ood")], t[("SFT", "ood")], 1),
                Claim("table3", "SFT − baseline, in domain", "+4.6", t[("SFT", "test")], t[("baseline", "test")], 1),
                Claim("table3", "RL − baseline, out of domain", "+6.4", t[("RL", "ood")], t[("baseline", "ood")], 1),
                Claim("table3", "SFT − baseline, out of domain", "−2.7", t[("SFT", "ood")], t[("baseline", "ood")],
                      -1)])

    # Table 4: think / nothink / nowait
    acc = {m: S.acc("table4", "test", m) for m in ("think", "nothink", "nowait")}
    tok = {m: S.tokens("table4", "test", m) for m in ("think", "nothink", "nowait")}
    blocks = thinking_blocks(S)
    section("Table 4: slow thinking vs NoThink vs NoWait", "think 76.0 % (1272 tokens), NoThink 68.9 % (263), "
            "NoWait 74.1 % (1040)", value_table(S, [(f"{m} accuracy", acc[m]) for m in acc]
                                                + [(f"{m} tokens", tok[m]) for m in tok]), None, [
                Claim("table4", "think − NoThink accuracy", "+7.1", acc["think"], acc["nothink"], 1),
                Claim("table4", "think − NoThink tokens", "+1009", tok["think"], tok["nothink"], 1, "tokens"),
                Claim("table4", "think − NoWait accuracy", "+1.9", acc["think"], acc["nowait"], 1),
                Claim("table4", "think − NoWait tokens", "+232", tok["think"], tok["nowait"], 1, "tokens")],
            [f"NoThink responses containing <think> or </think>: {blocks} (eval.py bans both tokens in nothink mode)."])

    # Table 5: "I can't see the image", in the final checkpoint's test + ood responses (the claim) and, for
    # context, the cold-start checkpoint's: the phrase comes from the teacher's blind traces, and GRPO prunes it
    def phrase_split(eval_name):
        runs = [[S.run(s, eval_name, b) for b in ("test", "ood")] for s in S.seeds]
        counts = [sum((r or {}).get("hallucination", {}).get("with", {}).get("n", 0) for r in rs) for rs in runs]
        return {part: [pooled(rs, part) for rs in runs] for part in ("without", "with")}, counts
    split, counts = phrase_split("connector")
    cold, cold_counts = phrase_split("sft")
    # a seed's "with" accuracy from a handful of responses is noise the interval over seeds does not see: such a
    # seed leaves the claim (the counts stay in the table)
    with_counted = [v if n >= MIN_PHRASE_RESPONSES else None for v, n in zip(split["with"], counts)]
    section("Table 5: \"I can't see the image\" in the thinking", "all 76.0 % (900), without 77.3 % (853), with "
            "51.1 % (47)", value_table(S, [("without the phrase", split["without"]), ("with the phrase",
                                                                                    split["with"]),
                                         ("cold start: without the phrase", cold["without"]),
                                         ("cold start: with the phrase", cold["with"])], " %")
            + "\n\nresponses with the phrase per seed (test + ood, every sample): final " + ", ".join(map(str, counts))
            + "; cold start " + ", ".join(map(str, cold_counts))
            + f". A seed with fewer than {MIN_PHRASE_RESPONSES} in the final checkpoint is left out of the claim "
            "(too few to estimate its accuracy); the cold-start rows are context, not the claim",
            None, [Claim("table5", "accuracy without − with the phrase", "+26.2", split["without"], with_counted,
                         1)])

    # Fig. 5: critical-token entropy vs accuracy
    tables = [S.entropy_table(s, "entropy") for s in S.seeds]
    pearson = [None if tb is None else (tb.get("correlation") or {}).get("pearson") for tb in tables]
    crit = [None if tb is None else min(r["critical_count"] for r in tb["checkpoints"]) for tb in tables]
    n_ckpt = [None if tb is None else len(tb["checkpoints"]) for tb in tables]
    picked = [None if tb is None else 100 * tb["checkpoints"][0]["accuracy"] for tb in tables]
    mean_acc = [None if tb is None else 100 * statistics.fmean(r["accuracy"] for r in tb["checkpoints"])
                for tb in tables]
    series = []
    for s, tb in zip(S.seeds, tables):
        if tb:
            pts = sorted((r["critical_entropy_mean"], 100 * r["accuracy"]) for r in tb["checkpoints"]
                         if r["accuracy"] is not None and math.isfinite(r["critical_entropy_mean"]))
            series.append((f"seed {s}", [p[0] for p in pts], [[p[1] for p in pts]]))
    plot_points(out / "fig5.png", "Fig. 5 (demo): critical-token entropy vs val accuracy, GRPO checkpoints",
                "critical-token entropy (nats)", "val accuracy (%)", series)
    section("Fig. 5: critical-token entropy selects checkpoints", "critical-token entropy correlates strongly with "
            "accuracy over the GRPO checkpoints, so it selects the checkpoint", value_table(S, [
                ("GRPO checkpoints", n_ckpt), ("fewest critical tokens in a checkpoint", crit),
                ("Pearson(critical entropy, val accuracy)", pearson), ("val acc of the entropy pick (%)", picked),
                ("mean val acc over checkpoints (%)", mean_acc)]), "fig5.png", [
                Claim("fig5", "Pearson(critical entropy, val accuracy) − 0", "strong, > 0", pearson,
                      [0.0 if p is not None else None for p in pearson], 1, ""),
                Claim("fig5", "val acc of the entropy pick − mean over checkpoints", "> 0", picked, mean_acc, 1)],
            [f"seeds with a checkpoint of fewer than 200 critical tokens (the design asks >= 200): "
             f"{[s for s, c in zip(S.seeds, crit) if c is not None and c < 200] or 'none'}"])

    # Fig. 6: module activation in GRPO
    arms = [("all trainable", "grpo", "grpo"), ("frozen ViT", "fig6/connector_llm", "fig6_connector_llm"),
            ("frozen connector", "fig6/vision_llm", "fig6_vision_llm")]
    vals = {label: S.acc_mean(ev) for label, _, ev in arms}
    rew = {label: [window_mean(S.metrics(s, run), "reward/mean", 71, 80) for s in S.seeds]
           for label, run, _ in arms}
    plot_arms(out / "fig6.png", S, ["reward/mean", "train/grad_norm", "response/len_mean", "entropy/mean"],
              [(label, run) for label, run, _ in arms])
    section("Fig. 6: module activation in GRPO", "frozen connector: reward drops sharply, training fails; frozen ViT: "
            "reward close to all-trainable, all-trainable a little better (MathVista)",
            value_table(S, [(f"{label}, test/ood mean (%)", v) for label, v in vals.items()]
                        + [(f"{label}, reward steps 71-80", r) for label, r in rew.items()]), "fig6.png", [
                Claim("fig6", "all trainable − frozen connector, accuracy", "collapse: large > 0",
                      vals["all trainable"], vals["frozen connector"], 1),
                Claim("fig6", "all trainable − frozen ViT, accuracy", "small > 0", vals["all trainable"],
                      vals["frozen ViT"], 1)], dead_arms(S, [run for _, run, _ in arms]))

    # Figs. 7-8: curriculum and learning rate
    # the lr / 10 arm runs the first 20 steps of the 80-step schedule (demo.sh: the claim's window), so its
    # accuracies are at step 20
    evals = (("normal", "fig7_grpo"), ("curriculum", "fig7_curriculum"), ("lr / 10 at step 20", "fig7_low_lr"))
    normal = {label: S.acc(ev, "test") for label, ev in evals}
    hard = {label: S.acc(ev, "hard") for label, ev in evals}
    early = {label: [window_mean(S.metrics(s, run), "reward/mean", 1, 20) for s in S.seeds]
             for label, run in (("demo lr", "grpo"), ("lr / 10", "fig7_8/low_lr"))}
    plot_arms(out / "fig7_8.png", S, ["reward/mean", "reward/accuracy", "entropy/mean", "train/grad_norm"],
              [("normal, demo lr", "grpo"), ("curriculum, demo lr", "fig7_8/curriculum"),
               ("normal, lr / 10 (steps 1-20)", "fig7_8/low_lr")])
    section("Figs. 7-8: curriculum and learning rate", "a normal → hard curriculum lowers accuracy on normal "
            "problems; lr 1e-5 gains reward faster early than 1e-6", value_table(
                S, [(f"{k}: test (normal) %", v) for k, v in normal.items()]
                + [(f"{k}: hard %", v) for k, v in hard.items()]
                + [(f"{k}: reward steps 1-20", v) for k, v in early.items()]), "fig7_8.png", [
                Claim("fig7_8", "normal − curriculum on normal problems", "> 0 (drop in stage 2)", normal["normal"],
                      normal["curriculum"], 1),
                Claim("fig7_8", "demo lr − lr/10, reward over steps 1-20", "> 0 (faster)", early["demo lr"],
                      early["lr / 10"], 1, "reward")],
            dead_arms(S, ["fig7_8/curriculum", "fig7_8/low_lr"]))

    # Fig. 9: thinking budget
    budgets = budgets_of(S, "fig9")
    per_budget = {b: S.acc("fig9", "test", "think", b) for b in budgets}
    plot_points(out / "fig9.png", "Fig. 9 (demo): accuracy vs thinking budget", "thinking budget (tokens)",
                "test accuracy (%)", [("test", budgets, [[per_budget[b][i] for b in budgets]
                                                         for i in range(len(S.seeds))])] if budgets else [])
    lo_b, hi_b = (budgets[0], budgets[-1]) if budgets else (None, None)
    section("Fig. 9: accuracy vs thinking budget", "61.6 % at 1k tokens, 67.7 % at 2k, rising steadily to 16k",
            value_table(S, [(f"budget {b}", v) for b, v in per_budget.items()], " %"), "fig9.png",
            [Claim("fig9", f"accuracy at budget {hi_b} − at {lo_b}", "> 0", per_budget.get(hi_b, [None] * len(
                S.seeds)), per_budget.get(lo_b, [None] * len(S.seeds)), 1)],
            ["Mechanism at demo scale: a budget below the ~60-token trace cuts the reading of the board short, then "
             "16 tokens must answer; this tests the budget rule more than test-time scaling."])

    # Fig. 10: entropy over GRPO steps
    tables = [S.entropy_table(s, "fig10") for s in S.seeds]
    first_last = {k: ([], []) for k in ("mean_token_entropy", "high_entropy_frac")}
    series = {k: [] for k in first_last}
    for tb in tables:
        grpo_rows = sorted((r for r in (tb or {}).get("checkpoints", []) if r["name"].startswith("grpo/")),
                           key=lambda r: r["name"])
        for k in first_last:
            first_last[k][0].append(grpo_rows[0][k] if grpo_rows else None)
            first_last[k][1].append(grpo_rows[-1][k] if grpo_rows else None)
            series[k].append([r[k] for r in grpo_rows])
    threshold = next((tb["config"]["high_threshold"] for tb in tables if tb), None)
    steps = [int(re.sub(r"\D", "", r["name"])) for r in sorted((r for r in next((tb for tb in tables if tb), {})
             .get("checkpoints", []) if r["name"].startswith("grpo/")), key=lambda r: r["name"])]
    plot_points(out / "fig10.png", "Fig. 10 (demo): mean token entropy over GRPO checkpoints", "GRPO step",
                "mean token entropy (nats)", [("mean entropy", steps, series["mean_token_entropy"])] if steps else [])
    section("Fig. 10: entropy over GRPO steps", "mean token entropy falls from step 140 to 220 while the share of "
            "tokens above 6.8 nats rises", value_table(S, [
                ("mean entropy, first GRPO checkpoint", first_last["mean_token_entropy"][0]),
                ("mean entropy, last GRPO checkpoint", first_last["mean_token_entropy"][1])], " nats")
            + f"\n\nhigh-entropy threshold: {fmt(threshold, 2)} nats (6.8 scaled by log V / log 151,674)",
            "fig10.png", [
                Claim("fig10", "mean entropy, last − first GRPO checkpoint", "< 0",
                      first_last["mean_token_entropy"][1], first_last["mean_token_entropy"][0], -1, "nats"),
                Claim("fig10", "share above the threshold, last − first", "> 0",
                      [None if v is None else 100 * v for v in first_last["high_entropy_frac"][1]],
                      [None if v is None else 100 * v for v in first_last["high_entropy_frac"][0]], 1, "% of tokens")])

    # Fig. 11: cold start vs self-incentive prompt
    arms = [("cold start", "grpo"), ("self-incentive prompt", "fig11/self_incentive")]
    length = {label: [window_mean(S.metrics(s, run), "response/len_mean", 71, 80) for s in S.seeds]
              for label, run in arms}
    reward = {label: [window_mean(S.metrics(s, run), "reward/mean", 71, 80) for s in S.seeds]
              for label, run in arms}
    plot_arms(out / "fig11.png", S, ["response/len_mean", "reward/mean", "reward/format", "entropy/critical"], arms)
    section("Fig. 11: cold start vs self-incentive prompt", "without cold start the responses do not grow long and "
            "the reward stays lower; cold start lengthens the reasoning and raises the reward",
            value_table(S, [(f"{k}: length, steps 71-80", v) for k, v in length.items()]
                        + [(f"{k}: reward, steps 71-80", v) for k, v in reward.items()]), "fig11.png", [
                Claim("fig11", "cold start − self-incentive, response length", "> 0", length["cold start"],
                      length["self-incentive prompt"], 1, "tokens"),
                Claim("fig11", "cold start − self-incentive, reward", "> 0", reward["cold start"],
                      reward["self-incentive prompt"], 1, "reward")], dead_arms(S, [run for _, run in arms]))
    return sections, claims


def pooled(runs, part):
    """Accuracy (%) of a hallucination-split part pooled over several eval runs; None when it has no responses."""
    n = sum((r or {}).get("hallucination", {}).get(part, {}).get("n", 0) for r in runs)
    if not n:
        return None
    hits = sum(r["hallucination"][part]["n"] * (r["hallucination"][part]["accuracy"] or 0) for r in runs
               if r and r["hallucination"][part]["n"])
    return 100 * hits / n


def thinking_blocks(seeds):
    """NoThink responses of Table 4 that contain a thinking tag, over every seed (None if none were found)."""
    count, found = 0, False
    for s in seeds.seeds:
        path = seeds.dir(s) / "eval" / "table4" / "test" / "nothink_full" / "generations.jsonl"
        if path.is_file():
            found = True
            count += sum("<think>" in r["response"] or "</think>" in r["response"] for _, r in data.read_jsonl(path))
    return count if found else None


def budgets_of(seeds, eval_name):
    """The thinking budgets eval.py ran under $DEMO/eval/EVAL_NAME (the first seed that has them)."""
    for s in seeds.seeds:
        path = seeds.dir(s) / "eval" / eval_name / "summary.json"
        if path.is_file():
            return sorted({r["budget"] for r in json.loads(path.read_text())["runs"].values() if r["budget"]})
    return []


def summary_table(claims):
    lines = ["| target | claim (paired difference) | paper | ours: mean [95% interval] | verdict |",
             "|---|---|---|---|---|"]
    return "\n".join(lines + [c.row() for c in claims])


@dataclass
class ReportConfig:
    seeds: list[str] = field(default_factory=list)   # the seeds, as named under ROOT
    wall_s: float | None = None   # the run's wall time, for the report's first lines
    readme: str = ""              # replace the block between the paper_demo markers in this file


def main(argv=None):
    usage = "usage: python report.py ROOT --seeds S [S ...] [--wall_s SECONDS] [--readme README.md]"
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-"):   # ROOT first: the positional is not a config file here
        raise SystemExit(usage)
    root, args = argv[0], configurator.parse_config(ReportConfig, argv[1:])
    if not args.seeds:
        raise SystemExit(f"--seeds is required\n{usage}")
    seeds = Seeds(root, args.seeds)
    out = Path(root)
    sections, claims = build(seeds, out)
    counts = {v: sum(c.verdict == v for c in claims) for v in ("reproduced", "not reproduced", "inconclusive")}
    wall = "" if args.wall_s is None else f" Wall time: {args.wall_s / 60:.1f} min."
    head = [f"# The paper's claims at demo scale ({len(args.seeds)} seeds: {', '.join(args.seeds)})", "",
            f"{len(claims)} claims: {counts['reproduced']} reproduced, {counts['not reproduced']} not reproduced, "
            f"{counts['inconclusive']} inconclusive.{wall} Intervals: 95% Student t over the seeds' paired "
            f"differences (n = {len(args.seeds)}: t = {t975(max(1, len(args.seeds) - 1)):.2f}).", "",
            summary_table(claims), ""]
    warnings = sorted({w for _, text in sections for w in text.splitlines() if "WARNING" in w})
    if warnings:
        head += ["## Arms that did not train", ""] + warnings + [""]
    missing = sorted(set(seeds.missing))
    tail = ["## Missing outputs", ""] + [f"- {m}" for m in missing] if missing else []
    text = "\n".join(head + [body + "\n" for _, body in sections] + tail) + "\n"
    write_text(out / "report.md", text)
    write_text(out / "summary.md", summary_table(claims) + "\n")
    if args.readme:
        readme = Path(args.readme).read_text()
        begin, end = "<!-- paper_demo:begin -->", "<!-- paper_demo:end -->"
        if begin not in readme or end not in readme:
            raise SystemExit(f"{args.readme}: no {begin} ... {end} block to replace")
        block = f"{begin}\n{summary_table(claims)}\n{end}"
        write_text(args.readme, readme[:readme.index(begin)] + block + readme[readme.index(end) + len(end):])
    print(f"report.py: {len(claims)} claims {counts} -> {out / 'report.md'}")


if __name__ == "__main__":
    sys.exit(main())
