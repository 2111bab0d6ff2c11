"""
Log-probs and entropy of the tokens a model sampled, chunked over positions, fp32 per chunk (never a full fp32
[N, V]), with a chunked backward: the policy loss of grpo.py and sft.py, and entropy.py's scoring. At the end,
sequence_logprobs: one forward of a micro-batch of sampled responses through the model and this kernel (grpo.py).

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

import torch
import torch.nn.functional as F

import data
import train_utils as tu

FP32_MIN = torch.finfo(torch.float32).min

# -----------------------------------------------------------------------------
# log-probs and entropy, chunked over positions, fp32 per chunk
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
# the log-probs of sampled responses under a model: grpo.py's training forward (pi_theta, pi_old, pi_ref)


def sequence_logprobs(model, samples, pad_id, image_size, cfg, with_grad):
    """One forward over prompt + response of each sample (dicts with prompt_ids, response_ids, pixel_values)
    -> (logp, entropy, mask) [B, L] over the response tokens; cfg: grpo.py's Config (packing, shared_prefix,
    logprob_chunk_size); inputs packed (cfg.packing) or right-padded, the same numbers
    (data.collate_responses); packed with cfg.shared_prefix, a group's rollouts share one copy of their
    prompt (model.packed_sdpa_attention), the same numbers to fp32 round-off. Log-probs come from the
    hidden states through lm_head in chunks of cfg.logprob_chunk_size rows: no [N, V] fp32 logits."""
    device = next(model.parameters()).device
    batch, rows, cols = data.collate_responses(samples, pad_id, image_size, cfg.packing, cfg.shared_prefix)
    to_device = lambda key: None if batch.get(key) is None else batch[key].to(device)
    hidden = model(to_device("input_ids"), pixel_values=to_device("pixel_values"),
                   image_flags=to_device("image_flags"), attention_mask=to_device("attention_mask"),
                   position_ids=to_device("position_ids"), prefix_layout=batch.get("prefix_layout"),
                   return_hidden=True)   # [B|1, T, D]
    targets = torch.tensor([t for s in samples for t in s["response_ids"]], device=device)
    # FSDP2 leaves the root group (lm_head) unsharded from forward to the end of backward; were it
    # a shard, full_tensor() gathers it, differentiably
    weight = tu.full_tensor(model.language_model.get_output_embeddings().weight)   # [V, D]
    logp, ent = token_logprobs_and_entropy(hidden[rows.to(device), cols.to(device)], weight,
                                           targets, cfg.logprob_chunk_size, with_grad)   # [N], [N]
    lengths = torch.tensor([len(s["response_ids"]) for s in samples], device=device)
    mask = torch.arange(int(lengths.max()), device=device)[None, :] < lengths[:, None]   # [B, L]
    logp = logp.new_zeros(mask.shape).masked_scatter(mask, logp)   # [B, L], differentiable
    ent = ent.detach().new_zeros(mask.shape).masked_scatter(mask, ent.detach())
    return logp, ent, mask


def padded(rows, mask):
    """per-sample 1-D tensors (or None -> 0) -> [B, L] aligned with mask."""
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    for i, row in enumerate(rows):
        if row is not None:
            out[i, :len(row)] = row.to(out.device)
    return out
