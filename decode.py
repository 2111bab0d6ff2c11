"""
The built-in decoder: batched sampling from our InternVL model with a KV cache, the rollout engine wherever vLLM
is absent (CPU, tests, small models); sampling.BuiltinSampler calls it.

    generate(model, prompts, ...) -> per row {"token_ids", "logprobs", "finish_reason"}

Left-padded prompts; a prompt's prefix (its image tiles included) encoded once for its rows (copies); rows that
finish leave the batch. decode_static is the same loop with fixed shapes (a StaticCache), so that its one-token
step can go through torch.compile (CUDA graphs on cuda; on CPU with finished rows compacted into smaller buckets).
Draws: from a torch.Generator, or per row from row_uniforms (sampling.item_seed) (a row's tokens then do not depend on its
batch, and every path draws the same ones). In these functions `model` is the network, an InternVLChatModel.
"""
import warnings
import weakref

import torch
import torch.distributed as tdist
from torch.distributed.fsdp import FSDPModule
from transformers import DynamicCache, StaticCache

import train_utils as tu


def row_uniforms(seeds, steps):
    """int64 seeds, steps < 2**32 (broadcast) -> float64 uniforms in [0, 1): a counter-based hash of (seed, step),
    a stream per row whatever its batch (as vLLM V2 hashes (seed, position): v1/worker/gpu/sample/gumbel.py:98-113),
    by 3 rounds of lowbias32 (C. Wellons), products in 16-bit halves (no int64 overflow): the same bits anywhere."""
    def mix(x):
        for shift, factor in ((16, 0x7FEB352D), (15, 0x846CA68B)):
            x = x ^ (x >> shift)
            x = ((x & 0xFFFF) * factor + ((((x >> 16) * factor) & 0xFFFF) << 16)) & 0xFFFFFFFF
        return x ^ (x >> 16)
    return mix(mix(mix((seeds & 0xFFFFFFFF) ^ 0x9E3779B9) ^ ((seeds >> 32) & 0xFFFFFFFF)) ^ steps).double() / 2 ** 32


def sample_next(logits, temperature, top_p, banned, generator, uniforms=None):
    """logits [b,V] fp32 -> (tokens [b], raw log-probs [b]). Tokens come from the processed distribution (banned
    masked, temperature, top-p); the log-probs are the model's own (log_softmax of the unprocessed logits), as
    vLLM's default logprobs_mode="raw_logprobs" returns them and as GRPO's training forward computes them.
    Draws: from `generator`, one stream for the batch; or, given uniforms [b] (row_uniforms), row i's token is where
    uniforms[i] falls in its CDF (float64: u < 1 lands below the total, never on a token of probability 0)."""
    raw = torch.log_softmax(logits, -1)
    logits = logits.masked_fill(banned, float("-inf"))
    if temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, raw.gather(-1, tokens[:, None])[:, 0]
    logits = logits / temperature
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        cut = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix with mass >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(cut, float("-inf")))
    probs = torch.log_softmax(logits, -1).exp()
    if uniforms is None:
        tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]
    else:
        cdf = probs.double().cumsum(-1)
        tokens = torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:], right=True)[:, 0]
    return tokens, raw.gather(-1, tokens[:, None])[:, 0]


def left_padded(prompts, width, pad_token_id, device, columns=None):
    """prompts -> input_ids [n, width] left-padded, attention mask [n, columns or width], position ids [n, width]."""
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=device)
    attn = torch.zeros((len(prompts), columns or width), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):] = torch.tensor(p, device=device)
        attn[i, width - len(p):width] = 1
    return input_ids, attn, (attn[:, :width].cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def generate(model, prompts, pixel_values=None, image_flags=None, max_new_tokens=256, temperature=1.0, top_p=1.0,
             stop_token_ids=(), banned_token_ids=(), pad_token_id=0, generator=None, sync_ranks=False,
             static_cache=None, compile_decode="auto", copies=None, seeds=None):
    """Left-padded batched sampling. The prefix is encoded once (KV cache); rows that finish leave the batch.
    copies: rows per prompt (default one each): a prompt's prefix (image tiles included; pixel_values are the
    prompts') is encoded once and its K/V copied to its rows, as GRPO's n rollouts of one prompt share it (the
    prefill of 8 x 8 rows was a quarter of the side-by-side's CPU rollout time: bench_decode.py --rollouts).
    sync_ranks: under FSDP every rank must run the same collectives in the same order (each forward all-gathers
    every block), so each step starts with one all-reduce "is any rank still decoding?" and then every rank runs
    one forward: a rank whose rows have all ended runs a dummy one-token forward, until all ranks are done.
    Every rank passes the same max_new_tokens.
    compile_decode "auto" | "on" | "off": the one-token step through torch.compile (compiles_decode_step: "auto"
    is on cuda). static_cache (default: on cuda, or when the step is compiled): the
    fixed-shape decode loop instead (decode_static). All give the same tokens at T = 0 (tests/test_sampling.py).
    seeds (one int per row, sum(copies) of them): row i's t-th token is drawn at row_uniforms(seeds[i], t), all
    hashed up front, not from `generator`: its tokens do not depend on its batch, and every path gives the same
    ones at T = 1 too."""
    device = next(model.parameters()).device
    copies = [1] * len(prompts) if copies is None else list(copies)
    if len(copies) != len(prompts) or min(copies) < 1:
        raise ValueError(f"copies must give each of the {len(prompts)} prompts >= 1 rows, got {copies}")
    b = sum(copies)
    if seeds is not None and len(seeds) != b:
        raise ValueError(f"seeds: one per row, {b} rows, got {len(seeds)}")
    uniforms = None if seeds is None else row_uniforms(torch.tensor(seeds, dtype=torch.long, device=device)[:, None],
                                                       torch.arange(max_new_tokens, device=device))   # [b, steps]
    compiled = compiles_decode_step(model, compile_decode)
    if static_cache if static_cache is not None else device.type == "cuda" or compiled:
        return decode_static(model, prompts, pixel_values, image_flags, max_new_tokens, temperature, top_p,
                             stop_token_ids, banned_token_ids, pad_token_id, generator, sync_ranks, compiled, copies,
                             uniforms)
    input_ids, attn, positions = left_padded(prompts, max(len(p) for p in prompts), pad_token_id, device)
    row_prompt = torch.repeat_interleave(torch.tensor(copies, device=device))   # [b]: each row's prompt
    vocab = model.language_model.get_output_embeddings().weight.shape[0]
    banned = torch.zeros(vocab, dtype=torch.bool, device=device)
    banned[list(banned_token_ids)] = True
    if model.img_context_token_id is not None:  # a sampled <IMG_CONTEXT> would have no image feature to fill it
        banned[model.img_context_token_id] = True
    stop = torch.tensor(sorted(set(stop_token_ids)) or [-1], device=device)
    cache = DynamicCache()
    logits = model(input_ids, pixel_values=pixel_values, image_flags=image_flags, attention_mask=attn,
                   position_ids=positions, past_key_values=cache)[:, -1].float()
    if b != len(prompts):   # the prompts' prefixes -> their rows
        logits, attn, positions = logits[row_prompt], attn[row_prompt], positions[row_prompt]
        cache.batch_select_indices(row_prompt)
    rows = torch.arange(b, device=device)  # original row of each live batch entry
    out_tokens = [[] for _ in range(b)]
    out_logprobs = [[] for _ in range(b)]
    finish = ["length"] * b
    next_pos = positions[:, -1] + 1
    ranks = synced_ranks(sync_ranks, device)
    for step in range(max_new_tokens):
        if len(rows):
            tokens, logprobs = sample_next(logits, temperature, top_p, banned, generator,
                                           None if uniforms is None else uniforms[rows, step])
            for r, t, lp in zip(rows.tolist(), tokens.tolist(), logprobs.tolist()):
                out_tokens[r].append(t)
                out_logprobs[r].append(lp)
            done = torch.isin(tokens, stop)
            for r in rows[done].tolist():
                finish[r] = "stop"
            if done.any():
                keep = (~done).nonzero()[:, 0]
                rows, tokens, next_pos, attn = rows[keep], tokens[keep], next_pos[keep], attn[keep]
                if len(rows):
                    cache.batch_select_indices(keep)
        # the all-reduce first, then the forward, on every rank (a rank that forwarded first while another
        # all-reduced first would wait on it for ever)
        if step == max_new_tokens - 1 or tu.all_reduce_max(float(len(rows) > 0), ranks) == 0:
            break
        if len(rows) == 0:   # only under sync_ranks: a forward with the same FSDP all-gathers, output unused
            model(torch.full((1, 1), pad_token_id, dtype=torch.long, device=device))
            continue
        attn = torch.cat([attn, attn.new_ones(len(rows), 1)], dim=1)
        logits = model(tokens[:, None], attention_mask=attn, position_ids=next_pos[:, None],
                       past_key_values=cache)[:, -1].float()
        next_pos = next_pos + 1
    return [{"token_ids": out_tokens[i], "logprobs": out_logprobs[i], "finish_reason": finish[i]} for i in range(b)]


def decode_step(model, tokens, attention_mask, position_ids, cache):
    """One token per row through the LLM alone (a sampled token is never <IMG_CONTEXT>: no image path, no
    host sync) -> fp32 logits [b, V] of the next token."""
    hidden = model.language_model.model(input_ids=tokens, attention_mask=attention_mask, position_ids=position_ids,
                                        use_cache=True, **{model.cache_kwarg: cache}).last_hidden_state
    return model.language_model.lm_head(hidden[:, -1]).float()


_decode_state = weakref.WeakKeyDictionary()   # model -> its compiled step and its last StaticCache
_compile_failed = []   # [its message] once torch.compile has failed: every later decode runs eager


def compiles_decode_step(model, setting):
    """Whether decode_static runs its step through torch.compile. "off", or after a compile failure: no.
    An FSDP-wrapped model: no, whatever the setting. Dynamo cannot trace through FSDP2's pre/post-forward hooks
    (all-gather, reshard): each block's hooks break the graph, and the pieces between them specialise on the
    layer's int layer_idx, so every block compiles its own frame until the recompile limit sends the rest to
    eager, a compile per layer for nothing. The eager static loop does the same math (the sharded 2-rank test
    in tests/test_sampling.py). "on": yes. "auto": on cuda (CUDA graphs: ~900 launches become one replay). On
    CPU "auto" keeps the eager loop: the compiled step with its finished rows compacted costs less per call (8 x 8
    rows, T = 1, CPU s per call vs eager without prefix sharing, bench_decode.py --rollouts: compiled 0.59x at 55
    tokens per rollout, 0.54x at 29 (--stops=8); eager with the shared prefix 0.77x, 0.80x), but each process
    compiles (~6 s of CPU with inductor's disk caches warm, ~1 min cold), so only a long run of large calls gains:
    grpo.py --compile_decode=on (the TRL side-by-side's 0.53x step, bench/README.md)."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"compile_decode must be auto, on or off, got {setting!r}")
    if setting == "off" or _compile_failed or any(isinstance(m, FSDPModule) for m in model.modules()):
        return False
    return setting == "on" or next(model.parameters()).device.type == "cuda"


def bucket(n, multiple):
    """n rounded up: powers of two up to `multiple`, then multiples of it. Shapes of the compiled step come from
    a few buckets, so its graphs (one per shape) are recorded once and replayed by later calls."""
    return 1 << (n - 1).bit_length() if n <= multiple else -(-n // multiple) * multiple


@torch.no_grad()
def decode_static(model, prompts, pixel_values, image_flags, max_new_tokens, temperature, top_p, stop_token_ids,
                  banned_token_ids, pad_token_id, generator, sync_ranks, compile_step, copies, uniforms=None):
    """generate's loop with fixed shapes, so that a decode step is one CUDA-graph replay instead of ~900 kernel
    launches: a StaticCache [b, H_kv, total, d] (transformers 5.19 cache_utils.StaticLayer: written in place at
    its running length) and a full-width attention mask [b, total] whose column width + t opens at step t. Rows
    that finish stay in the batch and feed pad tokens; their outputs are dropped. Sampled tokens stay on the
    device; the host checks for "all rows done" every 16 steps.
    compile_step: decode_step through torch.compile(mode="reduce-overhead") (CUDA graphs on cuda). Its graphs
    are recorded per input shape and per address of the cache tensors (marked static, cache_utils.py:455-463),
    so a compiled loop pads the batch to bucket(b, 8) rows (one-token dummy prompts, never sampled) and the
    cache to bucket(width + max_new_tokens, 64) columns (masked), and keeps the model's last StaticCache for
    the next call of the same shape: a GRPO step replays the graphs of the one before (bench_decode.py
    --graph_calls). The kept cache holds its memory between calls. A compile failure falls back to the eager step
    with one warning. copies: prefixes encoded in a DynamicCache, copied to their rows. On CPU the compiled loop
    compacts: every 16 steps, rows still decoding that fit a smaller bucket move to its (kept) StaticCache."""
    device = next(model.parameters()).device
    b, width = sum(copies), max(len(p) for p in prompts)
    rows, total = b, width + max_new_tokens
    if compile_step:
        rows, total = bucket(b, 8), bucket(total, 64)
    if rows > b:   # the padded rows: one one-token dummy prompt
        prompts, copies = list(prompts) + [[pad_token_id]], list(copies) + [rows - b]
    input_ids, prompt_attn, prompt_positions = left_padded(prompts, width, pad_token_id, device, total)
    row_prompt = torch.repeat_interleave(torch.tensor(copies, device=device))   # [rows]: each row's prompt
    attn, positions = prompt_attn[row_prompt], prompt_positions[row_prompt]   # attn [rows, total]: static
    vocab = model.language_model.get_output_embeddings().weight.shape[0]
    banned = torch.zeros(vocab, dtype=torch.bool, device=device)
    banned[list(banned_token_ids)] = True
    if model.img_context_token_id is not None:
        banned[model.img_context_token_id] = True
    stop = torch.tensor(sorted(set(stop_token_ids)) or [-1], device=device)
    state = _decode_state.setdefault(model, {})
    key = (rows, total, next(model.parameters()).dtype, device)
    if compile_step and key in state.get("caches", {}):
        cache = state["caches"][key]
        cache.reset()   # zeroed in place: the same tensors, so the recorded graphs stay valid
    else:
        cache = StaticCache(config=model.language_model.config, max_cache_len=total)
        if compile_step:
            state["caches"] = {key: cache}   # and the smaller ones that compaction adds
    prefix = DynamicCache()
    logits = model(input_ids, pixel_values=pixel_values, image_flags=image_flags,
                   attention_mask=prompt_attn[:, :width], position_ids=prompt_positions,
                   past_key_values=prefix)[:, -1].float()[row_prompt]
    fill_static_cache(cache, [(layer.keys[row_prompt], layer.values[row_prompt]) for layer in prefix.layers], width)
    out_tokens = torch.full((b, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    out_logprobs = torch.zeros((b, max_new_tokens), device=device)
    lengths = torch.full((b,), max_new_tokens, dtype=torch.long, device=device)   # tokens kept per row
    stopped = torch.zeros(b, dtype=torch.bool, device=device)
    next_pos = positions[:, -1:] + 1   # [rows, 1]
    ranks = synced_ranks(sync_ranks, device)
    live = torch.arange(b, device=device)   # the row in each of the first len(live) batch slots; the rest: dummies
    compact, steps = compile_step and device.type == "cpu" and not sync_ranks, 0
    for step in range(max_new_tokens):
        tokens, logprobs = sample_next(logits[:len(live)], temperature, top_p, banned, generator,   # real rows only
                                       None if uniforms is None else uniforms[live, step])
        out_tokens[live, step], out_logprobs[live, step] = tokens, logprobs
        newly = ~stopped[live] & torch.isin(tokens, stop)
        lengths[live] = torch.where(newly, step + 1, lengths[live])
        stopped[live] = stopped[live] | newly
        steps = step + 1
        # every 16 steps: are all rows done, on every rank (sync_ranks: one all-reduce, at the same step on every
        # rank; a rank whose rows have ended keeps stepping its pad tokens, so the ranks' forwards stay in step)
        if step == max_new_tokens - 1 or \
                (step % 16 == 15 and tu.all_reduce_max(float(not bool(stopped.all())), ranks) == 0):
            break
        if compact and step % 16 == 15 and bucket(int((~stopped[live]).sum()), 8) < rows:   # compaction: rows
            # still decoding -> a smaller bucket's StaticCache (kept: compiled once); dummy slots copy a live row
            going = (~stopped[live]).nonzero()[:, 0]
            rows = bucket(len(going), 8)
            slots = torch.cat([going, going[:1].expand(rows - len(going))])
            live, tokens, attn, next_pos = live[going], tokens[going], attn[slots], next_pos[slots]
            key = (rows, total, next(model.parameters()).dtype, device)
            smaller = state["caches"].setdefault(
                key, StaticCache(config=model.language_model.config, max_cache_len=total))
            fill_static_cache(smaller, [(layer.keys[slots, :, :width + step], layer.values[slots, :, :width + step])
                                        for layer in cache.layers], width + step)
            cache = smaller
        attn[:, width + step] = 1
        tokens = torch.cat([torch.where(stopped[live], pad_token_id, tokens),
                            tokens.new_full((rows - len(live),), pad_token_id)])[:, None]
        if compile_step:
            try:   # one compiled callable per model: later calls with the same shapes replay its graphs
                step_fn = state.get("step") or state.setdefault(
                    "step", torch.compile(decode_step, mode="reduce-overhead"))
                logits = step_fn(model, tokens, attn, next_pos, cache).clone()   # a CUDA-graph output is
            except Exception as error:                                           # overwritten by the next replay
                # the message only: the exception's traceback would keep this call's tensors (the cache) alive
                _compile_failed.append(f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}")
                warnings.warn(f"torch.compile of the decode step failed ({_compile_failed[-1]}); decoding eagerly "
                              f"from now on (compile_decode='off' skips compiling)")
                compile_step = False
                for layer in cache.layers:   # a failed call may have advanced the write position: rewind it
                    layer.cumulative_length.fill_(width + step)
        if not compile_step:
            logits = decode_step(model, tokens, attn, next_pos, cache)
        next_pos = next_pos + 1
    lengths, stopped = lengths.clamp(max=steps).tolist(), stopped.tolist()
    tokens, logprobs = out_tokens.tolist(), out_logprobs.tolist()
    return [{"token_ids": tokens[i][:lengths[i]], "logprobs": logprobs[i][:lengths[i]],
             "finish_reason": "stop" if stopped[i] else "length"} for i in range(b)]


def fill_static_cache(cache, keys_values, length):
    """Each layer's (K, V) [rows, H_kv, length, d] into the cache's first columns, in place (static addresses)."""
    for layer, (keys, values) in zip(cache.layers, keys_values):
        if not layer.is_initialized:
            layer.lazy_initialization(keys, values)
        layer.keys[:, :, :length].copy_(keys)
        layer.values[:, :, :length].copy_(values)
        layer.cumulative_length.fill_(length)


def synced_ranks(sync_ranks, device):
    """The group that decode decisions are all-reduced over (tu.all_reduce_max): the trainer's ranks under
    sync_ranks, else (or without a process group) this process alone: no collective."""
    return tu.Dist(world_size=tdist.get_world_size() if sync_ranks and tdist.is_initialized() else 1, device=device)
