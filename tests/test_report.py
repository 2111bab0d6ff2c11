"""report.py: the paired-difference statistics against a hand computation, the verdict rule, the smoothing, and
Table 5's pooling and its minimum count of phrase responses."""
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import report  # noqa: E402


def test_paired_difference_hand_computed():
    # diffs 2, 3, 6: mean 11/3; deviations -5/3, -2/3, 7/3 -> squares 25/9 + 4/9 + 49/9 = 78/9, / (n - 1) = 13/3,
    # sd = sqrt(13/3) = 2.08167; half = t(0.975, 2) * sd / sqrt(3) = 4.303 * 2.08167 / 1.73205 = 5.17155
    st = report.paired([3, 5, 10], [1, 2, 4])
    assert st["diffs"] == [2, 3, 6] and st["n"] == 3
    assert st["mean"] == pytest.approx(11 / 3)
    assert st["sd"] == pytest.approx(math.sqrt(13 / 3))
    assert st["half"] == pytest.approx(5.17155, abs=1e-4)
    assert st["lo"] == pytest.approx(11 / 3 - 5.17155, abs=1e-4)
    assert st["hi"] == pytest.approx(11 / 3 + 5.17155, abs=1e-4)
    assert report.verdict(st, +1)[0] == "inconclusive"


def test_paired_difference_skips_missing_seeds_and_needs_two():
    st = report.paired([1.0, None, 3.0], [0.5, 1.0, None])
    assert st["diffs"] == [0.5] and st["n"] == 1 and st["half"] is None
    assert report.paired([float("nan"), 2.0], [0.0, 1.0])["diffs"] == [1.0]   # NaN (e.g. a Pearson of constants)
    assert report.verdict(st, +1) == ("inconclusive", "1 seed(s) with numbers: no interval")
    with pytest.raises(ValueError):
        report.paired([1.0], [1.0, 2.0])


def test_verdict_sides():
    # diffs 1.0, 1.2, 0.8: sd 0.2, half 4.303 * 0.2 / sqrt(3) = 0.49687 -> [0.50313, 1.49687]
    st = report.paired([2.0, 2.2, 1.8], [1.0, 1.0, 1.0])
    assert st["lo"] == pytest.approx(0.50313, abs=1e-4) and st["hi"] == pytest.approx(1.49687, abs=1e-4)
    assert report.verdict(st, +1)[0] == "reproduced"
    assert report.verdict(st, -1)[0] == "not reproduced"   # against the paper: stays in the report as such
    assert "t = 4.30" in report.verdict(st, +1)[1]


def test_t_quantiles():
    assert report.t975(1) == 12.706 and report.t975(2) == 4.303 and report.t975(11) == 2.228   # 11 -> df 10's
    assert report.t975(100) == 1.96
    with pytest.raises(ValueError):
        report.t975(0)


def test_smooth_is_a_centred_moving_average():
    assert report.smooth([0, 3, 6, 9], 3) == [1.5, 3, 6, 7.5]
    assert report.smooth([1, 2], 1) == [1, 2]


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
    assert diffs == f"{without0 - 30:+.2f}, {50.0 - 30:+.2f}", section
