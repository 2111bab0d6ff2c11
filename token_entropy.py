"""
The entropy measurements of the paper's §5.1 (Fig. 5) and §6.5 (Fig. 10) over per-token entropies (logprobs.py
computes them, with its alignment convention: entropy[t] is that of the step that sampled token t):

  1. thresholds  HIGH_ENTROPY_THRESHOLD (6.8 nats) and high_entropy_threshold, scaled to a vocabulary
  2. critical    critical_token_sequences / critical_mask / critical_positions ("Wait", "Alternatively", ...)
  3. metrics     entropy_metrics: critical-token entropy, mean token entropy, share of H > 6.8, histogram

GRPO logs them at every step (grpo_metrics.py); entropy.py's checkpoint selection scores checkpoints with them and
plots Figs. 5 and 10. Tensors in, numbers out: no model and no plotting here, so a training process imports
neither matplotlib nor the scoring CLI.
"""
import math

import torch

# -----------------------------------------------------------------------------
# 1. thresholds, and the words the paper counts as critical

DEFAULT_CRITICAL_WORDS = ("Wait", "Alternatively", "Hmm", "But wait", "Let me check", "However")
HIGH_ENTROPY_THRESHOLD = 6.8  # §6.5 / Fig. 10 (right): share of tokens with H > 6.8 nats, for Qwen's vocabulary
PAPER_VOCAB_SIZE = 151_674    # R1V3-38B's (Qwen2.5) vocabulary: log(151,674) = 11.93 nats is its largest entropy


def high_entropy_threshold(vocab_size):
    """6.8 nats scaled to a vocabulary of vocab_size tokens: the same share (57%) of the largest possible entropy,
    6.8 * log(V) / log(151,674). A 587-token demo vocabulary tops out at 6.38 nats, below 6.8 itself; scaled: 3.63."""
    return HIGH_ENTROPY_THRESHOLD * math.log(vocab_size) / math.log(PAPER_VOCAB_SIZE)

# -----------------------------------------------------------------------------
# 2. critical tokens: where the model starts to reason (§5.1)


def critical_token_sequences(tokenizer, words=DEFAULT_CRITICAL_WORDS):
    """Token-id sequences that spell a critical word in running text, for any tokenizer.

    Variants per word: as given, Capitalised, lowercased first letter; each with no prefix, a leading space and
    a leading newline. When the prefix becomes its own token(s) ("\\n" + "Wait" -> ["\\n", "Wait"]) it is
    stripped, so sequence[0] is always the token where the word starts; when the tokenizer merges it
    (" Wait" -> ["ĠWait"]) the merged token is that token. Multi-token words ("But wait", or "Alternatively" in
    a small vocabulary) keep the full sequence. Returns sorted, de-duplicated lists of ids."""
    sequences = set()
    for word in words:
        if not word.strip():
            raise ValueError(f"critical words must be non-empty, got {word!r} in {list(words)}")
        for cased in {word, word[0].upper() + word[1:], word[0].lower() + word[1:]}:
            for prefix in ("", " ", "\n"):
                ids = tokenizer.encode(prefix + cased, add_special_tokens=False)
                prefix_ids = tokenizer.encode(prefix, add_special_tokens=False) if prefix else []
                if prefix_ids and ids[:len(prefix_ids)] == prefix_ids:
                    ids = ids[len(prefix_ids):]
                if ids:
                    sequences.add(tuple(ids))
    return sorted(list(s) for s in sequences)


def critical_mask(token_ids, sequences):
    """token_ids [..., T] (tensor or nested lists) -> bool [..., T], True where a critical word starts.

    Position t is True when a sequence matches token_ids[..., t:t+k]; with the alignment convention that is
    the position whose distribution emitted the word's first token. Longer phrases win: the " wait" inside a
    "But wait" is not a second start. Exact id matching, so a sequence also matches inside a longer word whose
    tokens begin with it ("Wait" + "ing"); with Qwen2.5's vocabulary those words are mostly single tokens of
    their own. Vectorised over the batch: a few elementwise ops per sequence, cheap enough for every GRPO step."""
    ids = torch.as_tensor(token_ids)
    T = ids.shape[-1]
    starts = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
    covered = torch.zeros_like(starts)
    for seq in sorted(sequences, key=len, reverse=True):
        k = len(seq)
        if k == 0 or k > T:
            continue
        n = T - k + 1  # candidate start positions
        match = ~covered[..., :n]
        for j, tok in enumerate(seq):
            match = match & (ids[..., j:j + n] == tok)
        starts[..., :n] |= match
        for j in range(k):
            covered[..., j:j + n] |= match
    return starts


def critical_positions(token_ids, sequences):
    """1-D response token ids (list or tensor) -> sorted indices t where a critical word starts (see critical_mask);
    entropy[t] is then the entropy of the step that wrote it."""
    ids = torch.as_tensor(token_ids)
    if ids.dim() != 1:
        raise ValueError(f"critical_positions wants one 1-D response, got shape {list(ids.shape)}; "
                         f"use critical_mask for batches")
    return critical_mask(ids, sequences).nonzero()[:, 0].tolist()

# -----------------------------------------------------------------------------
# 3. metrics per sample and per batch


def entropy_metrics(entropy, mask=None, critical=None, high_threshold=HIGH_ENTROPY_THRESHOLD, bins=48,
                    hist_max=12.0):
    """entropy [B, T] (or [T]) per response token; mask [B, T] True on real response tokens (default all);
    critical [B, T] True at critical-word starts (critical_mask). Returns plain Python numbers:

      critical_entropy_mean  mean entropy at critical positions (§5.1, Fig. 5); nan when there are none
      critical_count         number of critical positions
      mean_token_entropy     mean over all response tokens (Fig. 10 left)
      high_entropy_frac      share of response tokens with entropy > high_threshold (Fig. 10 right)
      num_tokens
      per_sample             {same keys: list of B values} (token means within each response)
      histogram              {"edges": bins+1 floats on [0, hist_max], "counts": bins ints}; values above
                             hist_max land in the last bin, so the counts sum to num_tokens
    Batch numbers are token-weighted (every token counts once, whatever its response's length)."""
    ent = entropy.detach().float()
    mask = torch.ones_like(ent, dtype=torch.bool) if mask is None else torch.as_tensor(mask, device=ent.device)
    critical = torch.zeros_like(mask) if critical is None else torch.as_tensor(critical, device=ent.device)
    if mask.shape != ent.shape or critical.shape != ent.shape:
        raise ValueError(f"entropy {list(ent.shape)}, mask {list(mask.shape)} and critical "
                         f"{list(critical.shape)} must have the same shape")
    if ent.dim() == 1:
        ent, mask, critical = ent[None], mask[None], critical[None]
    mask = mask.bool()
    critical = critical.bool() & mask
    ent = ent.masked_fill(~mask, 0.0)  # padding may hold anything, nan included
    high = (ent > high_threshold) & mask
    per_sample = torch.stack([mask.sum(-1), critical.sum(-1), ent.sum(-1),
                              (ent * critical).sum(-1), high.sum(-1)], dim=-1).double()  # [B, 5]
    n_tok, n_crit, ent_sum, crit_sum, n_high = per_sample.unbind(-1)
    totals = per_sample.sum(0).tolist()
    hist = torch.histc(ent[mask].clamp(0.0, hist_max), bins=bins, min=0.0, max=hist_max)

    def div(a, b):
        return a / b if b else float("nan")

    return {
        "critical_entropy_mean": div(totals[3], totals[1]),
        "critical_count": int(totals[1]),
        "mean_token_entropy": div(totals[2], totals[0]),
        "high_entropy_frac": div(totals[4], totals[0]),
        "num_tokens": int(totals[0]),
        "per_sample": {
            "critical_entropy_mean": (crit_sum / n_crit).tolist(),  # 0/0 = nan for responses without one
            "critical_count": n_crit.long().tolist(),
            "mean_token_entropy": (ent_sum / n_tok).tolist(),
            "high_entropy_frac": (n_high / n_tok).tolist(),
            "num_tokens": n_tok.long().tolist(),
        },
        "histogram": {"edges": torch.linspace(0.0, hist_max, bins + 1).tolist(), "counts": hist.long().tolist()},
    }
