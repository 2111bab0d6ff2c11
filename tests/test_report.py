"""report.py: claims.json's round trip through the per-seed inputs, report.md and the README table rendered from
claims.json (verdicts.py's tables), the design's table against the code, and Table 5's pooling."""
import json
import math
import os
import random
import re
import shutil
import statistics
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import configurator  # noqa: E402
import grpo  # noqa: E402
import report  # noqa: E402
import verdicts  # noqa: E402


def test_cli_root_then_flags(tmp_path):
    """`python report.py ROOT --seeds 0 1 --wall_s 60` (demo.sh's call) through configurator.py; an empty ROOT
    names every missing output instead of failing."""
    assert report.main([str(tmp_path), "--seeds", "0", "1", "--wall_s", "60"]) is None
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# The paper's claims at demo scale (2 seeds: 0, 1)") and "Wall time: 1.0 min." in text
    assert "## Missing outputs" in text
    with pytest.raises(SystemExit, match="--seeds is required"):
        report.main([str(tmp_path)])


def test_table5_pools_test_and_ood_and_drops_seeds_with_few_phrase_responses(tmp_path):
    """Table 5 pools test + ood responses per seed; a seed whose final checkpoint says the phrase fewer than
    MIN_PHRASE_RESPONSES times leaves the claim; the cold-start (sft) rows are shown beside it."""
    def write(seed, eval_name, splits):   # splits: {bench: ((n_without, acc_without), (n_with, acc_with))}
        runs = {f"{b}/think/full": {"benchmark": b, "mode": "think", "budget": None, "accuracy": 0.5,
                                    "avg_tokens": 60.0, "hallucination": {
            "without": {"n": wo[0], "accuracy": wo[1]}, "with": {"n": wi[0], "accuracy": wi[1]}}}
            for b, (wo, wi) in splits.items()}
        path = tmp_path / f"seed{seed}" / "eval" / eval_name / "summary.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"runs": runs}))
    # seed 0: 30 + 10 phrase responses; seed 1: 12 + 4 (< 20); seed 2: 15 + 15
    write(0, "connector", {"test": ((770, 0.5), (30, 0.2)), "ood": ((790, 0.4), (10, 0.6))})
    write(1, "connector", {"test": ((788, 0.5), (12, 0.0)), "ood": ((796, 0.5), (4, 0.0))})
    write(2, "connector", {"test": ((785, 0.6), (15, 0.4)), "ood": ((785, 0.4), (15, 0.2))})
    for s in range(3):
        write(s, "sft", {"test": ((750, 0.3), (50, 0.1)), "ood": ((760, 0.3), (40, 0.1))})
    report.main([str(tmp_path), "--seeds", "0", "1", "2"])
    text = (tmp_path / "report.md").read_text()
    section = text[text.index("## Table 5"):text.index("\n## ", text.index("## Table 5") + 1)]
    # seed 0 with: (30*0.2 + 10*0.6) / 40 = 30.0 %; without: (770*0.5 + 790*0.4) / 1560 = 44.9 %
    assert "| with the phrase | 30.0 | 0.0 | 30.0 |" in section, section
    assert "| without the phrase | 44.9 |" in section, section
    assert "| cold start: with the phrase | 10.0 | 10.0 | 10.0 |" in section, section
    assert "final 40, 16, 30; cold start 90, 90, 90" in section, section
    # the claim pairs seeds 0 and 2 only: 44.9 - 30.0 and (785*0.6 + 785*0.4)/1570 - 30.0 = 50.0 - 30.0
    without0 = 100 * (770 * 0.5 + 790 * 0.4) / 1560
    diffs = re.search(r"per seed \[([^\]]*)\]", section).group(1)
    assert diffs == f"{without0 - 30:+.2f}, -, {50.0 - 30:+.2f}", section   # seed 1 left out, in seed order
    claim = next(c for c in json.loads((tmp_path / "claims.json").read_text())["claims"] if c["target"] == "table5")
    assert claim["per_seed"] == [pytest.approx(without0 - 30, abs=1e-12), None, pytest.approx(20.0, abs=1e-12)]


def hist(counts_at):
    """An entropy.py histogram (48 bins of 0.25 nats) with counts_at[j] tokens in bin 2j + 2 (0.5j + 0.5 nats)."""
    counts = [0] * 48
    for j, n in enumerate(counts_at):
        counts[2 * j + 2] = n
    return {"edges": [0.25 * k for k in range(49)], "counts": counts}


def test_fig10_threshold_and_share_by_hand():
    h = hist([900, 90, 5, 5])   # 1000 tokens: 0.5, 1.0, 1.5, 2.0 nats
    assert report.high_edge(h) == 1.25   # 10 tokens (1%) above it; below it, the 90 at 1.0 nats too
    assert report.high_edge(h, share=0.009) == 1.75   # 5 tokens above
    assert report.share_above(h, 1.5) == 0.01 and report.share_above(h, 0.5) == 1.0 and report.share_above(h, 12.0) == 0
    assert math.isnan(report.share_above(hist([0]), 0.5))


def test_fig10s_warmup_is_the_demo_configs():
    assert configurator.parse_config(grpo.Config, [str(ROOT / "config" / "grpo_demo.py")]).warmup_steps == \
        report.DEMO_WARMUP_STEPS


def fake_run(root, seeds):
    """Every output report.py reads, for each seed, with seed-dependent numbers (and a column report.py does not
    keep, and a seed whose fig11 arm is missing)."""
    def summary(seed, name, runs):   # runs: [(bench, mode, budget, accuracy, tokens)]
        out = {}
        for bench, mode, budget, accuracy, tokens in runs:
            split = {"without": {"n": 770, "accuracy": accuracy},
                     "with": {"n": 25 + int(seed), "accuracy": accuracy / 2}}
            out[f"{bench}/{mode}/{budget or 'full'}"] = {"benchmark": bench, "mode": mode, "budget": budget,
                                                         "accuracy": accuracy, "avg_tokens": tokens, "per_run": [0.1],
                                                         "hallucination": split}
        path = root / f"seed{seed}" / "eval" / name / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"runs": out}))

    for seed in seeds:
        rng = random.Random(int(seed))
        u = rng.random
        for name in ("connector", "grpo", "sft", "table2_connector+llm", "table2_connector+vision+llm", "table3_sft",
                     "fig6_connector_llm", "fig6_vision_llm", "table1_val"):
            summary(seed, name, [(b, "think", None, 0.2 + 0.2 * u(), 60.0) for b in ("test", "ood", "val")])
        summary(seed, "table4", [("test", m, None, 0.2 + 0.2 * u(), t * (1 + u() / 10))
                                 for m, t in (("think", 63.0), ("nothink", 16.0), ("nowait", 60.0))])
        for name in ("fig7_grpo", "fig7_curriculum", "fig7_low_lr"):
            summary(seed, name, [(b, "think", None, 0.3 + 0.1 * u(), 60.0) for b in ("test", "hard")])
        summary(seed, "fig9", [("test", "think", b, 0.1 * b / 32 + 0.1 * u(), b) for b in (16, 32, 128)])
        gens = root / f"seed{seed}" / "eval" / "table4" / "test" / "nothink_full" / "generations.jsonl"
        gens.parent.mkdir(parents=True, exist_ok=True)
        gens.write_text(json.dumps({"response": "\\boxed{2}"}) + "\n")
        for run in ("grpo", "fig6/connector_llm", "fig6/vision_llm", "fig7_8/curriculum", "fig7_8/low_lr",
                    "fig11/self_incentive"):
            if run == "fig11/self_incentive" and seed == seeds[-1]:
                continue
            rows = [{"step": i, "reward/mean": 0.3 + u() / 5, "reward/accuracy": 0.3 + u() / 5, "reward/format": u(),
                     "response/len_mean": 20 + 40 * u(), "train/grad_norm": u(), "train/no_signal_steps": 0,
                     "entropy/mean": u(), "entropy/critical": u(), "not/kept": 1.0} for i in range(1, 81)]
            (root / f"seed{seed}" / run).mkdir(parents=True)
            (root / f"seed{seed}" / run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for name in ("entropy", "fig10"):
            rows = [{"name": f"grpo/step_{10 * i:06d}", "accuracy": 0.3 + u() / 10, "critical_entropy_mean": u(),
                     "critical_count": 250 + i, "mean_token_entropy": 0.3 - i / 100 + u() / 100,
                     "high_entropy_frac": u() / 1e4, "per_response": [1.0] * 50} for i in range(1, 9)]
            if seed == seeds[0]:   # a checkpoint whose responses hold no critical word: entropy.py writes null
                rows[-1]["critical_entropy_mean"] = None
            for i, r in enumerate(rows, 1):   # 0.25-nat bins: a seed-dependent tail in bin 8 (2.0-2.25 nats)
                r["histogram"] = hist([900, 90, 5, int(seed) + i])
            if name == "fig10":   # the cold-start checkpoint: 1000 tokens, 5 of them at 2.0 nats and above
                rows.append({"name": "sft/step_000300", "accuracy": None, "critical_entropy_mean": 0.5,
                             "critical_count": 250, "mean_token_entropy": 0.3, "high_entropy_frac": 0.0,
                             "histogram": hist([905, 90, 0, 5]), "per_response": [1.0] * 50})
            table = {"checkpoints": rows, "correlation": {"n": 8, "pearson": u() - 0.3, "spearman": 0.1},
                     "config": {"high_threshold": 3.63, "other": 1}}
            (root / f"seed{seed}" / name).mkdir(parents=True)
            (root / f"seed{seed}" / name / "entropy_table.json").write_text(json.dumps(table))
        summary(seed, "caption", [(b, "think", None, 0.2 + 0.1 * u(), 40.0) for b in ("test", "ood")])


def test_claims_json_round_trip_through_the_per_seed_inputs(tmp_path):
    """A run's claims.json is recomputed, byte for byte, from the results directory's seedN/report_inputs.json
    alone (the committed files); so are report.md and summary.md."""
    run, results = tmp_path / "run", tmp_path / "results"
    seeds = ["3", "4", "5"]
    fake_run(run, seeds)
    report.main([str(run), "--seeds", *seeds, "--wall_s", "600"])
    doc = json.loads((run / "claims.json").read_text())
    assert doc["seeds"] == seeds and doc["wall_s"] == 600 and len(doc["claims"]) == 25
    assert doc["holm_family_size"] == 2 * 23 + 2   # a difference and an equivalence test per sign claim
    for c in doc["claims"]:
        assert set(c) >= {"target", "claim", "metric", "paper_sign", "paper_value", "smallest_effect", "per_seed",
                          "seeds", "mean", "ci95", "verdict", "holm"}, c
        assert c["seeds"] == seeds and len(c["per_seed"]) == 3 and c["verdict"] in verdicts.VERDICTS
    fig11 = [c for c in doc["claims"] if c["target"] == "fig11"]
    assert all(c["per_seed"][2] is None and c["n"] == 2 for c in fig11)   # seed 5's arm is missing
    # per-seed numbers at full precision: Table 2's first claim against the eval summaries themselves
    acc = {name: [statistics.fmean(100 * r["accuracy"] for r in json.loads(
        (run / f"seed{s}" / "eval" / name / "summary.json").read_text())["runs"].values() if r["benchmark"] != "val")
        for s in seeds] for name in ("connector", "grpo")}
    assert doc["claims"][0]["per_seed"] == [a - b for a, b in zip(acc["connector"], acc["grpo"])]
    # only the small per-seed files and claims.json are "committed"
    for s in seeds:
        inputs = run / f"seed{s}" / report.INPUTS
        assert inputs.stat().st_size < 100_000 and "not/kept" not in inputs.read_text()
        (results / f"seed{s}").mkdir(parents=True)
        shutil.copy(inputs, results / f"seed{s}" / report.INPUTS)
    shutil.copy(run / "claims.json", results / "claims.json")
    (results / "claims.json").write_text((results / "claims.json").read_text().replace('"verdict": "', '"verdict": "x'))
    report.main([str(results), "--recompute"])
    for name in ("claims.json", "report.md", "summary.md"):
        assert (results / name).read_text() == (run / name).read_text(), name
    with pytest.raises(SystemExit, match="no 'eval/caption"):
        (results / "seed3" / report.INPUTS).write_text("{}")
        report.main([str(results), "--recompute"])


def test_a_run_of_some_targets_reports_the_others_as_not_run(tmp_path):
    """demo.sh TARGETS=...: the claims of the targets not run have no numbers (even where an earlier run left
    outputs) and say "not run"; their outputs are not listed as missing; --recompute keeps the targets."""
    run = tmp_path / "run"
    fake_run(run, ["3", "4"])   # seed 4's fig11 arm is missing
    ran = [t for t in report.TARGETS if t not in ("fig5", "fig11")]
    report.main([str(run), "--seeds", "3", "4", "--targets", *ran])
    doc = json.loads((run / "claims.json").read_text())
    assert doc["targets"] == ran
    for c in doc["claims"]:
        assert (c["n"] == 0 and c["verdict"] == "inconclusive") if c["target"] in ("fig5", "fig11") else c["n"] > 0
    text, rows = (run / "report.md").read_text(), verdicts.claims_table(doc).splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows if "| not run (n = 0) |" in r] == ["fig5", "fig5", "fig11", "fig11"]
    assert "## Missing outputs" not in text and text.count("- Not run: the run's targets were table1, ") == 2
    assert "](fig5.png)" not in text and "](fig11.png)" not in text and "](fig6.png)" in text
    # the outputs an earlier run left for Fig. 5 show nowhere in its section: no table, no notes
    fig5 = text[text.index("## Fig. 5"):text.index("## ", text.index("## Fig. 5") + 3)]
    assert "| seed 3 |" not in fig5 and fig5.count("\n- ") == 3, fig5   # its 2 claim lines and "Not run"
    assert "| seed 3 |" in text[text.index("## Fig. 6"):]
    assert re.search(r"\| demo lr: reward steps 21-40 \| \d\.\d{3} \| \d\.\d{3} \| \d\.\d{3} \|", text)   # not 0.4
    assert not (run / "fig5.png").exists() and (run / "fig6.png").is_file()
    # the demo's own table is there whatever the targets: GRPO's gain over its cold start, by hand
    sft, grpo = ([100 * json.loads((run / f"seed{s}" / "eval" / name / "summary.json").read_text())["runs"][
        "test/think/full"]["accuracy"] for s in ("3", "4")] for name in ("sft", "grpo"))
    gain = statistics.fmean(g - s for g, s in zip(grpo, sft))
    assert f"- GRPO − cold-start SFT on test: {gain:.1f} points (n = 2, 95% interval [" in text
    report.main([str(run), "--seeds", "3", "4"])   # all targets: seed 4's fig11 arm is missing, and said so
    assert "seed4/fig11/self_incentive/metrics.jsonl" in (run / "report.md").read_text()
    with pytest.raises(SystemExit, match="no target"):
        report.main([str(run), "--seeds", "3", "--targets", "fig12"])


def test_report_knows_demo_shs_targets():
    line = next(x for x in (ROOT / "demo.sh").read_text().splitlines() if x.startswith("DEMO_TARGETS=("))
    assert tuple(line[len("DEMO_TARGETS=("):-1].split()) == report.TARGETS


def test_the_committed_results_recompute_from_their_per_seed_files(tmp_path):
    """Each part of results/paper_demo (part_a, part_b: the design's two runs): its claims.json, report.md and
    summary.md are what report.py computes from its committed seedN/report_inputs.json alone, byte for byte; the
    design's claims.json and summary.md combine the parts (the README's table is that summary.md: test_readme.py)."""
    committed = ROOT / "results" / "paper_demo"
    results = tmp_path / "paper_demo"
    shutil.copytree(committed, results, ignore=shutil.ignore_patterns("seeds_0-2", "*.md", "*.png"))
    design = json.loads((committed / "claims.json").read_text())
    parts = [p["part"] for p in design["parts"]]
    assert parts == sorted(p.name for p in committed.glob("part_*"))
    for part in parts:
        doc = json.loads((committed / part / "claims.json").read_text())
        assert sorted(p.name for p in (results / part).glob("seed*")) == sorted(f"seed{s}" for s in doc["seeds"])
        report.main([str(results / part), "--recompute"])
        for name in ("claims.json", "report.md", "summary.md"):
            assert (results / part / name).read_text() == (committed / part / name).read_text(), (part, name)
    report.main([str(results), "--parts", *parts])
    for name in ("claims.json", "summary.md"):
        assert (results / name).read_text() == (committed / name).read_text(), name
    with pytest.raises(SystemExit, match="no claims.json in"):
        report.main([str(results), "--parts", *parts, "part_z"])


def test_report_and_readme_tables_are_rendered_from_claims_json(tmp_path):
    """report.md's table and claim lines, summary.md and the README block are claims.json's content: a changed
    claims.json changes them (the renderers read nothing else)."""
    run = tmp_path / "run"
    fake_run(run, ["3", "4"])
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- paper_demo:begin -->\nold\n<!-- paper_demo:end -->\nrest\n")
    report.main([str(run), "--seeds", "3", "4", "--readme", str(readme)])
    doc = json.loads((run / "claims.json").read_text())
    table = verdicts.claims_table(doc)
    text = (run / "report.md").read_text()
    assert table in text and (run / "summary.md").read_text() == table + "\n"
    assert readme.read_text() == f"intro\n<!-- paper_demo:begin -->\n{table}\n<!-- paper_demo:end -->\nrest\n"
    rows = table.splitlines()[2:]
    assert len(rows) == len(doc["claims"])
    for row, c in zip(rows, doc["claims"]):
        cells = [x.strip() for x in row.strip("|").split("|")]
        assert cells[0] == c["target"] and cells[-2] == c["verdict"] and cells[-1] == c["holm"]["verdict"]
        assert f"(n = {c['n']})" in cells[4] and verdicts.claim_line(c) in text
    c = doc["claims"][0]
    c["verdict"], c["holm"]["verdict"] = "not reproduced", "no effect at demo scale"
    c["mean"], c["ci95"] = -9.5, [-9.75, -9.25]
    assert verdicts.claims_table(doc).splitlines()[2].endswith(
        "| -9.50 [-9.75, -9.25] (n = 2) | not reproduced | no effect at demo scale |")
    assert "**Verdict: not reproduced**" in verdicts.claim_line(c) and "mean -9.50" in verdicts.claim_line(c)


def test_the_design_table_is_what_report_tests(tmp_path):
    """results/paper_demo/design.md's claims table names every claim report.py tests, in its order, with the same
    smallest effect (or threshold M), seed count and built-in mark."""
    design = (Path(report.__file__).parent / verdicts.DESIGN).read_text()
    rows = [[x.strip() for x in line.strip("|").split("|")] for line in design.splitlines()
            if re.match(r"\| \d+ \|", line)]
    report.main([str(tmp_path), "--seeds", "3"])
    claims = json.loads((tmp_path / "claims.json").read_text())["claims"]
    assert len(rows) == len(claims) == 25
    for row, c in zip(rows, claims):
        number, target, claim, _, _, effect, seeds, reasoning = row
        assert (target, claim) == (c["target"], c["claim"]), row
        expected = f"M = {c['reference']:g}" if c["kind"] == "magnitude" else f"±{c['smallest_effect']:g}"
        assert effect == expected and int(seeds) == c["seeds_planned"], (row, expected)
        assert ("**Built in**" in reasoning) == bool(c["built_in"]), row
