"""launch.sh and demo.sh: the demo pipeline end to end at SCALE=ci, every paper-scale command against the
scripts' configs, and the paper targets' input checks.

The shortened demo runs the same launch.sh path and configs as `bash launch.sh demo`, with fewer steps and items,
and checks that each stage ran and that GRPO's held-out reward beats the cold-start SFT checkpoint it started from.
"""
import dataclasses
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import configurator  # noqa: E402
import connector_tune  # noqa: E402
import data  # noqa: E402
import entropy  # noqa: E402
import eval as eval_  # noqa: E402
import grpo  # noqa: E402
import memory_plan  # noqa: E402
import model  # noqa: E402
import reject  # noqa: E402
import rewards  # noqa: E402
import sft  # noqa: E402
from launch_sh import launch  # noqa: E402

PAPER_TARGETS = ["coldstart", "grpo", "connector", "table1", "table2", "table3", "table4", "table5", "fig5", "fig6",
                 "fig7_8", "fig9", "fig10", "fig11"]


def parse_command(argv):
    """One launched command -> the parsed config of the script it runs (raises on an unknown or mistyped key)."""
    script = next(i for i, a in enumerate(argv) if a.endswith(".py"))
    name, args = Path(argv[script]).name, argv[script + 1:]
    if name == "grpo.py":
        return configurator.parse_config(grpo.Config, args)
    if name == "sft.py":
        return configurator.parse_config(sft.Config, args)
    if name == "reject.py":
        return configurator.parse_config(reject.Config, args)
    if name == "connector_tune.py":
        return configurator.parse_config(connector_tune.Config, args)
    if name == "eval.py":
        return configurator.parse_config(eval_.EvalConfig, args)
    if name == "entropy.py":
        return entropy.parse_args(args)
    raise AssertionError(f"unexpected script in {argv}")


@pytest.mark.parametrize("target", PAPER_TARGETS)
def test_paper_scale_commands_parse(target):
    result = launch(target, DRY_RUN="1", SCALE="paper")
    assert result.returncode == 0, result.stdout
    commands = [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert commands, result.stdout
    for argv in commands:
        cfg = parse_command(argv)
        config_files = [a for a in argv if a.startswith("config/")]
        assert all((ROOT / f).is_file() for f in config_files), argv
        if argv[0] == "torchrun":  # every distributed run is one of the 38B configs, on 2 nodes of 8 GPUs ...
            assert argv[1:5] == ["--nnodes=2", "--nproc_per_node=8", "--rdzv-backend=c10d",
                                 "--rdzv-endpoint=localhost:29500"], argv
            assert any(f.endswith("_38b.py") for f in config_files), argv
            # ... where it fits by the memory plan (80 GB GPUs, the released 38B config.json)
            is_grpo = "grpo.py" in argv   # connector_tune.py plans through sft.py's train()
            planned = dataclasses.replace(cfg, plan_gpu_gib=79.19, **{"init_from" if is_grpo else "checkpoint": str(
                ROOT / "config" / "skywork-r1v3-38b.json")})
            planner = memory_plan.grpo_plan if is_grpo else memory_plan.sft_plan
            assert planner(planned, 16, torch.device("cpu"))["fits"], argv
        if Path(argv[argv.index(next(a for a in argv if a.endswith(".py")))]).name == "eval.py":
            assert cfg.temperature == 1.0 and cfg.max_new_tokens == 16384 and cfg.backend == "vllm", argv
            assert cfg.k == (1 if "--k=1" in argv else 5), argv


def test_paper_scale_ablation_flags():
    """The ablations change exactly what the paper changes."""

    def grpo_configs(target):
        out = launch(target, DRY_RUN="1", SCALE="paper").stdout
        lines = [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ ") and "grpo.py" in line]
        return [configurator.parse_config(grpo.Config, argv[argv.index("grpo.py") + 1:]) for argv in lines]

    fig6 = grpo_configs("fig6")
    assert sorted(sorted(c.trainable) for c in fig6) == [["connector", "llm"], ["llm", "vision"]]
    fig7 = grpo_configs("fig7_8")
    assert [c.lr for c in fig7] == [1e-5, 1e-6] and len(fig7[0].curriculum) == 2 and not fig7[1].curriculum
    (fig11,) = grpo_configs("fig11")
    assert fig11.mode == "nothink" and "<think>" in fig11.system_prompt and "InternVL" in fig11.init_from


def heldout_reward(eval_dir, records_path):
    """Mean reward (eq. 3: 0.8 accuracy + 0.2 format) over every sampled response on the test split."""
    records = {r.id: r for r in data.read_records(records_path)}
    gens = [json.loads(line) for line in (Path(eval_dir) / "test" / "think_full" / "generations.jsonl").open()]
    scores = rewards.score_batch([g["response"] for g in gens], [records[g["id"]].answer for g in gens],
                                 [records[g["id"]].options for g in gens], None,
                                 rewards.RewardConfig(num_workers=0))
    return sum(s["reward"] for s in scores) / len(scores)


def wandb_history(run_dir):
    """An offline W&B run directory -> {step: {key: value}} from its .wandb log, read by wandb's own reader
    (`wandb leet inspect --json`: a JSON line per record, wandb/cli/leet.py:142-170 in wandb 0.31)."""
    out = subprocess.run([str(Path(sys.prefix) / "bin" / "wandb"), "leet", "inspect", "--json", str(run_dir)],
                         text=True, capture_output=True)
    assert out.returncode == 0, out.stderr
    history = {}
    for line in out.stdout.splitlines():
        record = json.loads(line)
        if record["type"] == "history":
            history.setdefault(record["history"]["step"]["num"], {}).update(record["history"]["item"])
    return history


def test_paper_target_checks_inputs_on_entry(tmp_path):
    """A paper target with a missing input stops before its first command, naming every missing input; with all
    inputs present (or DRY_RUN=1) it prints its commands."""
    model, bench = tmp_path / "model", tmp_path / "bench"
    result = launch("table4", MODEL=str(model), BENCH_DIR=str(bench))
    assert result.returncode == 2, result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("+ ")], result.stdout
    assert f"missing directory {model}" in result.stdout
    assert f"missing file {bench / 'MMMU_DEV_VAL.tsv'}" in result.stdout
    dry = launch("table4", MODEL=str(model), BENCH_DIR=str(bench), DRY_RUN="1")
    assert dry.returncode == 0 and "missing directory" in dry.stdout, dry.stdout
    assert [line for line in dry.stdout.splitlines() if line.startswith("+ ")], dry.stdout
    model.mkdir()
    bench.mkdir()
    (bench / "MMMU_DEV_VAL.tsv").write_text("index\tquestion\n")
    ready = launch("table4", MODEL=str(model), BENCH_DIR=str(bench), DRY_RUN="1")
    assert ready.returncode == 0 and ready.stdout.startswith("+ ") and len(ready.stdout.splitlines()) == 1, ready.stdout


@pytest.mark.parametrize("target", ["fig6", "fig7_8", "fig11"])
def test_curve_targets_need_the_main_grpo_run_first(target, tmp_path):
    """Figs. 6, 7-8 and 11 plot against out/grpo_38b/metrics.jsonl: checked before any GRPO run starts."""
    if (ROOT / "out" / "grpo_38b" / "metrics.jsonl").exists():
        pytest.skip("this checkout has out/grpo_38b/metrics.jsonl")
    result = launch(target, SFT_CKPT=str(tmp_path), BASE_MODEL=str(tmp_path), RL_DATA=__file__,
                    HARD_DATA=__file__, RL_VAL=__file__, BENCH_DIR=str(tmp_path))
    assert result.returncode == 2 and "missing file out/grpo_38b/metrics.jsonl" in result.stdout, result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("+ ")], result.stdout


def test_paper_demo_progress_counts_the_seeds_not_started(tmp_path):
    """The share done is over every seed of the run: seeds still waiting for a slot (JOBS) count as none done, and
    neither a seed directory of another run nor a seed of this run that an earlier run finished and this one has
    not started yet."""
    (tmp_path / "started").write_text("")   # paper_demo's start
    os.utime(tmp_path / "started", (1e9, 1e9))
    for seed, progress in (("3", "6 11"), ("4", "7 11"), ("0", "11 11"), ("5", "11 11")):   # 5, 6: not started
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "progress").write_text(progress + "\n")
    for stale in ("0", "5"):   # an earlier run's, from before the start
        os.utime(tmp_path / f"seed{stale}" / "progress", (1e9 - 60, 1e9 - 60))
    script = (f'eval "$(sed -n "/^paper_demo_progress() {{/,/^}}/p" {ROOT / "demo.sh"})"; SECONDS=100; '
              f'paper_demo_progress {tmp_path} 0 3 4 5 6')
    out = subprocess.run(["bash", "-c", script], text=True, capture_output=True, check=True).stdout
    assert out.startswith("paper_demo: 29% done, 100s elapsed, ETA ~238s"), out   # 13 of 44 units done


PAPER_DEMO_SECTIONS = ["Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Fig. 5", "Fig. 6", "Figs. 7-8", "Fig. 9",
                       "Fig. 10", "Fig. 11"]


def test_paper_demo_ci(pipeline_runs):
    """`launch.sh paper_demo` at SCALE=ci on tiny settings (PAPER_DEMO_CI=1), 2 seeds: every target's pipeline runs
    to the end for every seed and the report has every section, the seed count and a verdict per claim. This checks
    the machinery, not the science (a few steps teach the tiny model nothing). Table 3's SFT arm is the one
    exception allowed: it trains on the RL model's correct, well-formed answers, and an untrained CI model may
    write none (then sft.py stops naming the empty file, the seed's other targets still run, report.md lists the
    missing table3_sft eval). The run started with the session (conftest.py), WANDB_MODE unset as a user runs it."""
    pd, proc, run_log = pipeline_runs["test_paper_demo_ci"]
    result = subprocess.CompletedProcess(proc.args, proc.wait(), stdout=Path(run_log).read_text())
    logs = "\n".join((pd / f"seed{s}" / "log.txt").read_text()[-3000:] for s in (0, 1) if (pd / f"seed{s}").is_dir())
    full_logs = "".join(log.read_text() for log in pd.glob("seed*/log.txt")) + result.stdout
    assert not list(pd.rglob("wandb")) and not re.search(r"W&B|^wandb:", full_logs, re.M), logs
    assert "ETA" in result.stdout
    for s in (0, 1):
        seed = pd / f"seed{s}"
        assert (seed / "progress").read_text().split() == ["17", "17"], logs   # the demo (6 units) + 11 targets
        log = (seed / "log.txt").read_text()
        failed = re.findall(r"=== target (\w+) \(seed \d\): FAILED", log)
        assert failed in ([], ["table3"]), logs
        if failed:   # the allowed exception: too few correct samples to train on, said by sft.py
            assert "training samples, fewer than global_batch_size" in log, log[-3000:]
        assert (seed / "table3" / "distill" / ".done").is_file()
        # fig7_8: two benchmarks from files both once named test.jsonl are evaluated side by side
        runs = json.loads((seed / "eval" / "fig7_curriculum" / "summary.json").read_text())["runs"]
        assert {r["benchmark"] for r in runs.values()} == {"test", "hard"}
        # fig7_8's curriculum arm resumed from the main GRPO run's checkpoint at its switch step (step 3 of 6),
        # kept the main run's rows up to it and trained on the hard data after it
        assert f"resumed from {seed / 'fig7_8' / 'curriculum' / 'step_000003'} at step 3" in log, log[-3000:]
        main, curriculum = ([json.loads(line) for line in (seed / run / "metrics.jsonl").open()]
                            for run in ("grpo", "fig7_8/curriculum"))
        assert [r["step"] for r in curriculum] == list(range(1, 7)) and curriculum[:3] == main[:3]
        assert [r["data/stage"] for r in curriculum[3:]] == [1, 1, 1]
        # the think run of Table 4 and the test run of fig7_8's normal arm were copied from the final checkpoint's
        # and the GRPO checkpoint's evals (8 items x 2 samples), not sampled again
        for copied in ("table4", "fig7_grpo"):
            assert f"{seed / 'eval' / copied / 'test' / 'think_full'}: 16 samples already generated, 0 to go" in log
        # fig11's no-cold-start arm ran every step (whether it learns is the real run's question: report.md)
        rows = [json.loads(line) for line in (seed / "fig11" / "self_incentive" / "metrics.jsonl").open()]
        assert [r["step"] for r in rows] == list(range(1, 7))
        # NoThink on the demo model: no response contains a thinking tag (eval.py bans both in nothink mode)
        gens = [json.loads(line) for line in
                (seed / "eval" / "table4" / "test" / "nothink_full" / "generations.jsonl").open()]
        assert gens and not any("<think>" in g["response"] or "</think>" in g["response"] for g in gens)
        # fig5: every GRPO checkpoint's critical-token entropy beside its val accuracy
        entropy = json.loads((seed / "entropy" / "entropy_table.json").read_text())["checkpoints"]
        assert len(entropy) >= 2 and all(r["accuracy"] is not None for r in entropy), entropy
        # checkpoints are labelled by stage in the entropy tables (the cold-start one is not a late GRPO step)
        fig10 = json.loads((seed / "fig10" / "entropy_table.json").read_text())["checkpoints"]
        names = [r["name"] for r in fig10]
        assert "sft/step_000004" in names and all(n.startswith(("sft/", "grpo/")) for n in names), names
        # fig10 scored the cold-start checkpoint only: the GRPO checkpoints' rows are fig5's (entropy.py --reuse)
        assert log.count("scored already: ") == len(entropy) == len(names) - 1, log[-3000:]
        fig5 = {r["checkpoint"]: r for r in entropy}
        for r in (r for r in fig10 if r["name"].startswith("grpo/")):
            same = [k for k in r if k not in ("accuracy", "accuracy_source", "rank")]
            assert {k: r[k] for k in same} == {k: fig5[r["checkpoint"]][k] for k in same}, r["name"]
        for target, out in [("table2", "table2.md"), ("table3", "table3.md"), ("fig6", "fig6.png"),
                            ("fig7_8", "fig7_8.png"), ("fig11", "fig11.png"), ("fig5", "entropy.png")]:
            assert (seed / "targets" / target / out).is_file() or target in failed, (target, out)
    report = (pd / "report.md").read_text()
    assert report.startswith("# The paper's claims at demo scale (2 seeds: 0, 1)"), report[:200]
    for title in PAPER_DEMO_SECTIONS:
        assert f"\n## {title}" in report, title
    missing = report[report.find("## Missing outputs"):].splitlines()[2:] if "## Missing outputs" in report else []
    assert all(m.endswith("eval/table3_sft/summary.json") for m in missing), missing
    assert result.returncode == (1 if missing else 0), result.stdout[-3000:]
    summary_rows = [line for line in report.splitlines() if line.startswith("| ") and line.endswith(
        ("| reproduced |", "| not reproduced |", "| no effect at demo scale |", "| inconclusive |"))]
    verdicts = re.findall(r"\*\*Verdict: (reproduced|not reproduced|no effect at demo scale|inconclusive)\*\*", report)
    assert len(verdicts) == len(summary_rows) >= 20, (len(verdicts), len(summary_rows))
    assert all("(n = " in row for row in summary_rows)
    assert "| seed 0 | seed 1 | mean |" in report
    claims = json.loads((pd / "claims.json").read_text())["claims"]   # what the report's verdicts are rendered from
    assert [c["verdict"] for c in claims] == verdicts and all((pd / f"seed{s}" / "report_inputs.json").is_file()
                                                              for s in (0, 1))
    for png in ("table2", "table3", "fig5", "fig6", "fig7_8", "fig9", "fig10", "fig11"):
        assert (pd / f"{png}.png").is_file(), png


def test_demo_pipeline_ci(pipeline_runs):
    """`launch.sh demo` at SCALE=ci (W&B offline), started with the session (conftest.py); then one seed of
    paper_demo's all_targets on it with TARGETS."""
    demo, proc, run_log = pipeline_runs["test_demo_pipeline_ci"]
    result = subprocess.CompletedProcess(proc.args, proc.wait(), stdout=Path(run_log).read_text())
    assert result.returncode == 0, result.stdout[-5000:]
    for stage in ("data", "init", "caption", "sft", "grpo", "connector", "eval/caption", "eval/sft", "eval/grpo",
                  "eval/connector"):
        assert (demo / stage / ".done").is_file(), f"stage {stage} did not finish:\n{result.stdout[-3000:]}"
    # what only paper_demo's Figs. 5 and 10 read (each GRPO checkpoint's val eval, its entropy) is left to them
    assert not (demo / "entropy").exists() and not list((demo / "eval").glob("val_*")), sorted(demo.rglob(".done"))
    table = (demo / "results.md").read_text()
    assert "cold-start SFT" in table and "GRPO" in table and "connector-only tuning" in table
    # each stage's checkpoint is the one the next stage started from, and the connector stage changed only mlp1
    grpo_last = sorted((demo / "grpo").glob("step_*"))[-1]
    tuned = model.load_model(sorted((demo / "connector").glob("step_*"))[-1]).state_dict()
    rl = model.load_model(grpo_last).state_dict()
    changed = {k.split(".")[0] for k in rl if not (rl[k] == tuned[k]).all()}
    assert changed == {"mlp1"}, changed
    # WANDB_MODE=offline: every training stage and eval wrote one offline run beside its outputs, `wandb sync`
    # would upload them all, and each training run's W&B history has its metrics.jsonl, step by step
    runs = sorted(demo.glob("*/wandb/offline-run-*")) + sorted(demo.glob("eval/*/wandb/offline-run-*"))
    assert [r.parent.parent.relative_to(demo).as_posix() for r in runs] == [
        "caption", "connector", "grpo", "sft", "eval/caption", "eval/connector", "eval/grpo", "eval/sft"], runs
    sync = subprocess.run([str(Path(sys.prefix) / "bin" / "wandb"), "sync", "--dry-run", *map(str, runs)],
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert sync.returncode == 0 and f"Would sync {len(runs)} run(s)" in sync.stdout, sync.stdout
    for run in runs:
        history = wandb_history(run)
        if run.parent.parent.parent.name == "eval":
            accuracy = json.loads((run.parent.parent / "summary.json").read_text())["accuracy"]
            assert [h["eval/accuracy"] for h in history.values()] == [pytest.approx(accuracy)], history
            continue
        logged = {}
        for row in map(json.loads, (run.parent.parent / "metrics.jsonl").open()):
            logged.setdefault(row.pop("step"), {}).update(row)
        assert sorted(history) == sorted(logged), (run, sorted(history), sorted(logged))
        for step, row in logged.items():
            for key, value in row.items():
                if isinstance(value, float) and math.isfinite(value) or type(value) is int:
                    assert history[step][key] == pytest.approx(value, rel=1e-12), (run, step, key)
    # the point of the demo: RL beats the cold-start checkpoint it started from, on held-out boards
    sft_reward = heldout_reward(demo / "eval" / "sft", demo / "data" / "test.jsonl")
    grpo_reward = heldout_reward(demo / "eval" / "grpo", demo / "data" / "test.jsonl")
    assert grpo_reward > sft_reward, (sft_reward, grpo_reward, table)
    # one seed of paper_demo with TARGETS: the demo (done: every stage skipped), then only the targets named
    targets = launch("all_targets", SCALE="ci", DEMO=str(demo), SEED="0", TARGETS="table5",
                     OUT_ROOT=str(demo / "targets"))
    assert targets.returncode == 0, targets.stdout[-3000:]
    assert (demo / "progress").read_text().split() == ["7", "7"]   # the demo (6 units) + 1 target
    assert sorted(p.name for p in (demo / "targets").iterdir()) == ["table5"] and "=== target table5" in targets.stdout
