"""
GRPO's step metrics (grpo.py): per-rank sums gathered while the step runs, all-reduced once as one
vector (every rank lists the same keys), then divided into the logged metrics.
  reward/*, response/*   every rollout sampled this step (groups dropped by dynamic sampling too)
  train/*, entropy/*     the policy update (entropy at the first visit of each sample, §5.1)
  data/*, time/*, perf/* given by the loop
"""
import math
import sys

import torch

import rewards
import train_utils as tu
from token_entropy import HIGH_ENTROPY_THRESHOLD, critical_mask, entropy_metrics

# the LLM verifier's calls and their outcomes (rewards.RewardStats), and the ranks whose verifier is in its
# cooldown at the step's end: reward/verifier_* in every step's metrics, so an outage shows where it happens
VERIFIER_SUMS = ("verifier_calls", "verifier_yes", "verifier_fallbacks", "verifier_timeouts", "verifier_failures",
                 "verifier_skipped")
SAMPLE_SUMS = ("groups", "zero_var_groups", "rollouts", "reward", "reward_sq", "accuracy",
               "format", "response_tokens", "prompt_tokens", "truncated", "blind") + VERIFIER_SUMS + \
    ("verifier_circuit_open",)
TRAIN_SUMS = ("loss", "clipped", "approx_kl", "kl_ref", "tokens", "ent_sum", "ent_high",
              "ent_tokens", "crit_sum", "crit_count", "lp_diff", "lp_diff_tokens", "groups_trained")
# and, not all-reduced: the seconds spent sampling and scoring, the rounds, the longest response
SUMS = SAMPLE_SUMS + TRAIN_SUMS + ("rollout_s", "reward_s", "rounds", "response_max")
NO_SIGNAL_WARNING = 10   # steps in a row without a learning signal -> a warning on stderr


def add_sample_sums(sums, groups, blind_phrases):
    """Sums over every sampled rollout (dropped groups included) for reward/*, response/*."""
    for group in groups:
        sums["groups"] += 1
        sums["zero_var_groups"] += len({s["reward"] for s in group}) == 1
        for s in group:
            for key in ("reward", "accuracy", "format", "truncated"):
                sums[key] += s[key]
            sums["rollouts"] += 1
            sums["reward_sq"] += s["reward"] ** 2
            sums["response_tokens"] += len(s["response_ids"])
            sums["prompt_tokens"] += len(s["prompt_ids"])
            sums["blind"] += rewards.claims_unseen_image(s["text"], blind_phrases)   # in the thinking
            sums["response_max"] = max(sums["response_max"], len(s["response_ids"]))


def add_train_sums(sums, micro, forward, critical_seqs, high_threshold=HIGH_ENTROPY_THRESHOLD):
    """At the first visit of each sample: the entropy of pi (§5.1) from the training forward
    (logp, ent, mask) itself, and the train/inference mismatch of the sampled tokens' log-probs.
    high_threshold: grpo.py passes Fig. 10's 6.8 nats scaled to the vocabulary."""
    logp, ent, mask = forward
    response = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
    response[mask] = torch.tensor([t for s in micro for t in s["response_ids"]], device=mask.device)
    em = entropy_metrics(ent, mask, critical_mask(response, critical_seqs), high_threshold)
    sums["ent_sum"] += em["mean_token_entropy"] * em["num_tokens"]
    sums["ent_high"] += em["high_entropy_frac"] * em["num_tokens"]
    sums["ent_tokens"] += em["num_tokens"]
    if em["critical_count"]:
        sums["crit_sum"] += em["critical_entropy_mean"] * em["critical_count"]
        sums["crit_count"] += em["critical_count"]
    for i, s in enumerate(micro):
        if len(s["rollout_logprobs"]) == len(s["response_ids"]):
            sampled = torch.tensor(s["rollout_logprobs"], device=logp.device)
            sums["lp_diff"] += float((logp[i, :len(sampled)].detach() - sampled).abs().sum())
            sums["lp_diff_tokens"] += len(sampled)


def step_metrics(sums, last, dist, info):
    """This rank's sums (all-reduced here), the last optimizer step's values and `info` (data/*,
    time/*) -> the step's metrics."""
    keys = SAMPLE_SUMS + TRAIN_SUMS
    local = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=dist.device)
    g = dict(zip(keys, tu.all_reduce_sum(local, dist).tolist()))
    div = lambda a, b: a / b if b else float("nan")
    n, mean, tokens = g["rollouts"], g["reward"] / g["rollouts"], g["tokens"]
    tokens_per_s = (g["response_tokens"] + g["prompt_tokens"]) / info["time/step"]
    return {
        "reward/mean": mean, "reward/std": math.sqrt(max(0.0, g["reward_sq"] / n - mean ** 2)),
        "reward/accuracy": g["accuracy"] / n, "reward/format": g["format"] / n,
        "reward/zero_var_groups": g["zero_var_groups"] / g["groups"],
        **{f"reward/{k}": g[k] for k in VERIFIER_SUMS + ("verifier_circuit_open",)},
        "response/len_mean": g["response_tokens"] / n,
        "response/len_max": tu.all_reduce_max(float(sums["response_max"]), dist),
        "response/truncated": g["truncated"] / n, "response/blind_phrase_rate": g["blind"] / n,
        "train/loss": g["loss"], "train/clip_frac": div(g["clipped"], tokens),
        "train/approx_kl": div(g["approx_kl"], tokens), "train/kl_ref": div(g["kl_ref"], tokens),
        "train/grad_norm": last["grad_norm"], "train/lr": last["lr"],
        "train/skipped_updates": last["skipped"],
        "train/rollout_logprob_diff": div(g["lp_diff"], g["lp_diff_tokens"]),
        "entropy/mean": div(g["ent_sum"], g["ent_tokens"]),
        "entropy/high_frac": div(g["ent_high"], g["ent_tokens"]),
        "entropy/critical": div(g["crit_sum"], g["crit_count"]),
        "entropy/critical_count": g["crit_count"],
        **{k: v for k, v in info.items() if k.startswith("data/")},
        "data/sampling_rounds": sums["rounds"], "data/groups_trained": g["groups_trained"],
        **{k: v for k, v in info.items() if k.startswith("time/")},
        "perf/tokens_per_s": tokens_per_s,
        "perf/tokens_per_s_per_rank": tokens_per_s / dist.world_size,
    }


def count_no_signal(metrics, counts, step, out_dir, is_main):
    """counts [all, in a row] of the steps without a learning signal, this step added; the total
    is metrics["train/no_signal_steps"]. An arm that cannot learn says so loudly: when every
    group's rewards are equal, eq. 6's advantages are all 0 and so is the update (e.g. GRPO from a
    model that never writes the rewarded format). A step whose update was skipped (NaN/inf grad norm) learned
    nothing either."""
    dead = metrics["reward/zero_var_groups"] == 1.0 or metrics["train/grad_norm"] == 0.0 or \
        metrics["train/skipped_updates"] > 0
    counts[:] = counts[0] + dead, (counts[1] + 1) * dead
    if counts[1] == NO_SIGNAL_WARNING and is_main:
        print(f"WARNING: {out_dir}: no learning signal for {counts[1]} steps in a row "
              f"(steps {step + 2 - counts[1]}-{step + 1}): every group's rewards are equal "
              f"(reward/mean {metrics['reward/mean']:.3f}) or the gradient is 0",
              file=sys.stderr, flush=True)
    metrics["train/no_signal_steps"] = counts[0]
