"""
Token entropy, critical-token entropy (paper §5.1, Fig. 5) and entropy-based checkpoint selection (§6.5, Fig. 10).

  1. math        token_logprobs_and_entropy (from hidden states + lm_head, chunked, optional grad)
                 logprobs_and_entropy_from_logits (when the logits already exist)
  2. critical    critical_token_sequences / critical_mask / critical_positions ("Wait", "Alternatively", ...)
  3. metrics     entropy_metrics: critical-token entropy, mean token entropy, share of H > 6.8, histogram
  4. CLI         python entropy.py --checkpoints DIR... --data VAL.jsonl [--generations FILE]
                                   [--accuracies SUMMARY...] --out OUT_DIR
                 samples (or reads) responses, scores them by a teacher-forced forward, ranks the checkpoints by
                 critical-token entropy, correlates it with accuracy, writes entropy_table.json + entropy.png.

Alignment convention, used by every per-token tensor in this file:
  for a response y_0..y_{L-1} that follows a prompt x_0..x_{P-1}, index t (logprobs[t], entropy[t],
  critical mask[t]) describes the distribution that SAMPLED y_t, i.e. p(. | x, y_<t). A causal LM run on
  input_ids = x + y produces that distribution at input position P + t - 1, so

      hidden = model(input_ids, return_hidden=True)[0]          # [P+L, D], final-normed
      lm_head = model.language_model.get_output_embeddings()
      logp, ent = token_logprobs_and_entropy(hidden[P - 1:P + L - 1], lm_head.weight, y)

  A critical word whose first token is y_t is measured at ent[t]: the uncertainty of the step that chose to
  write it (the paper's "entropy at the positions where the model begins reasoning").

"""
import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib
import torch
import torch.nn.functional as F

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

import configurator
import data
import model
import sampling
import train_utils as tu

DEFAULT_CRITICAL_WORDS = ("Wait", "Alternatively", "Hmm", "But wait", "Let me check", "However")
HIGH_ENTROPY_THRESHOLD = 6.8  # §6.5 / Fig. 10 (right): share of tokens with H > 6.8 nats, for Qwen's vocabulary
PAPER_VOCAB_SIZE = 151_674    # R1V3-38B's (Qwen2.5) vocabulary: log(151,674) = 11.93 nats is its largest entropy


def high_entropy_threshold(vocab_size):
    """6.8 nats scaled to a vocabulary of vocab_size tokens: the same share (57%) of the largest possible entropy,
    6.8 * log(V) / log(151,674). A 587-token demo vocabulary tops out at 6.38 nats, below 6.8 itself; scaled: 3.63."""
    return HIGH_ENTROPY_THRESHOLD * math.log(vocab_size) / math.log(PAPER_VOCAB_SIZE)
FP32_MIN = torch.finfo(torch.float32).min

# -----------------------------------------------------------------------------
# config of the checkpoint-selection CLI


@dataclass
class EntropyConfig:
    checkpoints: list = field(default_factory=list)  # checkpoint dirs (model.py format, tokenizer inside)
    data: str = ""                   # validation records (data.read_records): prompts and images
    generations: str = ""            # JSONL of existing responses; empty -> sample them with sampling.generate
    accuracies: list = field(default_factory=list)  # one summary.json (or dir holding one) per checkpoint
    out: str = "out/entropy"
    num_prompts: int = 32            # validation records used (0 = all)
    samples_per_prompt: int = 1
    max_new_tokens: int = 1024
    temperature: float = 1.0         # sampling temperature; entropy is always measured at T = 1
    top_p: float = 1.0
    batch_size: int = 8              # prompts per generate() call
    mode: Literal["think", "nothink"] = "think"   # prompt mode (model.build_prompt)
    words: list = field(default_factory=lambda: list(DEFAULT_CRITICAL_WORDS))
    high_threshold: float = 0.0      # 0: 6.8 nats scaled to the checkpoint's vocabulary (high_entropy_threshold)
    hist_bins: int = 48
    hist_max: float = 12.0           # log(151,674) = 11.93: the largest entropy the 38B vocabulary allows
    chunk_size: int = 512
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"   # bfloat16 on GPU
    device: str = "cpu"
    seed: int = 0

# -----------------------------------------------------------------------------
# 1. log-probs and entropy, chunked over positions, fp32 per chunk
#
# A [N, V] fp32 tensor for N = 8192 response tokens and V = 151,674 is 5 GB, and a naive log_softmax +
# entropy makes several of them. Here each chunk of C rows costs two [C, V] fp32 buffers (the logits and
# their exponentials), and the backward recomputes the chunk instead of storing it.


def _chunk_logits(inputs, weight, rows, temperature):
    """Fresh fp32 [C, V] logits / T of a slice of rows (fresh, so it may be overwritten in place).
    inputs are hidden states [N, D] with weight [V, D], or logits [N, V] when weight is None."""
    if weight is None:
        z = inputs[rows].to(torch.float32, copy=True)
    else:
        z = F.linear(inputs[rows], weight).float()  # the matmul in the model dtype, as lm_head does it
    if temperature != 1.0:
        z.div_(temperature)
    return z


def _chunk_logprob_entropy(z, targets):
    """z [C, V] fp32 (overwritten), targets [C] -> log p(target) [C], entropy [C], logsumexp [C]."""
    m = z.amax(-1, keepdim=True)
    z.sub_(m)                      # shift by the row max so exp cannot overflow; H and log p are shift-invariant
    p = z.exp()                    # unnormalised softmax: the chunk's second and last [C, V] buffer
    s = p.sum(-1)
    log_s = s.log()
    logp = z.gather(-1, targets[:, None])[:, 0] - log_s
    # eq.: H = logsumexp(z) - sum_v softmax(z)_v * z_v ; the product overwrites p, nothing else is allocated.
    # A banned token's -inf logit is clamped first: its p is exactly 0, and 0 * FP32_MIN = 0 where 0 * -inf = nan.
    entropy = log_s - p.mul_(z.clamp_(min=FP32_MIN)).sum(-1) / s
    return logp, entropy, m[:, 0] + log_s


def _check_inputs(inputs, weight, targets, chunk_size):
    if inputs.dim() != 2:
        raise ValueError(f"expected 2-D {'logits [N,V]' if weight is None else 'hidden [N,D]'}, "
                         f"got shape {list(inputs.shape)}")
    if weight is not None and (weight.dim() != 2 or weight.shape[1] != inputs.shape[1]):
        raise ValueError(f"lm_head weight {list(weight.shape)} does not match hidden {list(inputs.shape)} "
                         f"(want [V, {inputs.shape[1]}])")
    if targets.dim() != 1 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(f"targets {list(targets.shape)} must be 1-D with one id per row ({inputs.shape[0]})")
    if targets.dtype != torch.long:
        raise ValueError(f"targets must be torch.long token ids, got {targets.dtype}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _forward_chunks(inputs, weight, targets, chunk_size, temperature):
    n = inputs.shape[0]
    logp = torch.empty(n, dtype=torch.float32, device=inputs.device)
    entropy, lse = torch.empty_like(logp), torch.empty_like(logp)
    for start in range(0, n, chunk_size):
        rows = slice(start, start + chunk_size)
        z = _chunk_logits(inputs, weight, rows, temperature)
        logp[rows], entropy[rows], lse[rows] = _chunk_logprob_entropy(z, targets[rows])
    return logp, entropy, lse


@contextlib.contextmanager
def tf32_matmul(enabled):
    """cuBLAS fp32 GEMMs in TF32 inside the block (enabled; the process's setting restored after), for the lm_head
    weight gradient of a bf16 model: 2 V C D = 0.28 TFLOP per 1,024-row chunk at V = 151,674, D = 896, IEEE fp32
    by default (no tensor cores: H100 ~67 vs ~495 TFLOPS). TF32 rounds the inputs to a 10-bit mantissa and sums in
    fp32: the hidden states are bf16 (exact in TF32) and the result is rounded to bf16, so that rounding stays the
    larger one. An fp32 model keeps IEEE fp32; a CPU GEMM ignores the flag (torch 2.13 backends/cuda/__init__.py:
    183-209, the new API: mixing it with the legacy allow_tf32 raises)."""
    before = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32" if enabled else before
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision = before


class _ChunkedLogprobEntropy(torch.autograd.Function):
    """Chunked forward and a chunked backward that recomputes each chunk's logits from the saved inputs,
    so the graph holds O(N) floats instead of [N, V]."""

    @staticmethod
    def forward(ctx, inputs, weight, targets, chunk_size, temperature):
        logp, entropy, lse = _forward_chunks(inputs, weight, targets, chunk_size, temperature)
        ctx.save_for_backward(inputs, weight, targets, entropy, lse)
        ctx.chunk_size, ctx.temperature = chunk_size, temperature
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        inputs, weight, targets, entropy, lse = ctx.saved_tensors
        need_inputs, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_inputs = torch.zeros_like(inputs) if need_inputs else None
        # the lm_head gradient is a sum over chunks: accumulated in fp32, cast once at the end
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        for start in range(0, inputs.shape[0], ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            g_lp, g_h = grad_logp[rows, None].float(), grad_entropy[rows, None].float()
            z = _chunk_logits(inputs, weight, rows, ctx.temperature)
            z.sub_(lse[rows, None])        # log softmax
            p = z.exp()
            z.clamp_(min=FP32_MIN)         # banned tokens: p = 0 and a finite log p, so p * (log p + H) = 0
            # d log p_y / dz = onehot(y) - p ;  dH/dz = -p * (z - E_p[z]) = -p * (log p + H)
            # grad_z = g_lp * (onehot(y) - p) - g_h * p * (log p + H), built in z's buffer
            z.add_(entropy[rows, None]).mul_(p)        # p * (log p + H) first, before any factor that could overflow
            z.mul_(g_h).addcmul_(p, g_lp).neg_()
            z.scatter_add_(-1, targets[rows, None], g_lp)
            if ctx.temperature != 1.0:
                z.div_(ctx.temperature)    # chain rule through z = logits / T
            if weight is None:             # the inputs were the logits themselves
                grad_inputs[rows] = z.to(inputs.dtype)
                continue
            if need_inputs:
                grad_inputs[rows] = z.to(weight.dtype) @ weight                  # [C, D]
            if need_weight:
                with tf32_matmul(weight.dtype != torch.float32):
                    grad_weight.addmm_(z.T, inputs[rows].float())               # [V, D] += [V, C] @ [C, D]
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_inputs, grad_weight, None, None, None


def token_logprobs_and_entropy(hidden, lm_head_weight, targets, chunk_size=512, with_grad=False, temperature=1.0):
    """Log-prob of each target token and the entropy of its distribution, straight from hidden states.

    hidden [N, D] (final-normed, model dtype), lm_head_weight [V, D], targets [N] long
      -> (logprobs [N] fp32, entropy [N] fp32), entropy in nats.
    Row t of hidden must be the state that predicts targets[t] (module docstring: hidden[P-1:P+L-1] for a
    response at input positions P..P+L-1). Logits are (hidden @ W.T).float() / temperature, made for
    chunk_size rows at a time and never for all N rows.
    with_grad=False runs under no_grad (logging). with_grad=True returns tensors with autograd to hidden and
    to the weight (entropy bonus, policy loss); the backward recomputes each chunk, so it stays chunked too.
    Gradients match the naive log_softmax computation (tests/test_entropy.py)."""
    _check_inputs(hidden, lm_head_weight, targets, chunk_size)
    if not with_grad:
        with torch.no_grad():
            return _forward_chunks(hidden, lm_head_weight, targets, chunk_size, temperature)[:2]
    return _ChunkedLogprobEntropy.apply(hidden, lm_head_weight, targets, chunk_size, temperature)


def logprobs_and_entropy_from_logits(logits, targets, chunk_size=512, with_grad=False, temperature=1.0):
    """Same as token_logprobs_and_entropy when the [N, V] logits already exist (any dtype): each chunk is
    upcast to fp32 on its own, so no fp32 copy of the whole tensor is made. Row t of logits must be the
    distribution that sampled targets[t] (logits[:, P-1:P+L-1] of a causal LM over prompt + response).
    -inf logits (banned tokens) get probability 0 and contribute 0 to the entropy and to the gradient."""
    _check_inputs(logits, None, targets, chunk_size)
    if not with_grad:
        with torch.no_grad():
            return _forward_chunks(logits, None, targets, chunk_size, temperature)[:2]
    return _ChunkedLogprobEntropy.apply(logits, None, targets, chunk_size, temperature)

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

# -----------------------------------------------------------------------------
# 4. checkpoint selection: correlation with accuracy (Fig. 5), distributions (Fig. 10)


def pearson(x, y):
    """Pearson r of two equal-length sequences; nan when fewer than 2 points or either is constant."""
    if len(x) != len(y):
        raise ValueError(f"pearson: {len(x)} vs {len(y)} values")
    n = len(x)
    if n < 2:
        return float("nan")
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def average_ranks(values):
    """1-based ranks; tied values share the mean of the ranks they span ([10, 20, 20] -> [1, 2.5, 2.5])."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y):
    """Spearman rho = Pearson r of the average ranks (exact with ties)."""
    return pearson(average_ranks(x), average_ranks(y))


def read_accuracy(path):
    """eval.py's summary.json (top-level "accuracy"), or a directory holding one (DIR/summary.json,
    DIR/eval/summary.json)."""
    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / "summary.json", path / "eval" / "summary.json") if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{path}: no summary.json or eval/summary.json inside")
        path = found[0]
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    acc = summary.get("accuracy") if isinstance(summary, dict) else None
    if isinstance(acc, bool) or not isinstance(acc, (int, float)):
        raise ValueError(f"{path}: field 'accuracy' must be a number, got {acc!r}")
    return float(acc), str(path)


def read_generation_rows(path):
    """JSONL rows {checkpoint?, id, sample?, prompt_ids? | prompt?, response_ids | response}; errors cite file:line.
    eval.py's generations.jsonl has this shape (id, sample, response)."""
    rows = []
    for where, row in data.read_jsonl(path):
        if not isinstance(row, dict) or "id" not in row:
            raise ValueError(f"{where}: a generation must be an object with an 'id'")
        if not isinstance(row.get("response_ids"), list) and not isinstance(row.get("response"), str):
            raise ValueError(f"{where}: needs 'response_ids' (list of ints) or 'response' (string)")
        for key in ("response_ids", "prompt_ids"):
            if key in row and not (isinstance(row[key], list) and all(type(t) is int for t in row[key])):
                raise ValueError(f"{where}: field {key!r} must be a list of ints")
        rows.append(dict(row, id=str(row["id"]), where=where))
    if not rows:
        raise ValueError(f"{path}: no generations")
    return rows


def rows_for_checkpoint(rows, ckpt):
    """Rows naming this checkpoint (as given, resolved, or by directory name); rows without a checkpoint field
    are scored under every checkpoint (the same text, teacher-forced through each model)."""
    names = {str(ckpt), str(Path(ckpt).resolve()), Path(ckpt).name}
    picked = [r for r in rows if "checkpoint" not in r or str(r["checkpoint"]) in names
              or Path(str(r["checkpoint"])).name == Path(ckpt).name]
    if not picked:
        raise ValueError(f"no generations for checkpoint {ckpt} (rows name: "
                         f"{sorted({str(r.get('checkpoint')) for r in rows})[:5]})")
    return picked


def build_prompt_inputs(row, records, tokenizer, config, cfg):
    """-> (prompt ids, pixel_values or None) of a generation row, from prompt_ids / prompt / the data record."""
    record = records.get(row["id"])
    encoded = data.encode_prompt(tokenizer, config, record, mode=cfg.mode) if record is not None else None
    pixel_values = encoded["pixel_values"] if encoded else None
    if "prompt_ids" in row:
        return row["prompt_ids"], pixel_values
    if isinstance(row.get("prompt"), str):
        text = row["prompt"]
        if encoded and encoded["num_tiles"]:
            text = model.expand_image_tokens(text, encoded["num_tiles"], config.num_image_token)
        return tokenizer.encode(text, add_special_tokens=False), pixel_values
    if encoded is None:
        raise ValueError(f"{row['where']}: id {row['id']!r} is not in --data and the row has no prompt/prompt_ids")
    return encoded["input_ids"], pixel_values


@torch.no_grad()
def score_response(net, prompt_ids, response_ids, pixel_values, chunk_size):
    """Teacher-forced forward over prompt + response -> (logprobs [L], entropy [L]) at T = 1, aligned so that
    index t belongs to the distribution that sampled response_ids[t]."""
    device = next(net.parameters()).device
    P, L = len(prompt_ids), len(response_ids)
    if P == 0:
        raise ValueError("empty prompt: the first response token has no distribution to score")
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=device)
    pv = pixel_values.to(device=device, dtype=next(net.parameters()).dtype) if pixel_values is not None else None
    hidden = net(ids, pixel_values=pv, return_hidden=True)[0]  # [P+L, D]
    lm_head = net.language_model.get_output_embeddings()
    if getattr(lm_head, "bias", None) is not None:
        raise ValueError("lm_head has a bias; token_logprobs_and_entropy assumes logits = hidden @ W.T")
    return token_logprobs_and_entropy(hidden[P - 1:P + L - 1], lm_head.weight, ids[0, P:], chunk_size)


def sample_rows(net, tokenizer, records, cfg, ckpt):
    """Responses of one checkpoint with sampling.generate: samples_per_prompt per record, the same seed for every
    checkpoint. -> generation rows (also written to OUT/generations.jsonl for reuse with --generations)."""
    prompts = []
    for record in records:
        encoded = data.encode_prompt(tokenizer, net.config, record, mode=cfg.mode)
        prompts += [(record, s, encoded) for s in range(cfg.samples_per_prompt)]
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    device, dtype = next(net.parameters()).device, next(net.parameters()).dtype
    rows, t0 = [], time.time()
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts[start:start + cfg.batch_size]
        pvs = [e["pixel_values"] for _, _, e in batch if e["pixel_values"] is not None]
        pixel_values = torch.cat(pvs).to(device=device, dtype=dtype) if pvs else None
        outs = sampling.generate(net, [e["input_ids"] for _, _, e in batch], pixel_values=pixel_values,
                                 max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                 stop_token_ids=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id or 0,
                                 generator=generator)
        for (record, s, e), out in zip(batch, outs):
            rows.append({"checkpoint": str(ckpt), "id": record.id, "sample": s, "prompt_ids": e["input_ids"],
                         "response_ids": out["token_ids"], "logprobs": out["logprobs"],
                         "finish_reason": out["finish_reason"],
                         "response": tokenizer.decode(out["token_ids"], skip_special_tokens=False),
                         "where": f"sampled {record.where}"})
        print(f"  sampled {len(rows)}/{len(prompts)} responses ({time.time() - t0:.0f}s)")
    return rows


def stage_label(ckpt):
    """out/demo/sft/step_000300 -> "sft/step_000300": the stage (the run's directory) beside the step, so that an
    SFT checkpoint is not read as a late GRPO step."""
    ckpt = Path(ckpt)
    return f"{ckpt.parent.name}/{ckpt.name}" if ckpt.name.startswith("step_") and ckpt.parent.name else ckpt.name


def plot_checkpoints(table, path, cfg):
    """Fig. 5 (critical-token entropy vs accuracy) + Fig. 10 (token-entropy distribution, mean and share > 6.8)."""
    names = [r["name"] for r in table]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    with_acc = [r for r in table if r["accuracy"] is not None and not math.isnan(r["critical_entropy_mean"])]
    if with_acc:
        ax.scatter([r["critical_entropy_mean"] for r in with_acc], [r["accuracy"] for r in with_acc])
        for r in with_acc:
            ax.annotate(r["name"], (r["critical_entropy_mean"], r["accuracy"]), fontsize=8)
        ax.set_xlabel("critical-token entropy (nats)")
        ax.set_ylabel("accuracy")
        ax.set_title("critical-token entropy vs accuracy (Fig. 5)")
    else:
        ax.bar(names, [r["critical_entropy_mean"] for r in table])
        ax.set_ylabel("critical-token entropy (nats)")
        ax.set_title("critical-token entropy (no accuracies given)")
        ax.tick_params(axis="x", rotation=30)
    ax = axes[1]
    for r in table:
        edges, counts = r["histogram"]["edges"], r["histogram"]["counts"]
        total = max(sum(counts), 1)
        ax.stairs([c / total for c in counts], edges, label=r["name"])
    ax.axvline(cfg.high_threshold, color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("token entropy (nats)")
    ax.set_ylabel("share of tokens")
    ax.set_title("token-entropy distribution (Fig. 10)")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(names, [r["mean_token_entropy"] for r in table], "o-", label="mean token entropy")
    ax.set_ylabel("mean token entropy (nats)")
    ax.tick_params(axis="x", rotation=30)
    twin = ax.twinx()
    twin.plot(names, [r["high_entropy_frac"] for r in table], "s--", color="C1",
              label=f"share H > {cfg.high_threshold:.2f}")
    twin.set_ylabel(f"share of tokens with H > {cfg.high_threshold:.2f}")
    ax.set_title("mean entropy and high-entropy share (Fig. 10)")
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv):
    """EntropyConfig from --key value / --key=value (lists: --checkpoints A B C), configurator.py's parser."""
    cfg = configurator.parse_config(EntropyConfig, argv)
    if not cfg.checkpoints:
        raise ValueError("--checkpoints DIR... is required")
    if not cfg.data and not cfg.generations:
        raise ValueError("give --data VAL.jsonl (prompts to sample) and/or --generations FILE")
    if cfg.accuracies and len(cfg.accuracies) != len(cfg.checkpoints):
        raise ValueError(f"--accuracies: {len(cfg.accuracies)} paths for {len(cfg.checkpoints)} checkpoints")
    return cfg


def main(argv=None):
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    records = data.read_records(cfg.data) if cfg.data else []
    if cfg.num_prompts and not cfg.generations:
        records = records[:cfg.num_prompts]
    by_id = {r.id: r for r in records}
    given_rows = read_generation_rows(cfg.generations) if cfg.generations else None
    dtype = tu.torch_dtype(cfg.dtype, cfg.device)
    table, sampled = [], []
    for i, ckpt in enumerate(cfg.checkpoints):
        print(f"[{i + 1}/{len(cfg.checkpoints)}] {ckpt}")
        net = model.load_model(ckpt, dtype=dtype, device=cfg.device).eval()
        tokenizer = model.load_tokenizer(ckpt)
        sequences = critical_token_sequences(tokenizer, cfg.words)
        if not cfg.high_threshold:   # one threshold for the whole table: the checkpoints share a vocabulary
            cfg.high_threshold = high_entropy_threshold(net.language_model.get_output_embeddings().weight.shape[0])
            print(f"  high-entropy threshold: {cfg.high_threshold:.3f} nats (6.8 scaled by log V / log 151,674)")
        if given_rows is not None:
            rows = rows_for_checkpoint(given_rows, ckpt)
        else:
            if not records:
                raise ValueError(f"{cfg.data}: no records to sample from")
            rows = sample_rows(net, tokenizer, records, cfg, ckpt)
            sampled += rows
        entropies, criticals = [], []
        for row in rows:
            response_ids = row.get("response_ids")
            if response_ids is None:
                response_ids = tokenizer.encode(row["response"], add_special_tokens=False)
            if not response_ids:
                continue
            prompt_ids, pixel_values = build_prompt_inputs(row, by_id, tokenizer, net.config, cfg)
            _, ent = score_response(net, prompt_ids, response_ids, pixel_values, cfg.chunk_size)
            entropies.append(ent.cpu())
            criticals.append(critical_mask(response_ids, sequences))
        if not entropies:
            raise ValueError(f"{ckpt}: every response is empty; nothing to score")
        width = max(len(e) for e in entropies)
        ent = torch.zeros(len(entropies), width)
        mask = torch.zeros(len(entropies), width, dtype=torch.bool)
        crit = torch.zeros_like(mask)
        for j, (e, c) in enumerate(zip(entropies, criticals)):
            ent[j, :len(e)], mask[j, :len(e)], crit[j, :len(e)] = e, True, c
        metrics = entropy_metrics(ent, mask, crit, cfg.high_threshold, cfg.hist_bins, cfg.hist_max)
        accuracy, accuracy_source = None, None
        if cfg.accuracies:
            accuracy, accuracy_source = read_accuracy(cfg.accuracies[i])
        else:
            for candidate in (Path(ckpt) / "summary.json", Path(ckpt) / "eval" / "summary.json"):
                if candidate.is_file():
                    accuracy, accuracy_source = read_accuracy(candidate)
                    break
        per_sample = metrics.pop("per_sample")
        table.append({"checkpoint": str(ckpt), "name": stage_label(ckpt), "accuracy": accuracy,
                      "accuracy_source": accuracy_source, "num_responses": len(entropies), **metrics,
                      "critical_entropy_per_response": per_sample["critical_entropy_mean"]})
        print(f"  {len(entropies)} responses, {metrics['num_tokens']} tokens, {metrics['critical_count']} critical: "
              f"critical H {metrics['critical_entropy_mean']:.3f}, mean H {metrics['mean_token_entropy']:.3f}, "
              f"H>{cfg.high_threshold:.2f} {metrics['high_entropy_frac']:.4f}")
        del net
    if sampled:
        with open(out / "generations.jsonl", "w", encoding="utf-8") as f:
            for row in sampled:
                f.write(json.dumps({k: v for k, v in row.items() if k != "where"}, ensure_ascii=False) + "\n")

    # rank: higher critical-token entropy = more genuine reasoning (§5.1); checkpoints without critical tokens last
    crit = [r["critical_entropy_mean"] for r in table]
    order = sorted(range(len(table)), key=lambda j: math.inf if math.isnan(crit[j]) else -crit[j])
    for rank, j in enumerate(order, start=1):
        table[j]["rank"] = rank
    paired = [r for r in table if r["accuracy"] is not None and not math.isnan(r["critical_entropy_mean"])]
    correlation = None
    if paired:
        xs, ys = [r["critical_entropy_mean"] for r in paired], [r["accuracy"] for r in paired]
        correlation = {"n": len(paired), "pearson": pearson(xs, ys), "spearman": spearman(xs, ys)}
    plot_checkpoints(table, out / "entropy.png", cfg)

    def clean(x):  # JSON has no nan
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    result = {"checkpoints": [table[j] for j in order], "correlation": correlation,
              "critical_token_sequences": [{"ids": s, "text": tokenizer.decode(s)} for s in sequences],
              "config": asdict(cfg)}
    (out / "entropy_table.json").write_text(json.dumps(clean(result), indent=1))
    print(f"{'rank':>4}  {'checkpoint':<30} {'crit H':>8} {'n crit':>7} {'mean H':>8} {'H>thr':>8} {'acc':>7}")
    for j in order:
        r = table[j]
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        print(f"{r['rank']:>4}  {r['name']:<30} {r['critical_entropy_mean']:>8.3f} {r['critical_count']:>7} "
              f"{r['mean_token_entropy']:>8.3f} {r['high_entropy_frac']:>8.4f} {acc:>7}")
    if correlation:
        print(f"critical-token entropy vs accuracy over {correlation['n']} checkpoints: "
              f"pearson {correlation['pearson']:.3f}, spearman {correlation['spearman']:.3f}")
    print(f"wrote {out / 'entropy_table.json'}, {out / 'entropy.png'}")
    return result


if __name__ == "__main__":
    main()
