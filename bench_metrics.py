"""
Each Table 1 benchmark's reported number from per-item verdicts. Most report plain accuracy; three group their
rows first, as VLMEvalKit (SkyworkAI/Skywork-R1V @ b806cef, eval/vlmevalkit/vlmeval/dataset/...) does:

  MMBench (CircularEval)  a question counts only if every rotation of its options is right;
                          rotations share index % 1e6 (utils/multiple_choice.py mcq_circular_eval L478-479)
  HallusionBench          aAcc (rows), fAcc (figures), qAcc (questions) (utils/yorn.py Hallusion_rating L91-120)
  WeMath                  strict and loose scores over 2- and 3-step problems (utils/wemath.py L13-213)

eval.py reports the metric's mean and std over the k sample runs (avg@k): metric_per_run, then mean_std; for
plain accuracy avg_at_k.
"""

from collections import defaultdict

import numpy as np

METRIC_NAMES = {"circular": "CircularEval acc.", "hallusion": "mean(aAcc, fAcc, qAcc)",
                "wemath": "Score (Strict)", "accuracy": "acc."}


def metric_kind(benchmark):
    """The metric family of a benchmark (file stem), by VLMEvalKit's own name tests (image_mcq.py L226:
    'mmbench' in the lower-cased name -> circular; image_yorn.py L93 'Hallusion'; WeMath by class)."""
    name = benchmark.lower()
    if "mmbench" in name or "circular" in name:
        return "circular"
    if "hallusion" in name:
        return "hallusion"
    if name.startswith("wemath"):
        return "wemath"
    return "accuracy"


def benchmark_metric(kind, items, correct):
    """items: [EvalItem]; correct: {id: bool} for one sample run -> {"score": the reported fraction, parts}."""
    missing = [it.id for it in items if it.id not in correct]
    if missing:
        raise ValueError(f"benchmark_metric: {len(missing)} items without a verdict, e.g. {missing[:3]}")
    plain = sum(bool(correct[it.id]) for it in items) / len(items)
    if kind == "accuracy":
        return {"score": plain}
    if kind == "circular":
        return {**circular_eval(items, correct), "plain": plain}
    if kind == "hallusion":
        return hallusion_scores(items, correct)
    if kind == "wemath":
        return {**wemath_scores(items, correct), "plain": plain}
    raise ValueError(f"unknown metric kind {kind!r}")


def groups_by(items, key):
    groups = defaultdict(list)
    for it in items:
        groups[key(it)].append(it)
    return groups


def index_of(item):
    """The TSV `index` (kept in extra; the item id when the file has no `id` column)."""
    raw = item.extra.get("index", item.id)
    try:
        return int(float(raw))
    except (TypeError, ValueError):
        raise ValueError(f"{item.benchmark} {item.id}: index {raw!r} is not a number (CircularEval groups "
                         f"rotations by index % 1e6)") from None


def circular_eval(items, correct):
    """A group (index % 1e6, VLMEvalKit's g_index) is right when all its rotations are (eval_circular_group)."""
    groups = groups_by(items, lambda it: index_of(it) % 1_000_000)
    hits = [all(correct[it.id] for it in group) for group in groups.values()]
    return {"score": sum(hits) / len(hits), "groups": len(hits)}


def hallusion_key(item):
    """(l2-category, set_id, figure_id, question_id): VLMEvalKit splits `index` on '_' and takes fields 3, 4, 5."""
    parts = str(item.extra.get("index", item.id)).split("_")
    if len(parts) < 6:
        raise ValueError(f"{item.benchmark} {item.id}: index {parts!r} lacks the _set_figure_question fields "
                         f"HallusionBench groups by")
    return item.extra.get("l2-category", ""), parts[3], parts[4], parts[5]


def hallusion_scores(items, correct):
    """aAcc = rows right; fAcc = (l2-category, set, figure) groups all right; qAcc = (l2-category, set,
    question) groups all right. Table 1's figure is their mean (OpenCompass's HallusionBench "Overall"; the
    paper's other columns, e.g. Qwen2.5-VL-72B 55.2 and GPT-4o 56.2, are those models' OpenCompass numbers)."""
    keys = {it.id: hallusion_key(it) for it in items}
    a_acc = sum(bool(correct[it.id]) for it in items) / len(items)
    figures = groups_by(items, lambda it: (keys[it.id][0], keys[it.id][1], keys[it.id][2]))
    questions = groups_by(items, lambda it: (keys[it.id][0], keys[it.id][1], keys[it.id][3]))
    f_acc = sum(all(correct[it.id] for it in g) for g in figures.values()) / len(figures)
    q_acc = sum(all(correct[it.id] for it in g) for g in questions.values()) / len(questions)
    return {"score": (a_acc + f_acc + q_acc) / 3, "aAcc": a_acc, "fAcc": f_acc, "qAcc": q_acc}


def wemath_scores(items, correct):
    """WeMath's four dimensions over its multi-step problems: rows with `key` "Nsteps_i" (step i) and
    "Nsteps_multi" (the whole problem) share an `ID`. Per problem (steps s_i, whole problem m):
        IK  (insufficient knowledge)      some s_i wrong, m wrong
        IG  (inadequate generalization)   all s_i right, m wrong
        CM  (complete mastery)            strict: all s_i right, m right;  loose: some s_i right, m right
        RM  (rote memorization)           strict: some s_i wrong, m right; loose: all s_i wrong, m right
    Score = (N - 0.5 IG - RM - IK) / N, strict and loose (wemath.py L166-185, where N is the constant 525)."""
    problems = defaultdict(dict)
    for it in items:
        key = str(it.extra.get("key", ""))
        if "steps" not in key:
            continue   # one-step rows feed WeMath's accuracy tables, not the four dimensions
        pid = it.extra.get("ID", it.extra.get("id"))
        if pid is None:
            raise ValueError(f"{it.benchmark} {it.id}: key {key!r} but no ID column to group the steps by")
        steps, part = key.split("steps_", 1)
        problems[(steps, str(pid))][part] = bool(correct[it.id])
    if not problems:
        raise ValueError("WeMath: no rows with a key like '2steps_1' / '2steps_multi'")
    counts = dict.fromkeys(["IK", "IG", "CM_strict", "CM_loose", "RM_strict", "RM_loose"], 0)
    for (steps, pid), parts in problems.items():
        need = [str(i) for i in range(1, int(steps) + 1)] + ["multi"]
        if sorted(parts) != sorted(need):
            raise ValueError(f"WeMath problem ID {pid} ({steps} steps): rows {sorted(parts)}, expected {need}")
        step_ok = [parts[str(i)] for i in range(1, int(steps) + 1)]
        whole = parts["multi"]
        counts["IK"] += (not all(step_ok)) and not whole
        counts["IG"] += all(step_ok) and not whole
        counts["CM_strict"] += all(step_ok) and whole
        counts["CM_loose"] += any(step_ok) and whole
        counts["RM_strict"] += (not all(step_ok)) and whole
        counts["RM_loose"] += (not any(step_ok)) and whole
    n = len(problems)
    strict = (n - 0.5 * counts["IG"] - counts["RM_strict"] - counts["IK"]) / n
    loose = (n - 0.5 * counts["IG"] - counts["RM_loose"] - counts["IK"]) / n
    return {"score": strict, "strict": strict, "loose": loose, "problems": n, **counts}


def metric_per_run(kind, items, by_item):
    """by_item {id: [bool] * k} -> (the metric of each of the k sample runs, every other numeric part averaged
    over the runs)."""
    k = len(next(iter(by_item.values())))
    runs = [benchmark_metric(kind, items, {i: v[j] for i, v in by_item.items()}) for j in range(k)]
    return [r["score"] for r in runs], {p: sum(r[p] for r in runs) / k for p in runs[0] if p != "score"}


def avg_at_k(correct_by_item):
    """{id: [bool]*k} -> accuracy of each of the k runs, their mean (avg@k) and sample std (ddof=1; 0 for k=1)."""
    if not correct_by_item:
        raise ValueError("avg@k of nothing: no scored items")
    ks = {len(v) for v in correct_by_item.values()}
    if len(ks) != 1:
        raise ValueError(f"items have different numbers of samples {sorted(ks)}; finish generation first")
    k = ks.pop()
    per_run = [float(np.mean([v[j] for v in correct_by_item.values()])) for j in range(k)]
    return {**mean_std(per_run), "k": k, "n_items": len(correct_by_item)}


def mean_std(per_run):
    """The k runs' scores -> their mean and sample std (ddof=1; 0 for k=1)."""
    std = float(np.std(per_run, ddof=1)) if len(per_run) > 1 else 0.0
    return {"accuracy": float(np.mean(per_run)), "std": std, "per_run": [float(x) for x in per_run]}
