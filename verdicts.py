"""The pre-registered verdict rule of the paper_demo report (results/paper_demo/design.md): a claim's per-seed
paired differences -> a 95% Student-t interval, one of four verdicts, two p-values from the same t statistic, and
Holm's step-down over the whole family of claims; then a claim's claims.json entry (`Claim`, `claims_document`), the
design's parts put together (`combine_parts`), and what report.py renders from claims.json as written
(`claim_line`, `claims_table`).

Two kinds of claim:
  sign       the paper says a - b is on one side of 0. Verdicts on the 95% interval of the per-seed differences,
             checked in this order:
               "no effect at demo scale"  the interval lies within +/- smallest_effect (equivalence: both one-sided
                                          tests of TOST at the interval's level, 2.5% each);
               "reproduced"               the interval lies entirely on the paper's side of 0;
               "not reproduced"           entirely on the other side;
               "inconclusive"             otherwise.
             Equivalence comes first: an interval on the paper's side but within +/- smallest_effect shows a
             difference smaller than the smallest one that would count as the paper's effect (Lakens et al. 2018's
             "statistically significant but practically equivalent"); calling that "reproduced" would let enough seeds
             turn any negligible difference into a reproduction.
  magnitude  the paper's effect has a size (e.g. NoWait shortens responses by 18%): the tested quantity is that
             size, against the threshold M = the smallest size that still counts as the paper's (design.md):
               "reproduced"      the interval lies entirely above M;
               "not reproduced"  entirely below M (smaller than the paper's effect, whatever its sign);
               "inconclusive"    otherwise.
             The sign claim beside it carries the "no effect" outcome.

p-values: difference p = two-sided t test of the mean against the reference (0, or M); equivalence p =
2 * max of TOST's two one-sided p-values, so that p < 0.05 exactly when the 95% interval excludes the reference /
lies within +/- smallest_effect. Holm (1979): all p-values of the family, m of them, sorted ascending,
p_(i) -> max over j <= i of min(1, (m - j + 1) p_(j)); a hypothesis is rejected when its adjusted p < 0.05. The
Holm verdict is the same rule with "the interval excludes / lies within" replaced by "the adjusted p < 0.05".

No scipy: the t distribution's CDF for an integer df is a finite sum (Abramowitz & Stegun 26.7.3-26.7.4), and the
quantile is found by bisection on it.
"""
import math
import statistics

LEVEL = 0.95
ALPHA = 1 - LEVEL
VERDICTS = ("reproduced", "not reproduced", "no effect at demo scale", "inconclusive")
DESIGN = "results/paper_demo/design.md"
SEEN_SEEDS = ("0", "1", "2")   # design.md was written after seeing these seeds: their verdicts are exploratory


def t_cdf(t, df):
    """P(T <= t) for Student's t with an integer df >= 1 (exact: A&S 26.7.3 for odd df, 26.7.4 for even)."""
    if df < 1 or int(df) != df:
        raise ValueError(f"t_cdf needs an integer df >= 1, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:   # A(t|df) = 2/pi * (theta + sin cos * (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), df - 2 terms
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * c2
            total += term
        a = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    else:        # A(t|df) = sin * (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...), df / 2 terms
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        a = math.sin(theta) * total
    return 0.5 + a / 2 if t >= 0 else 0.5 - a / 2


def t_quantile(q, df):
    """The t such that t_cdf(t, df) = q (0.5 <= q < 1), by bisection to machine precision."""
    if not 0.5 <= q < 1:
        raise ValueError(f"t_quantile needs 0.5 <= q < 1, got {q}")
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return hi


def t975(df):
    """The two-sided 95% quantile t(0.975, df)."""
    return t_quantile(1 - ALPHA / 2, df)


def paired(a, b):
    """Per-seed values of two arms (None or NaN = missing) -> the per-seed differences a - b, in seed order, None
    where a seed lacks either arm, and their statistics: {"per_seed", "diffs" (the present ones), "n", "mean",
    "sd" (sample sd), "se", "half" (t975 * se), "lo", "hi"}; with n < 2 there is no interval (None)."""
    if len(a) != len(b):
        raise ValueError(f"paired: {len(a)} values against {len(b)}")
    per_seed = [x - y if x is not None and y is not None and math.isfinite(x - y) else None for x, y in zip(a, b)]
    return stats_of(per_seed)


def stats_of(per_seed):
    """Per-seed values of the tested quantity (None or not finite = missing) -> the statistics of `paired`."""
    per_seed = [d if d is not None and math.isfinite(d) else None for d in per_seed]
    diffs = [d for d in per_seed if d is not None]
    n = len(diffs)
    out = {"per_seed": list(per_seed), "diffs": diffs, "n": n, "mean": statistics.fmean(diffs) if n else None,
           "sd": None, "se": None, "half": None, "lo": None, "hi": None}
    if n >= 2:
        out["sd"] = statistics.stdev(diffs)
        out["se"] = out["sd"] / math.sqrt(n)
        out["half"] = t975(n - 1) * out["se"]
        out["lo"], out["hi"] = out["mean"] - out["half"], out["mean"] + out["half"]
    return out


def p_values(st, reference, smallest_effect):
    """(difference p, equivalence p) from the t statistic of the mean; (1, 1) without an interval. Equivalence
    is about the difference itself (around 0), the difference test about mean - reference."""
    if st["n"] < 2:
        return 1.0, 1.0
    df, m, se = st["n"] - 1, st["mean"], st["se"]
    if se == 0:   # every seed the same difference: the interval is that point
        return (0.0 if m != reference else 1.0), (0.0 if abs(m) < smallest_effect else 1.0)
    p_diff = 2 * (1 - t_cdf(abs(m - reference) / se, df))
    p_above = 1 - t_cdf((m + smallest_effect) / se, df)   # H0: difference <= -smallest_effect
    p_below = t_cdf((m - smallest_effect) / se, df)       # H0: difference >= +smallest_effect
    return min(1.0, p_diff), min(1.0, 2 * max(p_above, p_below))


def decide(kind, sign, excludes, side, equivalent):
    """The rule itself, for the interval or the Holm-adjusted p-values: excludes = the reference is rejected, side =
    the sign of mean - reference, equivalent = within +/- smallest_effect shown."""
    if kind == "sign" and equivalent:
        return "no effect at demo scale"
    if excludes:
        return "reproduced" if side == sign else "not reproduced"
    return "inconclusive"


def verdict(st, sign, smallest_effect, kind="sign", reference=0.0):
    """-> (verdict, reason) on the 95% interval of st (from `paired` / `stats_of`)."""
    n = st["n"]
    if n < 2:
        return "inconclusive", f"{n} seed(s) with numbers: no interval"
    lo, hi = st["lo"], st["hi"]
    interval = f"95% interval [{lo:+.3g}, {hi:+.3g}] over {n} seeds (t = {t975(n - 1):.2f})"
    excludes = lo > reference or hi < reference
    side = 1 if lo > reference else -1
    equivalent = kind == "sign" and -smallest_effect < lo and hi < smallest_effect
    v = decide(kind, sign, excludes, side, equivalent)
    if v == "no effect at demo scale":
        nonzero = " (it excludes 0, but the difference is smaller than any that counts)" if excludes else ""
        return v, f"{interval} within ±{smallest_effect:g}, the smallest effect of interest{nonzero}"
    what = "0" if kind == "sign" else f"M = {reference:g}, the smallest magnitude that counts"
    if v == "reproduced":
        return v, f"{interval} excludes {what} on the paper's side"
    if v == "not reproduced":
        return v, f"{interval} excludes {what} on the other side: against the paper"
    return v, f"{interval} contains {what}" + (f" and is not within ±{smallest_effect:g}" if kind == "sign" else "")


def seeds_for_power(st, smallest_effect, kind="sign", reference=0.0, alpha=ALPHA, power=0.8, most=200):
    """A planning reading for a next design, taking the observed mean and SD (of `stats_of`) as the truth: the
    fewest seeds n (3..most) at which the verdict is a decision with probability >= power at level alpha, the
    interval excluding the reference, or (sign claims) lying within +/- smallest_effect; None when more than `most`
    or no SD. Normal approximation to the t statistic: P = Phi(distance * sqrt(n) / sd - t(1 - alpha / 2, n - 1)),
    distance = |mean - reference| for the difference test, smallest_effect - |mean| for equivalence."""
    if st["sd"] is None:
        return None
    phi = statistics.NormalDist().cdf
    distances = [abs(st["mean"] - reference)] + ([smallest_effect - abs(st["mean"])] if kind == "sign" else [])
    for n in range(3, most + 1):
        t = t_quantile(1 - alpha / 2, n - 1)
        if st["sd"] == 0 and max(distances) > 0 or \
                st["sd"] > 0 and max(phi(d * math.sqrt(n) / st["sd"] - t) for d in distances) >= power:
            return n
    return None


def holm(p):
    """Holm's step-down adjusted p-values, in the order given."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def holm_verdicts(claims):
    """claims: dicts with kind, paper_sign, mean, reference, p_difference, p_equivalence -> each gets "holm":
    {"p_difference", "p_equivalence" (None for magnitude claims: not tested), "verdict"}; the family is every
    claim's difference test and every sign claim's equivalence test."""
    family = [(i, "p_difference") for i in range(len(claims))]
    family += [(i, "p_equivalence") for i, c in enumerate(claims) if c["kind"] == "sign"]
    adjusted = holm([claims[i][key] for i, key in family])
    for c in claims:
        st = {"mean": c["mean"], "sd": c.get("sd")}   # at Holm's first step, the strictest: alpha / family size
        c["holm"] = {"p_difference": None, "p_equivalence": None, "seeds_for_power": seeds_for_power(
            st, c.get("smallest_effect", 0.0), c["kind"], c["reference"], alpha=ALPHA / len(family))}
    for (i, key), p in zip(family, adjusted):
        claims[i]["holm"][key] = p
    for c in claims:
        h = c["holm"]
        side = 0 if c["mean"] is None else (1 if c["mean"] > c["reference"] else -1)
        equivalent = h["p_equivalence"] is not None and h["p_equivalence"] < ALPHA
        h["verdict"] = decide(c["kind"], c["paper_sign"], h["p_difference"] < ALPHA, side, equivalent)
    return len(family)


# -----------------------------------------------------------------------------
# a claim, its claims.json entry, and what is rendered from claims.json

class Claim:
    """One claim of the design: per seed the tested quantity (a paired difference a - b, or for a magnitude claim
    the effect's size), the paper's side (sign) and value, the smallest effect of interest in the metric's units,
    the seeds the design plans; `built_in` says why the demo task makes it come out as the paper says (it then is
    no evidence of the paper's mechanism). For a magnitude claim `reference` is the threshold M."""

    def __init__(self, target, text, metric, paper, per_seed, *, smallest_effect, seeds_planned, sign=1,
                 paper_value=None, unit="points", kind="sign", reference=0.0, built_in=""):
        self.target, self.text, self.metric, self.paper, self.per_seed = target, text, metric, paper, per_seed
        self.smallest_effect, self.seeds_planned, self.sign, self.paper_value = smallest_effect, seeds_planned, sign, \
            paper_value
        self.unit, self.kind, self.reference, self.built_in = unit, kind, reference, built_in

    def record(self, seeds):
        """-> the claim's claims.json entry (Holm's part is added over the whole family)."""
        st = stats_of(self.per_seed)
        v, reason = verdict(st, self.sign, self.smallest_effect, self.kind, self.reference)
        p_diff, p_eq = p_values(st, self.reference, self.smallest_effect)
        return {"target": self.target, "claim": self.text, "metric": self.metric, "unit": self.unit,
                "kind": self.kind, "paper": self.paper, "paper_sign": self.sign, "paper_value": self.paper_value,
                "reference": self.reference, "smallest_effect": self.smallest_effect,
                "seeds_planned": self.seeds_planned, "built_in": self.built_in, "seeds": list(seeds),
                "per_seed": st["per_seed"], "n": st["n"], "mean": st["mean"], "sd": st["sd"],
                "ci95": None if st["lo"] is None else [st["lo"], st["hi"]],
                "p_difference": p_diff, "p_equivalence": p_eq if self.kind == "sign" else None,
                "verdict": v, "reason": reason,
                "seeds_for_power": seeds_for_power(st, self.smallest_effect, self.kind, self.reference),
                "confirmatory": st["n"] >= self.seeds_planned and not set(seeds) & set(SEEN_SEEDS)}


def claims_document(claims, seeds, wall_s, targets):
    """Claims, the run's seed names and the targets it ran -> claims.json's content: the run, the design, every
    claim with its verdicts (Holm over the family; a claim of a target not run has no numbers, p = 1)."""
    records = [c.record(seeds) for c in claims]
    family = holm_verdicts(records)
    return {"design": DESIGN, "seeds": list(seeds), "targets": list(targets), "wall_s": wall_s, "level": LEVEL,
            "holm_family_size": family, "claims": records}


def combine_parts(parts):
    """[(name, claims.json content)] of the design's parts, in the order they ran, each on its own seeds -> one
    claims.json content: each claim's entry from the last part that ran its target (a later part replaces an earlier
    one's target when design.md re-ran it on new seeds: "replaced" names both), Holm again over the whole family (the
    design's confirmatory verdict is over all 48 tests, whichever part measured them)."""
    ran, replaced, design = {}, [], [(c["target"], c["claim"]) for c in parts[0][1]["claims"]]
    docs = dict(parts)
    if len(docs) != len(parts):
        raise ValueError(f"a part is named twice in {[name for name, _ in parts]}")
    for name, doc in parts:
        if [(c["target"], c["claim"]) for c in doc["claims"]] != design:
            raise ValueError(f"parts {parts[0][0]} and {name} test different claims: not one design")
        for t in doc["targets"]:
            if t in ran:
                shared = sorted(set(docs[ran[t]]["seeds"]) & set(doc["seeds"]))
                if shared:
                    raise ValueError(f"target {t}: part {name} re-runs seeds {', '.join(shared)} of part {ran[t]}; "
                                     "a part that replaces another runs new seeds")
                replaced.append({"target": t, "part": ran[t], "by": name})
            ran[t] = name
    records = []
    for i, claim in enumerate(parts[0][1]["claims"]):
        name = ran.get(claim["target"])   # None: no part ran it, and every part has it without numbers
        records.append({**(docs[name]["claims"][i] if name else claim), "part": name})
    family = holm_verdicts(records)
    return {"design": DESIGN, "parts": [{"part": name, "seeds": doc["seeds"], "targets": doc["targets"],
                                         "wall_s": doc["wall_s"]} for name, doc in parts],
            "targets": list(ran), "replaced": replaced, "level": LEVEL, "holm_family_size": family,
            "claims": records}


def num(v):
    """A signed number for the report: 2 decimals, or 2 significant digits when smaller than 0.1."""
    return "-" if v is None else f"{v:+.2f}" if abs(v) >= 0.1 or v == 0 else f"{v:+.2g}"


def claim_line(c):
    """A claim's line in its section, from its claims.json entry."""
    per = ", ".join("-" if d is None else num(d) for d in c["per_seed"])
    what = "size" if c["kind"] == "magnitude" else "paired difference"
    test = (f"reproduced if at least M = {c['reference']:g}" if c["kind"] == "magnitude"
            else f"smallest effect of interest ±{c['smallest_effect']:g}")
    holm = c["holm"]
    p = ", ".join(f"{k} {holm[f'p_{k}']:.3g}" for k in ("difference", "equivalence") if holm[f"p_{k}"] is not None)
    notes = []
    if c["built_in"]:
        notes.append(f"Built in, not evidence of the mechanism: {c['built_in']}.")
    if c["sd"] is not None:
        plan = lambda n: "more than 200" if n is None else n
        notes.append(f"Seeds for an 80% chance of a decision if this mean and SD were the truth: "
                     f"{plan(c['seeds_for_power'])}, {plan(c['holm']['seeds_for_power'])} under Holm.")
    if not c["confirmatory"]:
        notes.append(f"Not confirmatory (design: {c['seeds_planned']} seeds, none of {', '.join(SEEN_SEEDS)}).")
    return (f"- {c['claim']}: {c['metric']}, {what} ({test}; paper: {c['paper']}). Ours: mean {num(c['mean'])} "
            f"{c['unit']}, per seed [{per}]. **Verdict: {c['verdict']}** ({c['reason']}). Holm-adjusted: "
            f"**{c['holm']['verdict']}** (adjusted p: {p})." + "".join(" " + n for n in notes))


def claims_table(doc):
    """The summary table (report.md's head, summary.md, the README block), one row per claim of claims.json."""
    lines = ["| target | claim | paper | smallest effect | ours: mean [95% interval] | verdict | Holm-adjusted |",
             "|---|---|---|---|---|---|---|"]
    for c in doc["claims"]:
        ours = num(c["mean"]) + ("" if c["ci95"] is None else f" [{num(c['ci95'][0])}, {num(c['ci95'][1])}]")
        ours = ours if c["target"] in doc["targets"] else "not run"
        test = f"M = {c['reference']:g}" if c["kind"] == "magnitude" else f"±{c['smallest_effect']:g}"
        text = c["claim"] + (" (built in)" if c["built_in"] else "")
        lines.append(f"| {c['target']} | {text} | {c['paper']} | {test} {c['unit']} | {ours} (n = {c['n']}) | "
                     f"{c['verdict']} | {c['holm']['verdict']} |")
    replaced = {}   # (earlier part, later part) -> the targets the later one re-ran
    for r in doc.get("replaced", []):
        replaced.setdefault((r["part"], r["by"]), []).append(r["target"])
    lines += [f"\n{', '.join(targets)}: {by}'s seeds replace {part}'s ({DESIGN})."
              for (part, by), targets in replaced.items()]
    return "\n".join(lines)
