"""report.py: the paired-difference statistics against a hand computation, the verdict rule, and the smoothing."""
import math
import os
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
