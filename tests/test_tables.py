"""tables.py: the accuracy tables, training-curve plots and demo summary that launch.sh and demo.sh write."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tables  # noqa: E402


def run(accuracy, std, tokens, k=2):
    return {"accuracy": accuracy, "std": std, "avg_tokens": tokens, "k": k}


def write_summary(eval_dir, runs):
    eval_dir.mkdir(parents=True)
    (eval_dir / "summary.json").write_text(json.dumps({"runs": runs}))


def test_acc_table_by_hand():
    rows = [("SFT", {"ood/think/full": run(0.25, 0.05, 100), "test/think/full": run(0.5, 0.0125, 50)}),
            ("GRPO", {"val/think/full": run(1.0, 0.0, 30), "test/think/full": run(0.75, 0.1, 70)})]
    # columns: test first, then the rest sorted, in order of first appearance; "/think/full" dropped from the names;
    # tokens: the mean of the row's runs' avg_tokens ((100 + 50) / 2 = 75, (30 + 70) / 2 = 50)
    assert tables.acc_table("Title", rows) == (
        "## Title\n\n| | test | ood | val | tokens |\n|---|---|---|---|---|\n"
        "| SFT | 50.0 ± 1.2 | 25.0 ± 5.0 | - | 75 |\n| GRPO | 75.0 ± 10.0 | - | 100.0 ± 0.0 | 50 |\n\n"
        "accuracy (%) = avg@2 at T = 1.0 ± std over the k runs\n")


def test_acc_table_cli_writes_file_and_names_missing_summary(tmp_path):
    write_summary(tmp_path / "a", {"test/think/full": run(0.5, 0.0, 10, k=5)})
    write_summary(tmp_path / "b", {"test/think/full": run(0.25, 0.0, 20, k=1)})
    out = tmp_path / "t" / "table.md"
    tables.main(["acc_table", str(out), "T", f"A={tmp_path / 'a'}", f"B={tmp_path / 'b'}"])
    text = out.read_text()
    assert "| A | 50.0 ± 0.0 | 10 |" in text and "| B | 25.0 ± 0.0 | 20 |" in text and "avg@1/5 " in text
    with pytest.raises(FileNotFoundError, match="missing_eval"):
        tables.main(["acc_table", str(out), "T", f"C={tmp_path / 'missing_eval'}"])
    with pytest.raises(SystemExit, match="LABEL=PATH"):
        tables.main(["acc_table", str(out), "T", "no_label_given"])


def test_demo_summary_by_hand(tmp_path):
    write_summary(tmp_path / "eval" / "sft", {"test/think/full": run(0.40, 0.0, 1)})
    write_summary(tmp_path / "eval" / "grpo", {"test/think/full": run(0.525, 0.0, 1)})
    # `launch.sh demo` leaves the entropy stage to fig5: the summary names the command instead of failing
    assert tables.demo_summary(tmp_path) == (
        "\nGRPO - cold-start SFT on test: +12.5 points\n\n"
        "Entropy-based selection over the GRPO checkpoints (§5.1): `SCALE=demo bash launch.sh fig5` (with this run's "
        "SEED) scores every checkpoint's val responses, reusing its stages\n")
    (tmp_path / "entropy").mkdir()
    (tmp_path / "entropy" / "entropy_table.json").write_text(json.dumps({
        "checkpoints": [{"name": "step_000040", "critical_entropy_mean": 0.12345, "accuracy": 0.5},
                        {"name": "step_000020", "critical_entropy_mean": 0.2, "accuracy": None}],
        "correlation": None}))
    assert tables.demo_summary(tmp_path) == (
        "\nGRPO - cold-start SFT on test: +12.5 points\n\n"
        "Entropy-based selection over the GRPO checkpoints (§5.1): step_000040, critical-token entropy 0.123 nats, "
        "val accuracy 0.500; Pearson(entropy, val accuracy) over 2 checkpoints - "
        f"({tmp_path / 'entropy' / 'entropy.png'})\n")


def test_plot_curves_writes_png(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "reward/mean": 0.1}\n{"step": 2, "reward/mean": null}\n'
                       '{"step": 3, "reward/mean": 0.3, "entropy/mean": 1.5}\n')
    out = tmp_path / "fig" / "curves.png"
    result = subprocess.run([sys.executable, str(ROOT / "tables.py"), "plot_curves", str(out),
                             "reward/mean,entropy/mean", f"run={metrics}"], text=True, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(out.parent.glob("*.tmp*"))


def test_smooth_is_a_centred_moving_average():
    assert tables.smooth([0, 3, 6, 9], 3) == [1.5, 3, 6, 7.5]
    assert tables.smooth([1, 2], 1) == [1, 2]
