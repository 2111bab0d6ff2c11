"""verdicts.py: the t distribution, paired differences and the four verdicts on hand-computed intervals, the
p-values against the interval, and Holm's adjustment."""
import math
import os
import random
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import verdicts  # noqa: E402


def test_t_distribution_exact_for_integer_df():
    # df = 1 is Cauchy: P(T <= 1) = 1/2 + atan(1)/pi = 3/4; df = 2: P(T <= t) = 1/2 + t / (2 sqrt(2 + t^2))
    assert verdicts.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-15)
    assert verdicts.t_cdf(1.0, 2) == pytest.approx(0.5 + 1 / (2 * math.sqrt(3)), abs=1e-15)
    assert verdicts.t_cdf(-1.0, 2) == pytest.approx(0.5 - 1 / (2 * math.sqrt(3)), abs=1e-15)
    # df = 3: 1/2 + (theta + sin theta cos theta) / pi, theta = atan(t / sqrt 3); t = sqrt 3 -> theta = pi/4
    assert verdicts.t_cdf(math.sqrt(3), 3) == pytest.approx(0.5 + (math.pi / 4 + 0.5) / math.pi, abs=1e-15)
    # the t table's t(0.975, df), and 1.96 far out
    for df, t in ((1, 12.706), (2, 4.303), (7, 2.365), (10, 2.228), (30, 2.042)):
        assert verdicts.t975(df) == pytest.approx(t, abs=5e-4), df
    assert verdicts.t975(2000) == pytest.approx(1.961, abs=1e-3)
    with pytest.raises(ValueError):
        verdicts.t_cdf(1.0, 0)


def test_paired_difference_hand_computed():
    # diffs 2, 3, 6: mean 11/3; deviations -5/3, -2/3, 7/3 -> squares 25/9 + 4/9 + 49/9 = 78/9, / (n - 1) = 13/3,
    # sd = sqrt(13/3) = 2.081666, se = sd / sqrt 3 = 1.201850; half = t(0.975, 2) * se = 4.302653 * 1.201850 = 5.17114
    st = verdicts.paired([3, 5, 10], [1, 2, 4])
    assert st["diffs"] == [2, 3, 6] and st["per_seed"] == [2, 3, 6] and st["n"] == 3
    assert st["mean"] == pytest.approx(11 / 3)
    assert st["sd"] == pytest.approx(math.sqrt(13 / 3))
    assert st["half"] == pytest.approx(5.17114, abs=1e-4)
    assert st["lo"] == pytest.approx(11 / 3 - 5.17114, abs=1e-4)
    assert st["hi"] == pytest.approx(11 / 3 + 5.17114, abs=1e-4)


def test_paired_difference_keeps_seed_order_and_needs_two():
    st = verdicts.paired([1.0, None, 3.0], [0.5, 1.0, None])
    assert st["per_seed"] == [0.5, None, None] and st["diffs"] == [0.5] and st["n"] == 1 and st["half"] is None
    assert verdicts.paired([float("nan"), 2.0], [0.0, 1.0])["per_seed"] == [None, 1.0]   # e.g. Pearson of constants
    assert verdicts.verdict(st, +1, 1.0) == ("inconclusive", "1 seed(s) with numbers: no interval")
    assert verdicts.p_values(st, 0.0, 1.0) == (1.0, 1.0)
    with pytest.raises(ValueError):
        verdicts.paired([1.0], [1.0, 2.0])


def test_four_verdicts_on_hand_computed_intervals():
    # diffs 1.0, 1.2, 0.8: mean 1, sd 0.2, half = 4.302653 * 0.2 / sqrt 3 = 0.496828 -> [0.503172, 1.496828]
    st = verdicts.stats_of([1.0, 1.2, 0.8])
    assert st["lo"] == pytest.approx(0.503172, abs=1e-6) and st["hi"] == pytest.approx(1.496828, abs=1e-6)
    assert verdicts.verdict(st, +1, 0.4)[0] == "reproduced"       # not within ±0.4: hi = 1.50
    assert verdicts.verdict(st, -1, 0.4)[0] == "not reproduced"   # against the paper: stays in the report as such
    # on the paper's side AND within ±2: equivalence comes first (smaller than any effect that counts)
    v, reason = verdicts.verdict(st, +1, 2.0)
    assert v == "no effect at demo scale" and "excludes 0" in reason and "within ±2" in reason
    # diffs 0.1, 0.2, 0.0: mean 0.1, sd 0.1, half 0.248414 -> [-0.148414, +0.348414]: within ±0.5, not within ±0.3
    st = verdicts.stats_of([0.1, 0.2, 0.0])
    assert st["lo"] == pytest.approx(-0.148414, abs=1e-6) and st["hi"] == pytest.approx(0.348414, abs=1e-6)
    assert verdicts.verdict(st, +1, 0.5)[0] == "no effect at demo scale"
    assert verdicts.verdict(st, -1, 0.5)[0] == "no effect at demo scale"
    assert verdicts.verdict(st, +1, 0.3)[0] == "inconclusive"
    # TOST at the interval's level: p = 2 max(one-sided p), df = 2 closed form; se = 0.1 / sqrt 3 = 0.0577350:
    # upper test t = (0.1 - 0.5) / se = -6.928203 -> P(T <= t) = 1/2 - 6.928203 / (2 sqrt 50) = 0.0101021 (the larger)
    p_diff, p_eq = verdicts.p_values(st, 0.0, 0.5)
    assert p_eq == pytest.approx(2 * 0.0101021, abs=1e-6)
    # difference test: t = 0.1 / se = 1.732051 -> 2 (1/2 - 1.732051 / (2 sqrt 5)) = 0.2254033
    assert p_diff == pytest.approx(0.2254033, abs=1e-6)
    # diffs 2, 3, 6 -> [-1.50, +8.84]: inconclusive
    assert verdicts.verdict(verdicts.stats_of([2, 3, 6]), +1, 1.0)[0] == "inconclusive"


def test_magnitude_verdicts_against_the_threshold():
    # sizes 12, 14, 13 (%): mean 13, sd 1, half 4.302653 / sqrt 3 = 2.484138 -> [10.515862, 15.484138]
    st = verdicts.stats_of([12.0, 14.0, 13.0])
    assert verdicts.verdict(st, +1, 9.1, "magnitude", 9.1)[0] == "reproduced"
    assert verdicts.verdict(st, +1, 9.1, "magnitude", 16.0)[0] == "not reproduced"   # smaller than M = 16
    assert verdicts.verdict(st, +1, 9.1, "magnitude", 12.0)[0] == "inconclusive"
    # sizes 3, 4, 5 -> [1.515862, 6.484138]: below M = 9.1 (and within ±9.1, which a magnitude claim does not test)
    assert verdicts.verdict(verdicts.stats_of([3.0, 4.0, 5.0]), +1, 9.1, "magnitude", 9.1)[0] == "not reproduced"
    p_diff, _ = verdicts.p_values(st, 16.0, 9.1)   # t = (13 - 16) / (1 / sqrt 3) = -5.196152
    assert p_diff == pytest.approx(2 * (0.5 - 5.196152 / (2 * math.sqrt(2 + 27))), abs=1e-6)


def test_p_values_agree_with_the_interval():
    """p < 0.05 exactly when the 95% interval excludes the reference / lies within ±smallest_effect."""
    rng = random.Random(0)
    for _ in range(300):
        st = verdicts.stats_of([rng.gauss(1, 2) for _ in range(rng.randint(2, 9))])
        delta, ref = rng.uniform(0.2, 4), rng.choice([0.0, 1.0])
        p_diff, p_eq = verdicts.p_values(st, ref, delta)
        assert (p_diff < 0.05) == (st["lo"] > ref or st["hi"] < ref)
        assert (p_eq < 0.05) == (-delta < st["lo"] and st["hi"] < delta)


def test_holm_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert verdicts.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert verdicts.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])   # capped at 1
    # a family of two sign claims and a magnitude claim: 2 + 2 + 1 = 5 tests
    claims = [dict(kind="sign", paper_sign=1, mean=1.0, reference=0.0, p_difference=0.004, p_equivalence=0.9),
              dict(kind="sign", paper_sign=1, mean=0.1, reference=0.0, p_difference=0.3, p_equivalence=0.02),
              dict(kind="magnitude", paper_sign=1, mean=5.0, reference=9.1, p_difference=0.011,
                   p_equivalence=None)]
    assert verdicts.holm_verdicts(claims) == 5
    # sorted 0.004 (x5 = 0.02), 0.011 (x4 = 0.044), 0.02 (x3 = 0.06), 0.3 (x2 = 0.6), 0.9 (x1 -> 0.9)
    assert [c["holm"]["p_difference"] for c in claims] == pytest.approx([0.02, 0.6, 0.044])
    assert [c["holm"]["p_equivalence"] for c in claims[:2]] == pytest.approx([0.9, 0.06])
    assert claims[2]["holm"]["p_equivalence"] is None
    # unadjusted the second would be "no effect" (0.02 < 0.05); after Holm (0.06) it is not
    assert [c["holm"]["verdict"] for c in claims] == ["reproduced", "inconclusive", "not reproduced"]


def test_parts_combine_into_one_family():
    """The design's parts (each on its own seeds) -> one claims.json: each claim from the last part that ran
    its target, Holm again over every test of both parts; a later part re-running a target on new seeds replaces it;
    re-run seeds and different designs are refused."""
    def claims(values):   # two sign claims of t1 and one magnitude claim of t2, each seed's values given
        return [verdicts.Claim("t1", "a", "acc", "+1", values[0], smallest_effect=0.5, seeds_planned=3),
                verdicts.Claim("t1", "b", "acc", "+1", values[1], smallest_effect=0.5, seeds_planned=3),
                verdicts.Claim("t2", "c", "len", "18%", values[2], smallest_effect=9.0, seeds_planned=3,
                               kind="magnitude", reference=9.0)]
    none = [None] * 3
    part_a = verdicts.claims_document(claims([[2.0, 2.2, 2.4], [0.1, -0.1, 0.0], none]), ["3", "4", "5"], 60,
                                      ["t1"])
    part_b = verdicts.claims_document(claims([none, none, [30.0, 31.0, 35.0]]), ["11", "12", "13"], 70, ["t2"])
    doc = verdicts.combine_parts([("part_a", part_a), ("part_b", part_b)])
    assert [c["part"] for c in doc["claims"]] == ["part_a", "part_a", "part_b"]
    assert [c["seeds"] for c in doc["claims"]] == [["3", "4", "5"]] * 2 + [["11", "12", "13"]]
    assert [c["per_seed"] for c in doc["claims"]] == [[2.0, 2.2, 2.4], [0.1, -0.1, 0.0], [30.0, 31.0, 35.0]]
    assert doc["targets"] == ["t1", "t2"] and doc["holm_family_size"] == 5
    assert [p["wall_s"] for p in doc["parts"]] == [60, 70]
    # the family is both parts' 5 tests: adjusted as one list, in the order difference tests, equivalence tests
    raw = [c["p_difference"] for c in doc["claims"]] + [c["p_equivalence"] for c in doc["claims"][:2]]
    adjusted = verdicts.holm(raw)
    assert [c["holm"]["p_difference"] for c in doc["claims"]] == adjusted[:3]
    assert [c["holm"]["p_equivalence"] for c in doc["claims"][:2]] == adjusted[3:]
    # each part alone adjusted over its own family: part B's magnitude claim had p = 1 for part A's two claims
    assert part_b["claims"][2]["holm"]["p_difference"] != doc["claims"][2]["holm"]["p_difference"]
    # a target no part ran keeps its entry without numbers
    part_c = verdicts.claims_document(claims([none, none, none]), ["20"], None, [])
    assert verdicts.combine_parts([("part_a", part_a), ("part_c", part_c)])["claims"][2]["n"] == 0
    assert "replace" not in verdicts.claims_table(doc)
    # a later part that ran t1 again, on new seeds, replaces part A's t1 (and says so); on part A's seeds it is refused
    rerun = verdicts.claims_document(claims([[-1.0, -1.5, -2.0], [0.3, 0.2, 0.1], none]), ["14", "15", "16"], 80,
                                     ["t1"])
    doc = verdicts.combine_parts([("part_a", part_a), ("part_b", part_b), ("part_c", rerun)])
    assert [c["part"] for c in doc["claims"]] == ["part_c", "part_c", "part_b"]
    assert doc["claims"][0]["per_seed"] == [-1.0, -1.5, -2.0] and doc["claims"][0]["verdict"] == "not reproduced"
    assert doc["replaced"] == [{"target": "t1", "part": "part_a", "by": "part_c"}] and doc["targets"] == ["t1", "t2"]
    assert verdicts.claims_table(doc).endswith("t1: part_c's seeds replace part_a's "
                                               f"({verdicts.DESIGN}).")
    whole = {**part_a, "targets": ["t1", "t2"]}
    both = verdicts.combine_parts([("part_x", whole), ("part_y", {**rerun, "targets": ["t1", "t2"]})])
    assert verdicts.claims_table(both).endswith(f"|\n\nt1, t2: part_y's seeds replace part_x's ({verdicts.DESIGN}).")
    with pytest.raises(ValueError, match="target t1: part again re-runs seeds 3, 4, 5 of part part_a"):
        verdicts.combine_parts([("part_a", part_a), ("again", part_a)])
    with pytest.raises(ValueError, match="named twice"):
        verdicts.combine_parts([("part_a", part_a), ("part_a", rerun)])
    other = verdicts.claims_document(claims([none] * 3)[:2], ["11"], None, ["t2"])
    with pytest.raises(ValueError, match="test different claims"):
        verdicts.combine_parts([("part_a", part_a), ("other", other)])


def test_seeds_for_power_match_the_textbook_one_sample_t_sizes():
    """The planning reading: a paired t test at 5%, 80% power needs 34 seeds for an effect of half an SD and 10 for
    one SD (the exact noncentral-t sizes, as G*Power's one-sample t test gives them); Holm's stricter level more;
    equivalence counts when the mean is near 0; no SD, or a claim beyond 200 seeds, gives None."""
    st = lambda mean, sd: {"mean": mean, "sd": sd}
    assert verdicts.seeds_for_power(st(0.5, 1.0), 0.1) == 34
    assert verdicts.seeds_for_power(st(-1.0, 1.0), 0.1) == 10
    assert verdicts.seeds_for_power(st(1.0, 1.0), 0.1, alpha=0.05 / 48) > 20
    # magnitude: the distance to M decides; a sign claim at mean 0 is decided by equivalence alone
    assert verdicts.seeds_for_power(st(10.0, 1.0), 0.1, kind="magnitude", reference=9.0) == 10
    assert verdicts.seeds_for_power(st(0.0, 1.0), 1.0) == 10
    assert verdicts.seeds_for_power(st(0.0, 1.0), 0.01) is None and verdicts.seeds_for_power(st(1.0, None), 1) is None
