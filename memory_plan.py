"""
The per-GPU memory plan of a training run, from the model's config.json alone (no weights, no GPU):
what sft.py, connector_tune.py and grpo.py hold on each GPU, and whether it fits. On a GPU they print it at
startup and refuse a run that cannot fit, before anything is allocated; `--plan` prints it and exits (CPU too).
sft_plan and grpo_plan read those scripts' configs.

    python grpo.py config/grpo_38b.py --plan --init_from=config/skywork-r1v3-38b.json --plan_gpus=16

Bytes per GPU, W ranks, N parameters of which N_t trainable, c = compute bytes (2: bf16), as the code holds them:
  parameters   4 N / W         fp32 master weights, frozen ones too (train_utils.load_model_sharded builds every
                               parameter in fp32 and wrap_fsdp shards every group)
  gradients    4 N_t / W       fp32, sharded (MixedPrecisionPolicy reduce_dtype=fp32)
  AdamW        8 N_t / W       exp_avg + exp_avg_sq in the parameter's dtype (fp32)
  gathered     c R + 2 c B + c R_t + (c + 4) B_t
                               FSDP2's unsharded copies: the root group R (embeddings, lm_head, mlp1, norms) stays
                               gathered from forward to the end of backward (wrap_fsdp), two blocks B (the one
                               computing, the one prefetched), the root's and one block's gradients before their
                               reduce-scatter (the block's also as its fp32 copy)
  activations  see activation_bytes: per token per layer, with and without activation checkpointing
  sampler      vLLM: its whole budget gpu_memory_utilization x GPU while it samples (weights c N / tp + KV cache;
               vLLM's worker requests total memory x gpu_memory_utilization and refuses to start when less is
               free: gpu_worker.init_device); asleep while the policy trains (level 1: weights to CPU, KV cache
               freed). builtin: its static KV cache, and on one process the bf16 copy of the policy (rollout_dtype)
Two peaks are checked against the GPU less RESERVED: training (parameters + gradients + AdamW + gathered +
activations) and sampling (parameters + AdamW + the sampler; zero_grad(set_to_none=True) frees the gradients).
Estimates: the activation formulas list the tensors autograd saves; the CUDA context, NCCL buffers and allocator
fragmentation are RESERVED, assumed, not measured.
"""
import json
import os
from pathlib import Path

import torch

import sampling

GIB = 2 ** 30
RESERVED = 0.10   # of the GPU: CUDA context, NCCL buffers, allocator fragmentation (assumed)
# "total capacity of 79.19 GiB": what torch.cuda reports for an 80 GB H100 (its out-of-memory message)
DEFAULT_GPU_GIB = 79.19


def read_model_config(path):
    """config.json as a dict: a checkpoint directory or the file itself (config/skywork-r1v3-38b.json)."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no config.json (give a checkpoint directory or a config.json file)")
    d = json.loads(file.read_text())
    for key in ("vision_config", "llm_config"):
        if key not in d:
            raise ValueError(f"{file}: no {key!r}: not an InternVL / Skywork-R1V config")
    return d


def shapes(config):
    """The sizes the plan needs, with the released configs' defaults (model.VisionConfig)."""
    v, l = config["vision_config"], config["llm_config"]
    heads = l["num_attention_heads"]
    return dict(
        Hv=v.get("hidden_size", 3200), Iv=v.get("intermediate_size", 12800), Lv=v.get("num_hidden_layers", 45),
        nv=v.get("num_attention_heads", 25), patch=v.get("patch_size", 14), C=v.get("num_channels", 3),
        qkv_bias=v.get("qkv_bias", False), qk_norm=v.get("qk_normalization", True),
        layer_norm=v.get("norm_type", "rms_norm") == "layer_norm",
        S=config.get("force_image_size") or v.get("image_size", 448), vit_image=v.get("image_size", 448),
        ratio=round(1 / config.get("downsample_ratio", 0.5)) ** 2,
        H=l["hidden_size"], I=l["intermediate_size"], L=l["num_hidden_layers"], V=l["vocab_size"], nh=heads,
        nkv=l.get("num_key_value_heads", heads), hd=l.get("head_dim") or l["hidden_size"] // heads,
        tied=l.get("tie_word_embeddings", False))


def parameter_counts(config):
    """{module: (parameters in blocks, parameters outside them)} for vision, connector, llm, counted as
    model.py builds them (InternViT, mlp1, Qwen2 with q/k/v biases); tests check it against a meta build."""
    s = shapes(config)
    Hv, Iv, H, I, hd = s["Hv"], s["Iv"], s["H"], s["I"], s["hd"]
    norm = 2 * Hv if s["layer_norm"] else Hv
    vit_layer = (2 * norm + 3 * Hv * Hv + 3 * Hv * s["qkv_bias"] + 2 * Hv * s["qk_norm"] + Hv * Hv + Hv
                 + Hv * Iv + Iv + Iv * Hv + Hv + 2 * Hv)   # norms, qkv, q/k norm, proj, fc1, fc2, ls1/ls2
    patches = (s["vit_image"] // s["patch"]) ** 2   # the position table's size (intern_vit.InternVisionEmbeddings)
    vit_embed = Hv + s["C"] * s["patch"] ** 2 * Hv + Hv + (patches + 1) * Hv   # class, patch conv, positions
    Dc = Hv * s["ratio"]
    connector = 2 * Dc + Dc * H + H + H * H + H   # LayerNorm, Linear, Linear
    q, kv = s["nh"] * hd, s["nkv"] * hd
    llm_layer = H * q + q + 2 * (H * kv + kv) + q * H + 3 * H * I + 2 * H   # q/k/v with bias, o, MLP, norms
    llm_root = s["V"] * H * (1 if s["tied"] else 2) + H   # embeddings, lm_head, final norm
    return {"vision": (s["Lv"] * vit_layer, vit_embed), "connector": (0, connector),
            "llm": (s["L"] * llm_layer, llm_root), "_blocks": (vit_layer, llm_layer)}


def activation_bytes(config, compute_bytes=2):
    """Bytes autograd keeps per token per layer, without checkpointing -> (LLM layer, ViT layer).
    Qwen2 layer, c bytes each: 2 norm inputs + 2 norm outputs (2H + 2H), q, k, v ((nh + 2 nkv) hd), q and k
    before RoPE ((nh + nkv) hd), the attention output (nh hd), gate, up, act(gate), act(gate) * up (4 I); in fp32:
    the 2 RMSNorm upcasts (2H) and SDPA's log-sum-exp (nh).
    InternViT layer: 2 norm inputs + 2 outputs (4 Hv), qkv (3 Hv), the attention output (Hv), the 2 layer-scaled
    branches (2 Hv), fc1's output and GELU's (2 Iv), q/k norms' inputs and outputs (4 Hv, with qk_normalization);
    in fp32: log-sum-exp (nv), RMSNorm upcasts (2 Hv, 4 Hv more with qk_normalization)."""
    s, c = shapes(config), compute_bytes
    H, hd, nh, nkv = s["H"], s["hd"], s["nh"], s["nkv"]
    llm = c * (4 * H + (nh + 2 * nkv) * hd + (nh + nkv) * hd + nh * hd + 4 * s["I"]) + 4 * (2 * H + nh)
    Hv, qk = s["Hv"], s["qk_norm"]
    vit = c * (10 * Hv + 2 * s["Iv"] + 4 * Hv * qk) + 4 * (s["nv"] + (0 if s["layer_norm"] else 2 * Hv)
                                                            + 4 * Hv * qk)
    return llm, vit


def plan(config, *, world_size, trainable, tokens, tiles, activation_checkpointing, logprob_chunk,
         gpu_bytes, compute_bytes=2, sampler="none", vllm_tensor_parallel_size=1, vllm_gpu_memory_utilization=0.0,
         rollout_sequences=0, rollout_tokens=0, rollout_copy=False):
    """The plan of one run: {"rows": [(name, bytes per GPU, how)], "train", "sample", "usable", "fits", ...}.
    tokens: LLM tokens in one micro-batch (one forward); tiles: 448x448 image tiles in it. sampler: "vllm",
    "builtin" (rollout_sequences rows of rollout_tokens each; rollout_copy: the one-process bf16 copy) or
    "none" (SFT)."""
    s, c, W = shapes(config), compute_bytes, world_size
    counts = parameter_counts(config)
    vit_block, llm_block = counts.pop("_blocks")
    n_total = sum(b + r for b, r in counts.values())
    n_train = sum(b + r for m, (b, r) in counts.items() if m in trainable)
    root = sum(r for _, r in counts.values())
    root_t = sum(r for m, (_, r) in counts.items() if m in trainable)
    block = max(vit_block, llm_block)
    block_t = max([vit_block] * ("vision" in trainable) + [llm_block] * ("llm" in trainable) + [0])
    llm_a, vit_a = activation_bytes(config, c)
    vit_tokens = tiles * ((s["S"] // s["patch"]) ** 2 + 1)   # patches + the class token
    full = tokens * s["L"] * llm_a + vit_tokens * s["Lv"] * vit_a
    # checkpointed (train_utils.checkpoint_block, every block): each block keeps its input, one block's full
    # activations exist again while its backward recomputes it
    kept = tokens * s["L"] * c * s["H"] + vit_tokens * s["Lv"] * c * s["Hv"] + \
        max(tokens * llm_a, vit_tokens * vit_a)
    # the last hidden states, and logprobs.py's backward: fp32 logits and probabilities of one chunk [C, V], and the
    # lm_head gradient accumulated in fp32 [V, H] (logprobs.py:117) when the LLM trains
    head = tokens * c * s["H"] + 8 * logprob_chunk * s["V"] + 4 * s["V"] * s["H"] * ("llm" in trainable)
    activations = (kept if activation_checkpointing else full) + head
    rows = [("parameters", 4 * n_total / W, f"fp32 master weights: 4 B x {n_total / 1e9:.3f}B / {W} ranks"),
            ("gradients", 4 * n_train / W, f"fp32, sharded: 4 B x {n_train / 1e9:.3f}B trainable / {W}"),
            ("AdamW state", 8 * n_train / W, f"exp_avg + exp_avg_sq, fp32: 8 B x {n_train / 1e9:.3f}B / {W}"),
            ("FSDP2 gathered", c * (root + 2 * block + root_t) + (c + 4) * block_t,
             f"root group {root / 1e9:.3f}B params + 2 blocks of {block / 1e6:.0f}M, and their gradients"),
            (f"activations{' (checkpointed)' if activation_checkpointing else ''}", activations,
             f"{tokens} tokens, {tiles} tiles per micro-batch; logits chunk {logprob_chunk} rows"),
            (f"  (activations {'without' if activation_checkpointing else 'with'} checkpointing)",
             (full if activation_checkpointing else kept) + head, "not counted: the other setting")]
    train = sum(b for name, b, _ in rows[:5])
    sample = rows[0][1] + rows[2][1]
    out = {"rows": rows, "world_size": W, "sampler": sampler, "gpu_bytes": gpu_bytes,
           "usable": gpu_bytes * (1 - RESERVED), "params_total": n_total, "params_trainable": n_train}
    kv_token = 2 * s["L"] * s["nkv"] * s["hd"] * c   # K and V of one token, every layer
    if sampler == "vllm":
        tp, util = vllm_tensor_parallel_size, vllm_gpu_memory_utilization
        weights, budget = c * n_total / tp, util * gpu_bytes
        out["kv_cache_tokens"] = (budget - weights) / (kv_token / tp)
        rows += [("vLLM weights (awake)", weights, f"{c} B x {n_total / 1e9:.3f}B / tensor parallel {tp}"),
                 ("vLLM KV cache (awake)", budget - weights,
                  f"gpu_memory_utilization {util} x GPU - weights: {out['kv_cache_tokens']:,.0f} tokens")]
        sample += budget
        out["vllm_weights_fit"] = budget > weights
    elif sampler == "builtin":
        kv = kv_token * rollout_sequences * rollout_tokens
        rows.append(("builtin KV cache (sampling)", kv, f"{rollout_sequences} rows x {rollout_tokens} tokens"))
        sample += kv + rows[3][1]   # sampling gathers the policy's groups like a forward
        if rollout_copy:
            rows.append(("builtin bf16 copy (sampling)", c * n_total, "rollout_dtype: the policy in bf16"))
            sample += c * n_total
    out.update(train=train, sample=sample,
               fits=train <= out["usable"] and sample <= out["usable"] and out.get("vllm_weights_fit", True))
    return out


def gpu_bytes(plan_gpu_gib, device):
    """The GPU memory to plan for: plan_gpu_gib when given, else this GPU's total, else DEFAULT_GPU_GIB."""
    if plan_gpu_gib > 0:
        return plan_gpu_gib * GIB
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return DEFAULT_GPU_GIB * GIB


def tiles_per_micro_batch(config, tokens, sequences, max_tiles):
    """Image tiles in one micro-batch of `sequences` sequences and `tokens` tokens: one image per sequence at the
    tile limit (max_tiles, else max_dynamic_patch; + the thumbnail), at most as many as the tokens can hold."""
    per_image = max_tiles or config.get("max_dynamic_patch", 12)
    per_image += per_image > 1 and config.get("use_thumbnail", True)
    s = shapes(config)
    image_tokens = (s["S"] // s["patch"]) ** 2 // s["ratio"]   # model.ModelConfig.num_image_token
    return min(sequences * per_image, tokens // image_tokens)


def format_plan(p):
    gib = lambda b: f"{b / GIB:8.1f} GiB"
    lines = [f"memory plan per GPU ({p['world_size']} GPUs of {p['gpu_bytes'] / GIB:.1f} GiB; "
             f"{p['params_total'] / 1e9:.2f}B parameters, {p['params_trainable'] / 1e9:.2f}B trainable):"]
    lines += [f"  {name:<40}{gib(b)}   {how}" for name, b, how in p["rows"]]
    usable = f"of {p['usable'] / GIB:.1f} GiB usable ({1 - RESERVED:.0%} of the GPU)"
    lines.append(f"  {'peak while training':<40}{gib(p['train'])}   {usable}")
    if p["sampler"] != "none":
        lines.append(f"  {'peak while sampling':<40}{gib(p['sample'])}   {usable}")
    lines.append(f"  {'fits' if p['fits'] else 'DOES NOT FIT'}")
    if not p.get("vllm_weights_fit", True):
        lines.append("  vLLM's weights alone exceed its gpu_memory_utilization share: no room for a KV cache")
    return "\n".join(lines)


def check_fits(p, what, verbose=True):
    """Prints the plan (verbose: the main rank); a run that cannot fit is refused before anything is allocated,
    with the plan's numbers."""
    if verbose:
        print(format_plan(p), flush=True)
    if not p["fits"]:
        raise ValueError(f"{what}: this run does not fit in GPU memory by the memory plan (more GPUs: "
                         f"torchrun --nnodes; fewer trainable modules; activation_checkpointing=True; a smaller "
                         f"micro-batch or vllm_gpu_memory_utilization):\n{format_plan(p)}")

# -----------------------------------------------------------------------------
# the plans of the training scripts' runs, read from their configs: sft.py's (and connector_tune.py's) and grpo.py's


def plan_gpus(cfg):
    """The GPUs a --plan is for: plan_gpus, else this launch's (torchrun's WORLD_SIZE)."""
    return cfg.plan_gpus or int(os.environ.get("WORLD_SIZE", 1))


def micro_batch_shape(cfg, sequence):
    """(tokens, sequences) of one micro-batch: micro_batch_tokens, else micro_batch_size sequences of `sequence`
    tokens (the longest a sample may be)."""
    tokens = cfg.micro_batch_tokens or cfg.micro_batch_size * sequence
    return tokens, max(1, tokens // sequence) if cfg.micro_batch_tokens else cfg.micro_batch_size


def sft_plan(cfg, world, device):
    """plan of an sft.py run on `world` GPUs (the checkpoint's config.json only): samples of max_seq_len tokens,
    packed or padded."""
    config = read_model_config(cfg.checkpoint)
    tokens, sequences = micro_batch_shape(cfg, cfg.max_seq_len)
    return plan(
        config, world_size=world, trainable=cfg.trainable, tokens=tokens,
        tiles=tiles_per_micro_batch(config, tokens, sequences, cfg.max_tiles),
        activation_checkpointing=cfg.activation_checkpointing, logprob_chunk=cfg.loss_chunk_tokens,
        gpu_bytes=gpu_bytes(cfg.plan_gpu_gib, device), compute_bytes=4 if cfg.compute_dtype == "float32" else 2)


def grpo_plan(cfg, world, device):
    """plan of a grpo.py run on `world` GPUs (init_from's config.json only): sequences of the longest prompt and
    response; the sampler that rollout_backend picks on this machine (auto: vLLM with a GPU)."""
    config = read_model_config(cfg.init_from)
    sequence = cfg.max_prompt_tokens + max(tokens for _, tokens in cfg.response_length_schedule)
    tokens, sequences = micro_batch_shape(cfg, sequence)
    return plan(
        config, world_size=world, trainable=cfg.trainable, tokens=tokens,
        tiles=tiles_per_micro_batch(config, tokens, sequences, cfg.max_tiles),
        activation_checkpointing=cfg.activation_checkpointing, logprob_chunk=cfg.logprob_chunk_size,
        gpu_bytes=gpu_bytes(cfg.plan_gpu_gib, device), compute_bytes=2 if cfg.dtype == "bfloat16" else 4,
        sampler=sampling.pick_backend(cfg.rollout_backend), vllm_tensor_parallel_size=cfg.vllm_tensor_parallel_size,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, rollout_sequences=cfg.rollout_batch_size,
        rollout_tokens=sequence, rollout_copy=cfg.samples_bf16_copy(world, on_gpu=True))
