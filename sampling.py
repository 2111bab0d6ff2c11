"""
Sampling responses, shared by grpo.py (rollouts), sft.py (rejection sampling) and eval.py: the token ids that
end a response and those never sampled, the backend choice, the vLLM engine arguments, and two samplers with
the same call

    sampler.sample(prompts, n, max_tokens, stop=(), banned_ids=()) -> per prompt, n dicts
        {"token_ids" (the stop token included), "logprobs" (of each sampled token), "text" (decoded with the
         special tokens, <think> kept, a trailing <|im_end|> cut), "num_tokens", "finish_reason": "stop"|"length"}

  BuiltinSampler  model.generate: CPU, tests, small models. Prompts {"input_ids", "pixel_values"}: image tokens
                  expanded by us (data.encode_prompt).
  VLLMSampler     vLLM's LLM.generate (GPU only, imported lazily). Prompts {"prompt", "images"}: ChatML text with
                  <image> placeholders and PIL images; vLLM's InternVL processor tiles the images and expands each
                  <image> from the checkpoint's config, as model.expand_image_tokens does.

n is one count for all prompts or one per prompt. stop: extra stop strings (eval's thinking budget stops at
"</think>"); banned_ids: extra never-sampled token ids (eval's NoWait). Temperature and top-p are the sampler's.

"logprobs" are raw in both samplers: log_softmax of the model's unprocessed logits at the sampled token (before
temperature, top-p and the banned ids), i.e. what GRPO's training forward computes for the same token. vLLM
returns these by default (logprobs_mode="raw_logprobs", vllm/config/model.py:287 in 0.32.0; set explicitly
below); model.sample_next returns the same.

vLLM references are to the vllm==0.32.0 wheel that requirements-gpu.txt pins.
"""
import random

import torch

import data
import model
import train_utils as tu

EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")   # end of the assistant turn (ChatML), end of the document


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
    ids = [single_token_id(tokenizer, t) for t in (model.IMG_START_TOKEN, model.IMG_END_TOKEN, model.IMG_CONTEXT_TOKEN)]
    return [i for i in ids if i is not None]


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


def build_vllm(engine_kwargs):
    """vllm.LLM(**engine_kwargs), leaving this process's random/numpy/torch generators as they were: the worker
    reseeds them all with the engine's seed at init and after profiling (v1/worker/gpu_worker.py:522, 1062 ->
    utils/torch_utils.py:542-553), which would override a trainer's set_seed(seed + rank)."""
    import vllm   # GPU-only dependency (requirements-gpu.txt): imported only when this backend is used
    state = tu.get_rng_state()
    llm = vllm.LLM(**engine_kwargs)
    tu.set_rng_state(state)
    return llm


class BuiltinSampler:
    """model.generate over `batch_size` rows (prompt copies) at a time. generator: reseed it for reproducible
    samples (GRPO seeds every step). sync_ranks: under FSDP every rank runs the same number of forwards, and an
    image-free batch carries a dummy tile so every rank runs the ViT too."""

    def __init__(self, net, tokenizer, temperature=1.0, top_p=1.0, batch_size=64, seed=0, sync_ranks=False):
        self.net, self.tokenizer, self.temperature, self.top_p = net, tokenizer, temperature, top_p
        self.batch_size, self.sync_ranks = batch_size, sync_ranks
        self.pad_id = tokenizer.pad_token_id or 0
        self.stop_ids, self.image_ids = stop_token_ids(tokenizer), image_token_ids(tokenizer)
        self.device = next(net.parameters()).device
        self.generator = torch.Generator(self.device).manual_seed(seed)

    def sample(self, prompts, n, max_tokens, stop=(), banned_ids=()):
        counts = [n] * len(prompts) if isinstance(n, int) else n
        rows = [p for p, k in zip(prompts, counts) for _ in range(k)]
        # a stop string that is not one token cannot stop model.generate: the caller finds it in the text
        extra = [single_token_id(self.tokenizer, s) for s in stop]
        stop_ids = self.stop_ids + [i for i in extra if i is not None]
        banned = sorted(set(banned_ids) | set(self.image_ids))
        dummy_tile_size = self.net.config.force_image_size if self.sync_ranks else None
        to_device = lambda t: None if t is None else t.to(self.device)
        outs = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            batch = data.collate_left_padded(chunk, self.pad_id, dummy_tile_size)   # the chunk's tiles, in order
            outs += model.generate(self.net, [p["input_ids"] for p in chunk],
                                   pixel_values=to_device(batch["pixel_values"]),
                                   image_flags=to_device(batch["image_flags"]), max_new_tokens=max_tokens,
                                   temperature=self.temperature, top_p=self.top_p, stop_token_ids=stop_ids,
                                   banned_token_ids=banned, pad_token_id=self.pad_id, generator=self.generator,
                                   sync_ranks=self.sync_ranks)
        for o in outs:
            o.update(text=strip_eos(self.tokenizer.decode(o["token_ids"], skip_special_tokens=False)),
                     num_tokens=len(o["token_ids"]))
        rest = iter(outs)
        return [[next(rest) for _ in range(k)] for k in counts]


class VLLMSampler:
    """LLM.generate, one request per prompt with its n samples. A prompt that also carries our own input_ids
    (data.encode_prompt) must come out of vLLM's processor with exactly those ids: GRPO trains on ours, and a
    silent mismatch would train on a corrupted prompt (trl#6401)."""

    def __init__(self, llm, tokenizer, temperature=1.0, top_p=1.0):
        self.llm, self.temperature, self.top_p = llm, temperature, top_p
        self.stop_ids, self.image_ids = stop_token_ids(tokenizer), image_token_ids(tokenizer)

    def sample(self, prompts, n, max_tokens, stop=(), banned_ids=(), seed=None):
        """seed: one SamplingParams(seed=...) per request, drawn from it (vLLM gives the k-th of a request's n
        samples seed + k, v1/engine/parallel_sampling.py:69-81). None: vLLM draws each request's seed from the
        global numpy generator (v1/worker/gpu/sample/states.py:54-58), seeded by the engine's seed."""
        from vllm import SamplingParams
        counts = [n] * len(prompts) if isinstance(n, int) else n
        draw = random.Random(seed)
        seeds = [None if seed is None else draw.getrandbits(31) for _ in prompts]
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
