"""The paper's claims at demo scale, over seeds: `bash launch.sh paper_demo` runs every demo target (or demo.sh's
TARGETS) once per seed (demo.sh all_targets under PAPER_DEMO/seedN), then this writes, in PAPER_DEMO:
  claims.json                every claim of the pre-registered design (results/paper_demo/design.md): its metric,
                             the paper's side and value, the smallest effect of interest, the per-seed values at
                             full precision, mean, 95% interval, verdict and Holm-adjusted verdict (verdicts.py);
  report.md, summary.md      one section per table or figure (paper, per-seed numbers, plot), whose claim lines and
                             summary table are rendered from claims.json as written; summary.md is that table, and
                             --readme puts it between the README's paper_demo markers;
  seedN/report_inputs.json   every per-seed number this report read (eval summaries, the metrics.jsonl columns it
                             uses, entropy tables), so that the results directory alone recomputes everything.

    python report.py out/paper_demo --seeds 3 4 5 [--targets table2 fig9 ...] [--wall_s S] [--readme README.md]
    python report.py results/paper_demo/part_a --recompute   # from seedN/report_inputs.json only (claims.json's seeds)
    python report.py results/paper_demo --parts part_a part_b part_c part_d  # the parts -> claims.json, summary.md

Nothing here trains or evaluates: it reads eval.py summaries, grpo.py metrics.jsonl and entropy.py tables. A file
that is missing is named in the report (that seed is left out of the claim), never silently skipped; a target the
run did not run is named as such, and its claims have no numbers.
"""
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import configurator
import data
import verdicts
from verdicts import Claim
from grpo_metrics import NO_SIGNAL_WARNING
from tables import plot_arms, plot_points, write_text

TARGETS = ("table1", "table2", "table3", "table4", "table5", "fig5", "fig6", "fig7_8", "fig9", "fig10",
           "fig11")   # demo.sh's DEMO_TARGETS
MIN_PHRASE_RESPONSES = 20   # Table 5: responses with the phrase a seed needs before its "with" accuracy counts
INPUTS = "report_inputs.json"   # per seed: every value this report read from that seed's outputs
RUN_KEYS = ("benchmark", "mode", "budget", "accuracy", "avg_tokens", "hallucination")   # of an eval.py run
METRIC_KEYS = ("step", "reward/mean", "reward/accuracy", "reward/format", "response/len_mean", "train/grad_norm",
               "train/no_signal_steps", "entropy/mean", "entropy/critical")   # the metrics.jsonl columns used
ACC_MEAN = "accuracy (%), mean of test and ood"
SHORTER = "length saved, % of think mode's test tokens"
CHECKPOINT_KEYS = ("name", "accuracy", "critical_entropy_mean", "critical_count", "mean_token_entropy",
                   "high_entropy_frac", "histogram")   # of an entropy table's checkpoint row
DEMO_WARMUP_STEPS = 10   # config/grpo_demo.py's warmup_steps: Fig. 10 compares checkpoints after it
HIGH_SHARE = 0.01        # Fig. 10's threshold: at most this share of the cold-start checkpoint's tokens above it


# -----------------------------------------------------------------------------
# reading one seed's outputs (None when missing; the file is recorded in `missing`)

class Seeds:
    """One run's per-seed outputs under ROOT/seedN. Each value is read once and kept in `inputs[seed]` under a key
    naming its source, with the missing files its reading found; replay=True takes them from the
    ROOT/seedN/report_inputs.json files a previous report wrote instead of the outputs themselves."""

    def __init__(self, root, seeds, replay=False):
        self.root, self.seeds, self.replay, self.missing = Path(root), list(seeds), replay, []
        self.inputs = {s: json.loads((self.dir(s) / INPUTS).read_text()) if replay else {} for s in self.seeds}

    def dir(self, seed):
        return self.root / f"seed{seed}"

    def kept(self, seed, key, read):
        """The value under key for seed: read() once (or replayed), its missing files added to `missing`."""
        store = self.inputs[seed]
        if key not in store:
            if self.replay:
                raise SystemExit(f"{self.dir(seed) / INPUTS}: no {key!r} (written by another version of report.py?)")
            before = len(self.missing)
            value = read()
            store[key] = {"value": value, "missing": self.missing[before:]}
            return value
        self.missing += store[key]["missing"]
        return store[key]["value"]

    def write_inputs(self):
        for s in self.seeds:
            write_text(self.dir(s) / INPUTS, json.dumps(self.inputs[s], separators=(",", ":")) + "\n")

    def _json(self, path):
        if not path.is_file():
            self.missing.append(path.relative_to(self.root).as_posix())
            return None
        return json.loads(path.read_text())

    def run(self, seed, eval_name, bench, mode="think", budget=None):
        """One eval.py run of $DEMO/eval/EVAL_NAME: {"accuracy", "avg_tokens", "hallucination", ...} or None."""
        def read():
            summary = self._json(self.dir(seed) / "eval" / eval_name / "summary.json")
            for r in (summary or {}).get("runs", {}).values():
                if r["benchmark"] == bench and r["mode"] == mode and r["budget"] == budget:
                    return {k: r.get(k) for k in RUN_KEYS}
            if summary is not None:
                self.missing.append(f"seed{seed}/eval/{eval_name}: no run {bench}/{mode}/{budget}")
            return None
        return self.kept(seed, f"eval/{eval_name}/{bench}/{mode}/{budget}", read)

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
        """grpo.py metrics.jsonl of $DEMO/RUN -> [rows] with the METRIC_KEYS columns (None when missing); kept as
        columns (a key per column, not per row: a third of the size)."""
        def read():
            path = self.dir(seed) / run / "metrics.jsonl"
            if not path.is_file():
                self.missing.append(path.relative_to(self.root).as_posix())
                return None
            rows = [r for _, r in data.read_jsonl(path, appended_log=True)]
            return {k: [r.get(k) for r in rows] for k in METRIC_KEYS if any(k in r for r in rows)}
        columns = self.kept(seed, f"metrics/{run}", read)
        if columns is None:
            return None
        return [{k: v for k, v in zip(columns, values) if v is not None} for values in zip(*columns.values())]

    def entropy_table(self, seed, name):
        """entropy.py's entropy_table.json of $DEMO/NAME: its checkpoint rows (CHECKPOINT_KEYS), correlation and
        high-entropy threshold (None when missing)."""
        def read():
            tb = self._json(self.dir(seed) / name / "entropy_table.json")
            return tb and {"checkpoints": [{k: r.get(k) for k in CHECKPOINT_KEYS} for r in tb["checkpoints"]],
                           "correlation": tb.get("correlation"),
                           "config": {"high_threshold": tb["config"]["high_threshold"]}}
        return self.kept(seed, f"entropy/{name}", read)

    def budgets(self, seed, eval_name):
        """The thinking budgets eval.py ran under $DEMO/eval/EVAL_NAME ([] when missing)."""
        def read():
            path = self.dir(seed) / "eval" / eval_name / "summary.json"
            return sorted({r["budget"] for r in json.loads(path.read_text())["runs"].values() if r["budget"]}) \
                if path.is_file() else []
        return self.kept(seed, f"budgets/{eval_name}", read)

    def thinking_blocks(self, seed):
        """Table 4's NoThink responses that contain a thinking tag (None when there are no generations)."""
        def read():
            path = self.dir(seed) / "eval" / "table4" / "test" / "nothink_full" / "generations.jsonl"
            if not path.is_file():
                return None
            return sum("<think>" in r["response"] or "</think>" in r["response"] for _, r in data.read_jsonl(path))
        return self.kept(seed, "table4/nothink_thinking_blocks", read)


def window_mean(rows, metric, first, last):
    """Mean of a metric over steps first..last (1-based, inclusive) of a metrics.jsonl; None when absent."""
    if rows is None:
        return None
    vals = [r[metric] for r in rows if first <= r["step"] <= last and isinstance(r.get(metric), (int, float))]
    return statistics.fmean(vals) if vals else None


def step_of(row):
    """An entropy table row's GRPO step (its name: grpo/step_000040)."""
    return int(re.sub(r"\D", "", row["name"]))


def high_edge(histogram, share=HIGH_SHARE):
    """The lowest edge of an entropy histogram ({"edges", "counts"}) with at most `share` of its tokens above it."""
    counts = histogram["counts"]
    return next(e for i, e in enumerate(histogram["edges"]) if sum(counts[i:]) <= share * sum(counts))


def share_above(histogram, edge):
    """The share of a histogram's tokens in its bins at or above `edge`, one of its edges."""
    counts = histogram["counts"]
    return sum(counts[histogram["edges"].index(edge):]) / sum(counts) if sum(counts) else math.nan


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
# the report's pieces

def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def value_table(seeds, rows, unit="", digits=1):
    """rows: [(label, per-seed values[, digits of that row])] -> markdown: a column per seed, then the mean over the
    seeds that have it."""
    head = "| | " + " | ".join(f"seed {s}" for s in seeds.seeds) + " | mean |"
    lines = [head, "|---" * (len(seeds.seeds) + 2) + "|"]
    for label, vals, *row_digits in rows:
        have, d = [v for v in vals if v is not None], row_digits[0] if row_digits else digits
        mean = statistics.fmean(have) if have else None
        lines.append(f"| {label} | " + " | ".join(fmt(v, d) for v in vals) + f" | {fmt(mean, d)}{unit} |")
    return "\n".join(lines)


def diff(a, b):
    """Per-seed a - b (None where a seed lacks either, or the difference is not finite)."""
    return verdicts.paired(a, b)["per_seed"]


def build(seeds, out, targets):
    """-> (sections, claims), plotting the targets the run ran. A section: {"title", "intro" (title, the paper's
    claim), "head" (the intro, numbers, plot), "claims" (indices into claims), "notes", "target", "missing"}; its
    claim lines are rendered from claims.json (render_section). Each Claim's smallest effect, seed count, metric
    and built-in note are the pre-registered design's (results/paper_demo/design.md, whose table
    tests/test_report.py checks against these)."""
    sections, claims = [], []
    S = seeds

    def plot(draw, path, *args):   # each plot is named by its target; a target the run did not run gets none
        if path.stem in targets:
            draw(path, *args)

    def section(title, paper, body, plot=None, new_claims=(), notes=(), target="table1"):
        first, read_from = len(claims), sum(len(sec["missing"]) for sec in sections)
        claims.extend(new_claims)
        intro = [f"## {title}", "", f"Paper: {paper}"]
        head = intro + ["", body] + (["", f"![{title}]({plot})"] if plot else [])
        sections.append({"title": title, "intro": "\n".join(intro), "head": "\n".join(head),
                         "claims": list(range(first, len(claims))),
                         "notes": [f"- {n}" for n in notes], "target": new_claims[0].target if new_claims else target,
                         "missing": S.missing[read_from:]})   # the files this section's reads found missing

    # the demo's own table (`launch.sh demo`, which every seed runs first): what each stage learns, over the seeds
    stages = [("alignment (captions)", "caption"), ("cold-start SFT", "sft"), ("GRPO", "grpo"),
              ("connector-only tuning", "connector")]
    rows = [(f"{label}, {b}", S.acc(name, b)) for label, name in stages for b in ("test", "ood")]
    gains = []
    for b in ("test", "ood"):
        st = verdicts.stats_of(diff(S.acc("grpo", b), S.acc("sft", b)))
        interval = "" if st["lo"] is None else f", 95% interval [{st['lo']:+.1f}, {st['hi']:+.1f}]"
        gains.append(f"GRPO − cold-start SFT on {b}: {fmt(st['mean'])} points (n = {st['n']}{interval}).")
    section("The demo: held-out accuracy after each stage", "(the demo's own table: no paper claim)",
            value_table(S, rows, " %") + "\n\naccuracy (%) = avg@k at T = 1.0 (demo.sh's evals of each stage's last "
            "checkpoint)", notes=gains, target="demo")

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
    plot(plot_points, out / "table2.png", "Table 2 (demo): mean of test and ood", "", "accuracy (%)",
         [("accuracy", list(range(len(arms))), [[vals[label][i] for label, _ in arms] for i in range(len(S.seeds))])])
    section("Table 2: tuning after RL", "connector-only 76.0 > RL 74.5 > connector + LLM 73.2 > connector + ViT + "
            "LLM 69.7 (MMMU)", value_table(S, [(label, v) for label, v in vals.items()], " %")
            + "\n\naccuracy (%): mean of test and ood; x axis of the plot: the rows in this order", "table2.png", [
                Claim("table2", "connector-only − RL", ACC_MEAN, "+1.5", diff(vals["connector-only"],
                      vals["RL stage (baseline)"]), paper_value=1.5, smallest_effect=0.75, seeds_planned=3),
                Claim("table2", "connector-only − connector+LLM", ACC_MEAN, "+2.8", diff(
                    vals["connector-only"], vals["connector + LLM"]), paper_value=2.8, smallest_effect=1.4,
                      seeds_planned=8),
                Claim("table2", "connector-only − connector+ViT+LLM", ACC_MEAN, "+6.3", diff(
                    vals["connector-only"], vals["connector + ViT + LLM"]), paper_value=6.3, smallest_effect=3.15,
                      seeds_planned=8)])

    # Table 3: RL vs SFT on the same questions
    t = {(arm, b): S.acc(name, b) for arm, name in (("baseline", "sft"), ("RL", "grpo"), ("SFT", "table3_sft"))
         for b in ("test", "ood")}
    plot(plot_points, out / "table3.png", "Table 3 (demo): in-domain (test) and out-of-domain (ood)",
         "0 = test, 1 = ood", "accuracy (%)", [(arm, [0, 1], [[t[(arm, "test")][i], t[(arm, "ood")][i]]
                                                          for i in range(len(S.seeds))])
                                               for arm in ("baseline", "RL", "SFT")])
    section("Table 3: RL vs SFT on the same data", "baseline 71.3 / 68.1, RL 77.2 / 74.5, SFT 75.9 / 65.4 (in-domain "
            "MathVista / out-of-domain MMMU): only RL generalises",
            value_table(S, [(f"{arm} {b}", v) for (arm, b), v in t.items()], " %"), "table3.png", [
                Claim("table3", "RL − SFT, out of domain", "ood accuracy (%)", "+9.1", diff(
                    t[("RL", "ood")], t[("SFT", "ood")]), paper_value=9.1, smallest_effect=4.55, seeds_planned=8),
                Claim("table3", "SFT − baseline, in domain", "test accuracy (%)", "+4.6", diff(
                    t[("SFT", "test")], t[("baseline", "test")]), paper_value=4.6, smallest_effect=2.3,
                      seeds_planned=3, built_in="the SFT arm distills the RL policy's own correct traces on these "
                      "questions, so it inherits RL's in-domain gain"),
                Claim("table3", "RL − baseline, out of domain", "ood accuracy (%)", "+6.4", diff(
                    t[("RL", "ood")], t[("baseline", "ood")]), paper_value=6.4, smallest_effect=3.2, seeds_planned=8),
                Claim("table3", "SFT − baseline, out of domain", "ood accuracy (%)", "−2.7", diff(
                    t[("SFT", "ood")], t[("baseline", "ood")]), sign=-1, paper_value=-2.7, smallest_effect=1.35,
                      seeds_planned=8)])

    # Table 4: think / nothink / nowait
    acc = {m: S.acc("table4", "test", m) for m in ("think", "nothink", "nowait")}
    tok = {m: S.tokens("table4", "test", m) for m in ("think", "nothink", "nowait")}
    shorter = {m: [None if None in (a, b) or not a else 100 * (a - b) / a for a, b in zip(tok["think"], tok[m])]
               for m in ("nothink", "nowait")}   # % of think mode's tokens saved, per seed
    found = [S.thinking_blocks(s) for s in S.seeds]
    blocks = None if all(b is None for b in found) else sum(b or 0 for b in found)
    section("Table 4: slow thinking vs NoThink vs NoWait", "think 76.0 % (1272 tokens), NoThink 68.9 % (263), "
            "NoWait 74.1 % (1040)", value_table(S, [(f"{m} accuracy", acc[m]) for m in acc]
                                                + [(f"{m} tokens", tok[m]) for m in tok]), None, [
                Claim("table4", "think − NoThink accuracy", "test accuracy (%)", "+7.1", diff(
                    acc["think"], acc["nothink"]), paper_value=7.1, smallest_effect=3.55, seeds_planned=8),
                Claim("table4", "NoThink shortens responses", SHORTER, "79.3 % (1272 → 263)", shorter["nothink"],
                      paper_value=79.3, smallest_effect=39.65, seeds_planned=3, unit="%"),
                Claim("table4", "think − NoWait accuracy", "test accuracy (%)", "+1.9", diff(
                    acc["think"], acc["nowait"]), paper_value=1.9, smallest_effect=0.95, seeds_planned=3),
                Claim("table4", "NoWait shortens responses", SHORTER, "18.2 % (1272 → 1040)", shorter["nowait"],
                      paper_value=18.2, smallest_effect=9.1, seeds_planned=3, unit="%"),
                Claim("table4", "NoWait shortens responses by the paper's magnitude", SHORTER, "18.2 %",
                      shorter["nowait"], paper_value=18.2, smallest_effect=9.1, seeds_planned=3, unit="%",
                      kind="magnitude", reference=9.1)],
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
            None, [Claim("table5", "accuracy without − with the phrase", "test + ood accuracy (%)", "+26.2",
                         diff(split["without"], with_counted), paper_value=26.2, smallest_effect=13.1,
                         seeds_planned=3)])

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
                         if r["accuracy"] is not None and r["critical_entropy_mean"] is not None   # null: none
                         and math.isfinite(r["critical_entropy_mean"]))                              # counted
            series.append((f"seed {s}", [p[0] for p in pts], [[p[1] for p in pts]]))
    plot(plot_points, out / "fig5.png", "Fig. 5 (demo): critical-token entropy vs val accuracy, GRPO checkpoints",
         "critical-token entropy (nats)", "val accuracy (%)", series)
    section("Fig. 5: critical-token entropy selects checkpoints", "critical-token entropy correlates strongly with "
            "accuracy over the GRPO checkpoints, so it selects the checkpoint", value_table(S, [
                ("GRPO checkpoints", n_ckpt), ("fewest critical tokens in a checkpoint", crit),
                ("Pearson(critical entropy, val accuracy)", pearson), ("val acc of the entropy pick (%)", picked),
                ("mean val acc over checkpoints (%)", mean_acc)]), "fig5.png", [
                Claim("fig5", "Pearson(critical entropy, val accuracy)", "Pearson r over the GRPO checkpoints",
                      "strong, > 0", diff(pearson, [0.0] * len(pearson)), smallest_effect=0.3, seeds_planned=3,
                      unit="r"),
                Claim("fig5", "val acc of the entropy pick − mean over checkpoints", "val accuracy (%)", "> 0",
                      diff(picked, mean_acc), smallest_effect=2.0, seeds_planned=3)],
            [f"seeds with a checkpoint of fewer than 200 critical tokens (the design asks >= 200): "
             f"{[s for s, c in zip(S.seeds, crit) if c is not None and c < 200] or 'none'}"])

    # Fig. 6: module activation in GRPO
    arms = [("all trainable", "grpo", "grpo"), ("frozen ViT", "fig6/connector_llm", "fig6_connector_llm"),
            ("frozen connector", "fig6/vision_llm", "fig6_vision_llm")]
    vals = {label: S.acc_mean(ev) for label, _, ev in arms}
    rew = {label: [window_mean(S.metrics(s, run), "reward/mean", 71, 80) for s in S.seeds]
           for label, run, _ in arms}
    # "collapse" as a size: the share of what GRPO gains over its cold-start checkpoint that freezing the connector
    # loses (the paper's training failure loses all of it, 100 %); a seed whose GRPO gained nothing has no share
    cold = S.acc_mean("sft")
    lost = [None if None in (a, f, c) or a <= c else 100 * (a - f) / (a - c)
            for a, f, c in zip(vals["all trainable"], vals["frozen connector"], cold)]
    plot(plot_arms, out / "fig6.png", S, ["reward/mean", "train/grad_norm", "response/len_mean", "entropy/mean"],
         [(label, run) for label, run, _ in arms])
    section("Fig. 6: module activation in GRPO", "frozen connector: reward drops sharply, training fails; frozen ViT: "
            "reward close to all-trainable, all-trainable a little better (MathVista)",
            value_table(S, [(f"{label}, test/ood mean (%)", v) for label, v in vals.items()]
                        + [("cold start (GRPO's start), test/ood mean (%)", cold),
                           ("share of GRPO's gain lost with a frozen connector (%)", lost)]
                        + [(f"{label}, reward steps 71-80", r) for label, r in rew.items()]), "fig6.png", [
                Claim("fig6", "all trainable − frozen connector, accuracy", ACC_MEAN, "collapse: large > 0",
                      diff(vals["all trainable"], vals["frozen connector"]), smallest_effect=3.4, seeds_planned=3),
                Claim("fig6", "frozen connector collapses", "share of GRPO's gain over cold start lost (%)",
                      "100 % (training fails)", lost, paper_value=100.0, smallest_effect=50.0, seeds_planned=3,
                      unit="%", kind="magnitude", reference=50.0),
                Claim("fig6", "all trainable − frozen ViT, accuracy", ACC_MEAN, "small > 0", diff(
                    vals["all trainable"], vals["frozen ViT"]), smallest_effect=1.0, seeds_planned=3)],
            dead_arms(S, [run for _, run, _ in arms]))

    # Figs. 7-8: curriculum and learning rate
    # the lr / 10 arm runs the first 40 steps of the 80-step schedule (demo.sh), so its accuracies are at step 40;
    # the lr claim is on steps 21-40, after the 10-step warmup and its first 10 steps at the peak lr
    evals = (("normal", "fig7_grpo"), ("curriculum", "fig7_curriculum"), ("lr / 10 at step 40", "fig7_low_lr"))
    normal = {label: S.acc(ev, "test") for label, ev in evals}
    hard = {label: S.acc(ev, "hard") for label, ev in evals}
    early = {label: [window_mean(S.metrics(s, run), "reward/mean", 21, 40) for s in S.seeds]
             for label, run in (("demo lr", "grpo"), ("lr / 10", "fig7_8/low_lr"))}
    plot(plot_arms, out / "fig7_8.png", S, ["reward/mean", "reward/accuracy", "entropy/mean", "train/grad_norm"],
         [("normal, demo lr", "grpo"), ("curriculum, demo lr", "fig7_8/curriculum"),
          ("normal, lr / 10 (steps 1-40)", "fig7_8/low_lr")])
    section("Figs. 7-8: curriculum and learning rate", "a normal → hard curriculum lowers accuracy on normal "
            "problems; lr 1e-5 gains reward faster early than 1e-6", value_table(
                S, [(f"{k}: test (normal) %", v) for k, v in normal.items()]
                + [(f"{k}: hard %", v) for k, v in hard.items()]
                + [(f"{k}: reward steps 21-40", v, 3) for k, v in early.items()]), "fig7_8.png", [
                Claim("fig7_8", "normal − curriculum on normal problems", "test accuracy (%)",
                      "> 0 (drop in stage 2)", diff(normal["normal"], normal["curriculum"]), smallest_effect=2.0,
                      seeds_planned=3),
                Claim("fig7_8", "demo lr − lr/10, reward over steps 21-40", "reward/mean, steps 21-40",
                      "> 0 (faster)", diff(early["demo lr"], early["lr / 10"]), smallest_effect=0.02,
                      seeds_planned=3, unit="reward")],
            dead_arms(S, ["fig7_8/curriculum", "fig7_8/low_lr"]))

    # Fig. 9: thinking budget
    budgets = next((b for b in [S.budgets(s, "fig9") for s in S.seeds] if b), [])   # the first seed's that has any
    per_budget = {b: S.acc("fig9", "test", "think", b) for b in budgets}
    plot(plot_points, out / "fig9.png", "Fig. 9 (demo): accuracy vs thinking budget", "thinking budget (tokens)",
         "test accuracy (%)", [("test", budgets, [[per_budget[b][i] for b in budgets] for i in range(len(S.seeds))])]
         if budgets else [])
    lo_b, hi_b = (budgets[0], budgets[-1]) if budgets else (None, None)
    section("Fig. 9: accuracy vs thinking budget", "61.6 % at 1k tokens, 67.7 % at 2k, rising steadily to 16k",
            value_table(S, [(f"budget {b}", v) for b, v in per_budget.items()], " %"), "fig9.png",
            [Claim("fig9", "accuracy at the largest − the smallest budget",
                   f"test accuracy (%), budget {hi_b} − {lo_b} tokens", "+13.6 (1k → 8k, the same 8× budget)",
                   diff(per_budget.get(hi_b, [None] * len(S.seeds)), per_budget.get(lo_b, [None] * len(S.seeds))),
                   paper_value=13.6, smallest_effect=6.8, seeds_planned=8)],
            ["Mechanism at demo scale: a budget below the ~60-token trace cuts the reading of the board short, then "
             "16 tokens must answer; this tests the budget rule more than test-time scaling."])

    # Fig. 10: entropy over GRPO steps, from the first checkpoint after the warmup to the last. "High entropy" is
    # relative to each seed's cold start: the lowest histogram edge with at most HIGH_SHARE of the cold-start
    # checkpoint's val-response tokens above it (6.8 nats scaled to the demo's vocabulary leaves ~0.00% of tokens)
    tables = [S.entropy_table(s, "fig10") for s in S.seeds]
    first_last = {k: ([], []) for k in ("mean_token_entropy", "high_share")}
    series, edges, steps = [], [], []
    for tb in tables:
        rows = (tb or {}).get("checkpoints", [])
        cold = next((r for r in rows if r["name"].startswith("sft/") and r.get("histogram")), None)
        edge = high_edge(cold["histogram"]) if cold else None
        grpo_rows = sorted((r for r in rows if r["name"].startswith("grpo/")), key=step_of)
        late = [dict(r, high_share=None if edge is None or not r.get("histogram") else 100 * share_above(
            r["histogram"], edge)) for r in grpo_rows if step_of(r) > DEMO_WARMUP_STEPS]
        for k in first_last:
            first_last[k][0].append(late[0][k] if late else None)
            first_last[k][1].append(late[-1][k] if late else None)
        series.append([r["mean_token_entropy"] for r in grpo_rows])
        edges.append(edge)
        steps = steps or [step_of(r) for r in grpo_rows]   # the plot's x axis: the seeds save at the same steps
    plot(plot_points, out / "fig10.png", "Fig. 10 (demo): mean token entropy over GRPO checkpoints", "GRPO step",
         "mean token entropy (nats)", [("mean entropy", steps, series)] if steps else [])
    section("Fig. 10: entropy over GRPO steps", "mean token entropy falls from step 140 to 220 while the share of "
            "tokens above 6.8 nats rises", value_table(S, [
                (f"mean entropy, first GRPO checkpoint after step {DEMO_WARMUP_STEPS} (nats)",
                 first_last["mean_token_entropy"][0]),
                ("mean entropy, last GRPO checkpoint (nats)", first_last["mean_token_entropy"][1]),
                ("high-entropy threshold (nats)", edges),
                ("share above it, first after the warmup (%)", first_last["high_share"][0]),
                ("share above it, last (%)", first_last["high_share"][1])], digits=3)
            + f"\n\nwarmup: the first {DEMO_WARMUP_STEPS} steps (config/grpo_demo.py); threshold: the lowest edge of "
            f"the 0.25-nat histogram with at most {100 * HIGH_SHARE:g}% of the cold-start checkpoint's tokens above it",
            "fig10.png", [
                Claim("fig10", "mean entropy, last − first GRPO checkpoint after warmup", "mean token entropy of val "
                      "responses", "< 0", diff(first_last["mean_token_entropy"][1], first_last["mean_token_entropy"][
                          0]), sign=-1, smallest_effect=0.03, seeds_planned=3, unit="nats"),
                Claim("fig10", "share above the cold-start threshold, last − first after warmup", "share of val "
                      "response tokens above the seed's cold-start 1% edge", "> 0", diff(
                          first_last["high_share"][1], first_last["high_share"][0]), smallest_effect=0.1,
                      seeds_planned=3, unit="% of tokens")])

    # Fig. 11: cold start vs self-incentive prompt
    arms = [("cold start", "grpo"), ("self-incentive prompt", "fig11/self_incentive")]
    length = {label: [window_mean(S.metrics(s, run), "response/len_mean", 71, 80) for s in S.seeds]
              for label, run in arms}
    # the accuracy reward, not reward/mean: the self-incentive arm writes no thinking block, so its format reward is 0
    # and reward/mean would count the format gap as a reasoning gap
    reward = {label: [None if v is None else 100 * v for v in (window_mean(S.metrics(s, run), "reward/accuracy", 71,
                                                                           80) for s in S.seeds)]
              for label, run in arms}
    plot(plot_arms, out / "fig11.png", S,
         ["response/len_mean", "reward/accuracy", "reward/format", "entropy/critical"], arms)
    section("Fig. 11: cold start vs self-incentive prompt", "without cold start the responses do not grow long and "
            "the reward stays lower; cold start lengthens the reasoning and raises the reward",
            value_table(S, [(f"{k}: length, steps 71-80", v) for k, v in length.items()]
                        + [(f"{k}: accuracy reward (%), steps 71-80", v) for k, v in reward.items()]), "fig11.png", [
                Claim("fig11", "cold start − self-incentive, response length", "response/len_mean, steps 71-80",
                      "> 0", diff(length["cold start"], length["self-incentive prompt"]), smallest_effect=6.0,
                      seeds_planned=3, unit="tokens", built_in="the alignment captions answer directly while the "
                      "cold-start traces are ~60 tokens long, so the two arms start at different lengths"),
                Claim("fig11", "cold start − self-incentive, accuracy reward", "100 × reward/accuracy, steps 71-80",
                      "> 0", diff(reward["cold start"], reward["self-incentive prompt"]), smallest_effect=2.0,
                      seeds_planned=3)], dead_arms(S, [run for _, run in arms]))
    return sections, claims


def pooled(runs, part):
    """Accuracy (%) of a hallucination-split part pooled over several eval runs; None when it has no responses."""
    n = sum((r or {}).get("hallucination", {}).get(part, {}).get("n", 0) for r in runs)
    if not n:
        return None
    hits = sum(r["hallucination"][part]["n"] * (r["hallucination"][part]["accuracy"] or 0) for r in runs
               if r and r["hallucination"][part]["n"])
    return 100 * hits / n


def ran(sec, doc):
    """Whether the run ran the section's target (every seed runs the demo)."""
    return sec["target"] in ("demo", *doc["targets"])


def render_section(sec, doc):
    if ran(sec, doc):
        head, notes = sec["head"], sec["notes"]
    else:   # no table, plot or notes: what another run left in the directory is not this run's
        head = sec["intro"]
        notes = [f"- Not run: the run's targets were {', '.join(doc['targets'])}, so this section has no numbers."]
    return "\n".join([head, ""] + [verdicts.claim_line(doc["claims"][i]) for i in sec["claims"]] + notes)


def render_report(doc, sections):
    """report.md: the counts, the claims table and every section, the claim lines from claims.json's content; the
    missing outputs of the targets the run ran."""
    claims, seeds = doc["claims"], doc["seeds"]

    def counts(get):
        return ", ".join(f"{sum(get(c) == v for c in claims)} {v}" for v in verdicts.VERDICTS)
    wall = "" if doc["wall_s"] is None else f" Wall time: {doc['wall_s'] / 60:.1f} min."
    n = len(seeds)
    t = f"t = {verdicts.t975(n - 1):.2f}" if n >= 2 else "no interval"
    head = [f"# The paper's claims at demo scale ({n} seeds: {', '.join(seeds)})", "",
            f"{len(claims)} claims of the pre-registered design (`{doc['design']}`): {counts(lambda c: c['verdict'])}. "
            f"Holm-adjusted over the family of {doc['holm_family_size']} tests: "
            f"{counts(lambda c: c['holm']['verdict'])}.{wall} Intervals: 95% Student t over the seeds' per-seed "
            f"values (n = {n}: {t}). Confirmatory (the design's seed count, none of seeds "
            f"{', '.join(verdicts.SEEN_SEEDS)}): "
            f"{sum(c['confirmatory'] for c in claims)} of {len(claims)} claims. Full-precision numbers: claims.json.",
            "", verdicts.claims_table(doc), ""]
    bodies = [render_section(sec, doc) for sec in sections]
    warnings = sorted({w for text in bodies for w in text.splitlines() if "WARNING" in w})
    if warnings:
        head += ["## Arms that did not train", ""] + warnings + [""]
    missing = sorted({m for sec in sections if ran(sec, doc) for m in sec["missing"]})
    tail = ["## Missing outputs (under the run's directory)", ""] + [f"- {m}" for m in missing] if missing else []
    return "\n".join(head + [body + "\n" for body in bodies] + tail) + "\n"


@dataclass
class ReportConfig:
    seeds: list[str] = field(default_factory=list)   # the seeds, as named under ROOT (--recompute: claims.json's)
    wall_s: float | None = None   # the run's wall time, for the report's first lines (--recompute: claims.json's)
    readme: str = ""              # replace the block between the paper_demo markers in this file
    recompute: bool = False       # read ROOT/seedN/report_inputs.json, not the run's outputs (a results directory)
    targets: list[str] = field(default_factory=lambda: list(TARGETS))   # the targets the run ran (demo.sh TARGETS;
    # --recompute: claims.json's): the others' claims are reported as not run, their outputs not as missing
    parts: list[str] = field(default_factory=list)   # ROOT/PART/claims.json of the design's parts, in the order
    # they ran -> the design's claims.json and summary.md in ROOT, each claim from the last part that ran its target,
    # Holm over all of them


def main(argv=None):
    usage = ("usage: python report.py ROOT --seeds S [S ...] [--targets T ...] [--wall_s SECONDS] "
             "[--readme README.md]\n"
             "       python report.py ROOT --recompute [--readme README.md]\n"
             "       python report.py ROOT --parts PART [PART ...] [--readme README.md]")
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-"):   # ROOT first: the positional is not a config file here
        raise SystemExit(usage)
    out, args = Path(argv[0]), configurator.parse_config(ReportConfig, argv[1:])
    if args.parts:
        missing = [p for p in args.parts if not (out / p / "claims.json").is_file()]
        if missing:
            raise SystemExit(f"--parts: no claims.json in {', '.join(str(out / p) for p in missing)}")
        try:
            doc = verdicts.combine_parts([(p, json.loads((out / p / "claims.json").read_text())) for p in args.parts])
        except ValueError as e:
            raise SystemExit(f"--parts: {e}")
        write_claims(out, doc, args.readme)
        return
    wall_s = args.wall_s
    if args.recompute:
        if not (out / "claims.json").is_file():
            raise SystemExit(f"--recompute: no {out / 'claims.json'} to take the seeds and wall time from")
        previous = json.loads((out / "claims.json").read_text())
        args.seeds = args.seeds or previous["seeds"]
        args.targets = previous["targets"]
        wall_s = previous["wall_s"] if wall_s is None else wall_s
    if not args.seeds:
        raise SystemExit(f"--seeds is required\n{usage}")
    if set(args.targets) - set(TARGETS):
        raise SystemExit(f"--targets: no target {sorted(set(args.targets) - set(TARGETS))} (targets: {TARGETS})")
    seeds = Seeds(out, args.seeds, replay=args.recompute)
    sections, claims = build(seeds, out, args.targets)
    for c in claims:
        if c.target not in args.targets:   # outputs another run left there are not this run's numbers
            c.per_seed = [None] * len(seeds.seeds)
    if not args.recompute:
        seeds.write_inputs()
    doc = write_claims(out, verdicts.claims_document(claims, seeds.seeds, wall_s, args.targets), args.readme)
    write_text(out / "report.md", render_report(doc, sections))


def write_claims(out, doc, readme_path):
    """claims.json, then summary.md and the README block rendered from the file as written -> its content."""
    write_text(out / "claims.json", json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    doc = json.loads((out / "claims.json").read_text())
    write_text(out / "summary.md", verdicts.claims_table(doc) + "\n")
    if readme_path:
        readme = Path(readme_path).read_text()
        begin, end = "<!-- paper_demo:begin -->", "<!-- paper_demo:end -->"
        if begin not in readme or end not in readme:
            raise SystemExit(f"{readme_path}: no {begin} ... {end} block to replace")
        block = f"{begin}\n{verdicts.claims_table(doc)}\n{end}"
        write_text(readme_path, readme[:readme.index(begin)] + block + readme[readme.index(end) + len(end):])
    counts = {v: sum(c["verdict"] == v for c in doc["claims"]) for v in verdicts.VERDICTS}
    holm = {v: sum(c["holm"]["verdict"] == v for c in doc["claims"]) for v in verdicts.VERDICTS}
    print(f"report.py: {len(doc['claims'])} claims {counts}, Holm-adjusted {holm} -> {out / 'claims.json'}")
    return doc


if __name__ == "__main__":
    sys.exit(main())
