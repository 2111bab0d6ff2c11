"""
The Skywork-R1V3 / InternVL chat model, parameter for parameter as released:
InternViT encoder (intern_vit.py) -> pixel shuffle -> mlp1 connector -> transformers LLM (Qwen2/Qwen3/Llama).

Reads and writes the released checkpoint format (config.json + safetensors, original names), so a
checkpoint we save loads in vLLM's InternVLChatModel / SkyworkR1VChatModel and back here.
Also: a tiny config for CPU, and `python model.py CONFIG_OR_DIR [--json OUT]` to inspect parameter counts or
`--init_tiny OUT` to write a fresh tiny checkpoint. The tokens, chat template, tokenizer and prompts are in chat.py,
image tiling in data.py, the KV-cache decoder in sampling.py.
"""
import inspect
import json
import os
import shutil
import sys
from dataclasses import dataclass, field, fields, asdict
from pathlib import Path

import safetensors.torch   # save_file looked up at each call: tests inject a full disk there
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from transformers import AttentionInterface, AutoConfig, AutoModelForCausalLM
from transformers.dynamic_module_utils import get_relative_imports   # transformers' loader's regexes
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from chat import IMG_CONTEXT_TOKEN, build_tiny_tokenizer, load_tokenizer
from configurator import parse_config
from intern_vit import InternVisionModel

MODULE_PREFIXES = {"vision": "vision_model.", "connector": "mlp1.", "llm": "language_model."}

# -----------------------------------------------------------------------------
# config: mirrors the released config.json, unknown fields are kept and written back


@dataclass
class VisionConfig:
    hidden_size: int = 3200
    num_hidden_layers: int = 45
    num_attention_heads: int = 25
    intermediate_size: int = 12800
    patch_size: int = 14
    image_size: int = 448
    num_channels: int = 3
    qkv_bias: bool = False
    qk_normalization: bool = True
    norm_type: str = "rms_norm"  # "rms_norm" (InternViT-6B) | "layer_norm" (InternViT-300M)
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu"
    drop_path_rate: float = 0.0
    initializer_factor: float = 0.1
    initializer_range: float = 0.02
    extra: dict = field(default_factory=dict)


@dataclass
class ModelConfig:
    vision_config: VisionConfig = field(default_factory=VisionConfig)
    llm_config: dict = field(default_factory=dict)  # handed to transformers as is
    downsample_ratio: float = 0.5
    force_image_size: int = 448
    ps_version: str = "v2"
    select_layer: int = -1
    template: str = "internvl2_5"
    dynamic_image_size: bool = True
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    use_thumbnail: bool = True
    architectures: list = field(default_factory=lambda: ["InternVLChatModel"])
    model_type: str = "internvl_chat"
    extra: dict = field(default_factory=dict)
    # the directory config.json was read from (not written back): save_model copies its auto_map code files
    source_dir: str = field(default=None, compare=False)

    @property
    def num_image_token(self):
        patches = (self.force_image_size // self.vision_config.patch_size) ** 2
        return int(patches * self.downsample_ratio ** 2)

    @classmethod
    def from_json(cls, src):
        d = src if isinstance(src, dict) else json.loads(Path(src).read_text())
        d = dict(d)
        if d.get("model_type") not in ("internvl_chat", "skywork_chat"):
            raise ValueError(f"{src}: model_type {d.get('model_type')!r} is not internvl_chat or skywork_chat")
        for key in ("vision_config", "llm_config"):
            if key not in d:
                raise ValueError(f"{src}: config has no {key!r}")
        names = {f.name for f in fields(VisionConfig)} - {"extra"}
        v = d.pop("vision_config")
        vision = VisionConfig(**{k: v[k] for k in v if k in names}, extra={k: v[k] for k in v if k not in names})
        if vision.norm_type not in ("rms_norm", "layer_norm"):
            raise ValueError(f"{src}: vision_config.norm_type {vision.norm_type!r} not rms_norm/layer_norm")
        names = {f.name for f in fields(cls)} - {"extra", "vision_config", "source_dir"}
        cfg = cls(vision_config=vision, **{k: d[k] for k in d if k in names},
                  extra={k: d[k] for k in d if k not in names},
                  source_dir=None if isinstance(src, dict) else str(Path(src).parent))
        if cfg.ps_version not in ("v1", "v2"):
            raise ValueError(f"{src}: ps_version {cfg.ps_version!r} is not v1/v2")
        if cfg.force_image_size is None:
            cfg.force_image_size = vision.image_size
        return cfg

    def to_dict(self):
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if f.name not in ("extra", "vision_config", "source_dir")}
        v = {k: val for k, val in asdict(self.vision_config).items() if k != "extra"}
        d["vision_config"] = {**v, **self.vision_config.extra}
        return {**d, **self.extra}


def tiny_config(vocab_size=1024, **overrides):
    """A few-M-parameter model with the same structure (300M-style ViT: LayerNorm, qkv bias)."""
    vision = dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256, patch_size=14,
                  image_size=112, qkv_bias=True, qk_normalization=False, norm_type="layer_norm",
                  initializer_factor=1.0)
    vision.update(overrides.pop("vision", {}))
    llm = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=vocab_size, hidden_size=128,
               intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
               max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
               bos_token_id=None, eos_token_id=2, pad_token_id=0)
    llm.update(overrides.pop("llm", {}))
    d = dict(vision_config=vision, llm_config=llm, force_image_size=vision["image_size"], dynamic_image_size=False,
             max_dynamic_patch=1, use_thumbnail=False, model_type="internvl_chat",
             architectures=["InternVLChatModel"], template="skywork-r1v3")
    d.update(overrides)
    return ModelConfig.from_json(d)

# -----------------------------------------------------------------------------
# pixel shuffle + connector + LLM


def pixel_shuffle(x, scale_factor=0.5, ps_version="v2"):
    """[N,W,H,C] -> [N,W*s,H*s,C/s^2]: folds each 2x2 patch neighbourhood into channels (s=0.5)."""
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.reshape(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    if ps_version != "v1":  # v2 swaps the spatial axes back; v1 leaves them transposed
        x = x.permute(0, 2, 1, 3).contiguous()
    return x


def build_llm_config(llm_config):
    d = dict(llm_config)
    model_type = d.pop("model_type", None)
    if model_type is None:
        raise ValueError("llm_config has no model_type (e.g. 'qwen2')")
    d.pop("architectures", None)
    d.pop("transformers_version", None)
    d.pop("auto_map", None)
    cfg = AutoConfig.for_model(model_type, **d)
    cfg.architectures = llm_config.get("architectures")
    return cfg


# -----------------------------------------------------------------------------
# packed (padding-free) attention for the LLM: one row of several sequences, position ids restarting at each.
# transformers 5.19 detects such a row from position_ids (masking_utils.find_packed_sequence_indices) and, for
# "sdpa", builds a dense [T, T] block-causal mask: (sum T_i)^2 work and memory. "sdpa_packed" is sdpa everywhere
# else, but a packed row gets one causal sdpa call per sequence instead (sum T_i^2, no mask). The boundaries
# travel as cu_seq_lens_q/k and max_length_q/k, the varlen kwargs of transformers' flash_attention_2, so setting
# model.language_model.config._attn_implementation = "flash_attention_2" (GPU, flash-attn installed) runs the
# same packed rows through the varlen kernel. They also travel as seq_bounds, the same boundaries as host ints,
# read once per forward (packed_sequence_kwargs): no layer, and no activation-checkpoint recompute, waits on
# the device for them (flash_attention_2 passes unknown kwargs on and drops them: transformers 5.19
# integrations/flash_attention.py:40,104 -> modeling_flash_attention_utils.py:754).
#
# Shared prefix (GRPO's n rollouts of one prompt): a segment of the row is [prompt | response_1 | ... |
# response_n], the prompt (its image tokens included) once; positions run 0..P-1 over the prompt and P..P+L_i-1
# over each response, so every token has the position it has in its own sequence. Attention: the prompt is
# causal over itself; response i attends to the whole prompt and causally to itself, never to another
# response: exactly what sequence i's own causal attention sees, so logits, loss and gradients equal the
# per-sequence forward's (up to fp32 round-off), while the prompt's rows (and the ViT) run once, not n times.
# Kernel: per segment one causal sdpa over the prompt, then per response one sdpa of its L_i queries against
# [prompt K/V | its own K/V] with a lower-right causal mask [L_i, P + L_i] (key k visible to query q iff
# k <= P + q), built once per forward. That is sum_i L_i (P + L_i) attention work, the per-sequence cost minus
# the prompt's repeated queries, with no dense [S, S] mask over the segment (the sdpa_packed row's cost of a
# block mask). On CPU this is SDPA's fused kernel with a mask (flex attention runs on CPU only compiled, per
# layout: every micro-batch's lengths differ). On GPU the same calls are correct with any SDPA backend that
# takes a mask (flash does not; with GQA torch may pick the math kernel: not measured, no GPU was lent). The GPU
# kernel of choice is flash-attn varlen: causal=True is bottom-right aligned (flash-attn >= 2.1), so queries =
# the responses and keys = [prompt | response_i] gathered per response is this same attention without a mask.


def gqa_folded_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """sdpa_attention_forward, but a one-token query with a mask and GQA folds its heads into the KV heads instead
    of copying K/V to full width. transformers 5.19 passes enable_gqa to SDPA only without a mask on CPU/CUDA
    (integrations/sdpa_attention.py:30-37, 109-114); with one (every batched decode step) repeat_kv copies K and
    V of every layer to H heads (:18-27): the whole cache, g = H / H_kv times over, at every step. Folded: query
    [b,H,1,d] -> [b,H_kv,g,d] (head h = kv * g + j, as repeat_kv pairs them), the mask [b,1,1,k] broadcast over
    the g rows, one SDPA call with H_kv heads, out -> [b,1,H,d]: nothing copied but the query. A longer query
    (prefill, training) keeps transformers' path: its mask would need g copies, as large as K/V for q ~ k."""
    b, heads, q, d = query.shape
    if attention_mask is None or q != 1 or heads == key.shape[1] or dropout or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    folded = query.reshape(b, key.shape[1], heads // key.shape[1], d)   # [b,H_kv,g,d]: g query rows per KV head
    out = F.scaled_dot_product_attention(folded, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(b, 1, heads, d), None   # [b,H_kv,g,d] -> [b,q=1,H,d], as transformers' sdpa returns


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                          cu_seq_lens_q=None, seq_bounds=None, prefix_layout=None, prefix_masks=None,
                          **kwargs):   # query [1,H,T,d], key/value [1,H_kv,T,d]
    gqa = query.shape[1] != key.shape[1]
    attend = lambda q, k, v, **kw: F.scaled_dot_product_attention(q, k, v, scale=scaling, enable_gqa=gqa, **kw)
    if prefix_layout is not None:   # shared-prefix segments (see above), one row
        out = []
        for start, prompt_len, response_lens in prefix_layout:
            a = start + prompt_len
            out.append(attend(query[:, :, start:a], key[:, :, start:a], value[:, :, start:a], is_causal=True))
            for n in response_lens:
                k = torch.cat([key[:, :, start:start + prompt_len], key[:, :, a:a + n]], dim=2)
                v = torch.cat([value[:, :, start:start + prompt_len], value[:, :, a:a + n]], dim=2)
                out.append(attend(query[:, :, a:a + n], k, v, attn_mask=prefix_masks[prompt_len, n]))
                a += n
        return torch.cat(out, dim=2).transpose(1, 2).contiguous(), None
    if cu_seq_lens_q is None:
        return gqa_folded_sdpa_attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                         **kwargs)
    out = torch.cat([attend(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True)
                     for a, b in zip(seq_bounds[:-1], seq_bounds[1:])], dim=2)
    return out.transpose(1, 2).contiguous(), None   # [1,T,H,d] as transformers' sdpa returns


def packed_sdpa_mask(*args, attention_mask=None, **kwargs):
    """No mask for a row without padding (causal, or packed: the attention splits it); else sdpa's mask."""
    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def packed_sequence_kwargs(position_ids):
    """position_ids [1,T] restarting at 0 for each sequence -> the varlen kwargs (cu_seq_lens [n+1] int32) and
    seq_bounds, the same boundaries as host ints. One device-to-host read per forward."""
    if position_ids.shape[0] != 1:
        raise ValueError(f"a packed batch is one row (data.pack_samples(..., max_len=total)), got "
                         f"position_ids {list(position_ids.shape)}")
    starts = (position_ids[0] == 0).nonzero()[:, 0].tolist()   # the one host sync
    if not starts or starts[0] != 0:
        raise ValueError("packed position_ids must start at 0")
    bounds = (*starts, position_ids.shape[1])
    cu = torch.tensor(bounds, dtype=torch.int32, device=position_ids.device)
    longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest,
            "seq_bounds": bounds}


def shared_prefix_kwargs(layout, length, device):
    """layout [(start, prompt_len, [response_lens])] (data.collate_responses, shared_prefix) -> the attention
    kwargs of packed_sdpa_attention: the layout and one lower-right causal mask [L, P+L] per (P, L)."""
    pos = 0
    for start, prompt_len, response_lens in layout:
        if start != pos or prompt_len < 1 or min(response_lens, default=0) < 1:
            raise ValueError(f"shared-prefix layout {layout} does not tile the row: segment at {start}, "
                             f"expected {pos}, prompt {prompt_len}, responses {response_lens}")
        pos = start + prompt_len + sum(response_lens)
    if pos != length:
        raise ValueError(f"shared-prefix layout covers {pos} tokens, the row has {length}")
    shapes = {(p, n) for _, p, lens in layout for n in lens}
    masks = {(p, n): torch.arange(p + n, device=device)[None, :] <= p + torch.arange(n, device=device)[:, None]
             for p, n in shapes}
    return {"prefix_layout": tuple((s, p, tuple(lens)) for s, p, lens in layout), "prefix_masks": masks}


def register_packed_attention():
    AttentionInterface.register("sdpa_packed", packed_sdpa_attention)
    AttentionMaskInterface.register("sdpa_packed", packed_sdpa_mask)


class InternVLChatModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        vd, ld = config.vision_config.hidden_size, config.llm_config["hidden_size"]
        ratio = int(1 / config.downsample_ratio) ** 2
        self.vision_model = InternVisionModel(config.vision_config)
        self.mlp1 = nn.Sequential(nn.LayerNorm(vd * ratio), nn.Linear(vd * ratio, ld), nn.GELU(), nn.Linear(ld, ld))
        register_packed_attention()
        self.language_model = AutoModelForCausalLM.from_config(build_llm_config(config.llm_config),
                                                               attn_implementation="sdpa_packed")
        self.img_context_token_id = config.extra.get("img_context_token_id")
        # transformers renamed the LLM's past_key_values= to cache= after 5.20 (the old name warns, and goes in
        # 5.40): pass the name this version's signature declares, so one code runs on every version
        self.cache_kwarg = "cache" if "cache" in inspect.signature(self.language_model.model.forward).parameters \
            else "past_key_values"

    def extract_feature(self, pixel_values):  # [N,3,S,S] -> [N,num_image_token,D_llm]
        x = self.vision_model(pixel_values, self.config.select_layer)[:, 1:]  # drop CLS
        n, p, c = x.shape
        side = int(p ** 0.5)
        x = pixel_shuffle(x.reshape(n, side, side, c), self.config.downsample_ratio, self.config.ps_version)
        return self.mlp1(x.reshape(n, -1, x.shape[-1]))

    def forward(self, input_ids, pixel_values=None, image_flags=None, attention_mask=None, position_ids=None,
                past_key_values=None, return_hidden=False, prefix_layout=None):
        """prefix_layout: shared-prefix segments of a one-row batch (data.collate_responses with shared_prefix;
        see packed_sdpa_attention), position_ids required."""
        embeds = self.language_model.get_input_embeddings()(input_ids)  # [B,T,D]
        n_ctx = int((input_ids == self.img_context_token_id).sum()) if self.img_context_token_id is not None else 0
        if pixel_values is not None:
            if self.img_context_token_id is None:
                raise ValueError("img_context_token_id is not set (load a tokenizer with <IMG_CONTEXT>)")
            feats = self.extract_feature(pixel_values)  # [N,n_img,D]
            dummy = None
            if image_flags is not None:
                keep = image_flags.to(torch.bool).view(-1)
                feats, dummy = feats[keep], feats[~keep]
            n_feat = feats.shape[0] * feats.shape[1]
            if n_ctx != n_feat:
                raise ValueError(f"{n_ctx} {IMG_CONTEXT_TOKEN} tokens in input_ids but {n_feat} image features "
                                 f"({feats.shape[0]} tiles x {feats.shape[1]} tokens per tile)")
            mask = (input_ids == self.img_context_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(mask, feats.to(embeds.dtype))
            if dummy is not None and dummy.numel():  # keeps the ViT in the graph (FSDP/DDP) at zero weight
                embeds = embeds + 0.0 * dummy.sum().to(embeds.dtype)
        elif n_ctx:
            raise ValueError(f"{n_ctx} {IMG_CONTEXT_TOKEN} tokens in input_ids but 0 image features (no pixel_values)")
        # a row without attention mask whose position ids restart is packed (data.pack_samples): its sequences are
        # kept apart by the attention kernel (packed_sdpa_attention / flash varlen), never by a dense mask
        if prefix_layout is not None:
            attn = self.language_model.config._attn_implementation
            if attn != "sdpa_packed" or position_ids is None or attention_mask is not None or \
                    past_key_values is not None or input_ids.shape[0] != 1:
                raise ValueError(f"a shared-prefix forward is one row with position_ids, no mask, no cache and "
                                 f"sdpa_packed attention (got {attn}, input_ids {list(input_ids.shape)})")
            attn_kwargs = shared_prefix_kwargs(prefix_layout, input_ids.shape[1], embeds.device)
        elif position_ids is not None and attention_mask is None and past_key_values is None and \
                bool((position_ids[:, 1:] == 0).any()):
            attn_kwargs = packed_sequence_kwargs(position_ids)
        else:
            attn_kwargs = {}
        out = self.language_model.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                        use_cache=past_key_values is not None, **{self.cache_kwarg: past_key_values},
                                        **attn_kwargs)
        hidden = out.last_hidden_state
        return hidden if return_hidden else self.language_model.lm_head(hidden)

# -----------------------------------------------------------------------------
# build, trainable modules, load, save


def init_vision_and_connector(model):
    std = model.config.vision_config.initializer_range
    for m in list(model.vision_model.modules()) + list(model.mlp1.modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=std)
            nn.init.zeros_(m.bias) if m.bias is not None else None
    emb = model.vision_model.embeddings
    nn.init.trunc_normal_(emb.class_embedding, std=std)
    nn.init.trunc_normal_(emb.position_embedding, std=std)


def build_model(config, dtype=torch.float32, device="cpu"):
    """Random init (or parameter-free on device='meta', for counting and for loading)."""
    with torch.device(device):
        model = InternVLChatModel(config)
    if str(device) != "meta":
        init_vision_and_connector(model)
    return model.to(dtype)


def set_trainable(model, modules, verbose=True):
    modules = set(modules)
    if not modules <= set(MODULE_PREFIXES):
        raise ValueError(f"trainable modules {sorted(modules - set(MODULE_PREFIXES))} not in {sorted(MODULE_PREFIXES)}")
    counts = {}
    for name, p in model.named_parameters():
        module = next(m for m, pre in MODULE_PREFIXES.items() if name.startswith(pre))
        p.requires_grad_(module in modules)
        t, n = counts.get(module, (0, 0))
        counts[module] = (t + p.numel() * (module in modules), n + p.numel())
    for module, (t, n) in counts.items():
        if verbose:
            print(f"{module:>10}: {t:>15,d} trainable / {n:>15,d} params")
    return counts


def parameter_counts(model):
    counts = {m: 0 for m in MODULE_PREFIXES}
    for name, p in model.named_parameters():
        counts[next(m for m, pre in MODULE_PREFIXES.items() if name.startswith(pre))] += p.numel()
    return counts


def checkpoint_files(path):
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [path / f for f in sorted(set(weight_map.values()))]
    single = path / "model.safetensors"
    if single.exists():
        return [single]
    raise FileNotFoundError(f"{path}: no model.safetensors.index.json or model.safetensors")


def tied_lm_head(config):
    return bool(config.llm_config.get("tie_word_embeddings", False))


def load_model(path, dtype=torch.float32, device="cpu", allow_missing=False):
    """Builds on the meta device and fills tensors shard by shard: peak memory ~ one copy of the weights."""
    path = Path(path)
    config = ModelConfig.from_json(path / "config.json")
    model = build_model(config, device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if tied_lm_head(config):
        expected.pop("language_model.lm_head.weight", None)
    seen, unexpected, bad_shape = set(), [], []
    for file in checkpoint_files(path):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():
                if key not in expected:
                    unexpected.append(f"{key} (in {file.name})")
                    continue
                t = f.get_slice(key)
                shape = tuple(t.get_shape())
                if shape != expected[key]:
                    bad_shape.append(f"{key}: checkpoint {list(shape)} vs model {list(expected[key])} (in {file.name})")
                    continue
                set_tensor(model, key, f.get_tensor(key).to(device=device, dtype=dtype))
                seen.add(key)
    missing = sorted(set(expected) - seen)
    errors = [f"unexpected tensor {u}" for u in unexpected] + [f"mis-shaped tensor {b}" for b in bad_shape]
    if missing and not allow_missing:
        errors += [f"missing tensor {m}" for m in missing]
    if errors:
        raise ValueError(f"{path}: checkpoint does not match the model:\n  " + "\n  ".join(errors))
    for key in missing:  # allowed: fresh init, listed
        shape = expected[key]
        t = torch.zeros(shape) if len(shape) < 2 else torch.randn(shape) * config.vision_config.initializer_range
        if key.endswith(("norm.weight", "norm1.weight", "norm2.weight", "ls1", "ls2", "layernorm.weight")):
            t = torch.ones(shape)
        set_tensor(model, key, t.to(device=device, dtype=dtype))
    if missing:
        print(f"load_model: {len(missing)} tensors missing from {path}, freshly initialised: {missing}")
    if tied_lm_head(config):
        model.language_model.lm_head.weight = model.language_model.get_input_embeddings().weight
    materialize_buffers(model, device)
    if (path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists():
        model.img_context_token_id = load_tokenizer(path).convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    return model


def set_tensor(model, key, tensor):
    module_name, _, name = key.rpartition(".")
    module = model.get_submodule(module_name)
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(tensor, requires_grad=module._parameters[name].requires_grad)
    else:
        module._buffers[name] = tensor


def materialize_buffers(model, device):
    # non-persistent buffers (rotary inv_freq) are not in checkpoints: rebuild their modules off the meta device
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            if not hasattr(module, "config"):
                raise ValueError(f"cannot materialise buffers of {name} ({type(module).__name__})")
            parent, _, attr = name.rpartition(".")
            with torch.device(device):
                setattr(model.get_submodule(parent), attr, type(module)(config=module.config))
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise ValueError(f"tensors left on the meta device: {leftover[:10]}")


OWN_CONFIG_CODE = Path(__file__).with_name("configuration_internvl_chat.py")


def remote_code_files(config):
    """The .py files of config.source_dir that config.json's auto_map names, plus their relative imports
    (transitively); files the source lacks are skipped. vLLM 0.32 registers neither internvl_chat nor skywork_chat,
    so LLM() reads the config through AutoConfig's remote code (vllm/transformers_utils/config.py:398-404): a
    checkpoint without configuration_*.py fails with OSError.
    A checkpoint is untrusted input: every module name must be a plain Python identifier naming a regular file
    inside source_dir (no "../", no absolute path, no symlink leading out), else a ValueError naming config.json
    and the auto_map entry; save_model copies only these names, so it writes nothing outside its destination."""
    source = getattr(config, "source_dir", None)   # None: a config built in memory
    if not source:
        return []
    source = Path(source).resolve()
    auto_map = config.extra.get("auto_map") or {}
    if not isinstance(auto_map, dict):
        raise ValueError(f"{source / 'config.json'}: auto_map must be an object, got {type(auto_map).__name__}")
    # "repo--module.Class" -> module (transformers' form, dynamic_module_utils.get_class_from_dynamic_module)
    todo = [(r.split("--")[-1].rsplit(".", 1)[0] if isinstance(r, str) else r,
             f"{source / 'config.json'}: auto_map.{key} = {r!r}")
            for key, v in auto_map.items() for r in (v if isinstance(v, (list, tuple)) else [v]) if r]
    found = []
    while todo:
        module, where = todo.pop()
        if not isinstance(module, str) or not module.isidentifier():
            raise ValueError(f"{where}: module name {module!r} is not a plain Python identifier (remote code must "
                             f"be a .py file directly inside the checkpoint directory)")
        name = f"{module}.py"
        file = source / name
        if name in found or not (file.is_file() or file.is_symlink()):
            continue
        if file.resolve().parent != source or not file.resolve().is_file():   # a symlink out of the checkpoint
            raise ValueError(f"{where}: {file} resolves to {file.resolve()}, outside {source}")
        found.append(name)
        todo += [(m, f"{file}: relative import .{m}") for m in get_relative_imports(file)]
    return sorted(found)


def save_model(path, state_dict, config, tokenizer=None, max_shard_bytes=2 ** 30):
    """config.json + safetensors shards (+ index when >1) + tokenizer + the source's remote code (auto_map),
    under the original names.
    Atomic: written into a temporary sibling directory, then renamed into place."""
    path = Path(path)
    code_files = remote_code_files(config)   # checked before anything is written
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state_dict = {k: v for k, v in state_dict.items()
                  if not (tied_lm_head(config) and k == "language_model.lm_head.weight")}
    shards, current, size = [], {}, 0
    for key, tensor in state_dict.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = tensor.detach().to("cpu").contiguous()
        size += nbytes
    shards.append(current)
    if len(shards) == 1:
        safetensors.torch.save_file(shards[0], str(tmp / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            safetensors.torch.save_file(shard, str(tmp / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        total = sum(t.numel() * t.element_size() for t in state_dict.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config_json = config.to_dict()
    for name in code_files:   # a checkpoint of a checkpoint still loads in vLLM
        shutil.copy2(Path(config.source_dir) / name, tmp / name)
    auto_config = (config_json.get("auto_map") or {}).get("AutoConfig", "")
    if f"{auto_config.split('--')[-1].rsplit('.', 1)[0]}.py" not in code_files:
        # no config code to copy (init_tiny, a config built in memory, a source without it): ours, so that
        # AutoConfig.from_pretrained(path, trust_remote_code=True), which vLLM calls, loads
        config_json["auto_map"] = {**(config_json.get("auto_map") or {}),
                                   "AutoConfig": f"{OWN_CONFIG_CODE.stem}.InternVLChatConfig"}
        shutil.copy2(OWN_CONFIG_CODE, tmp / OWN_CONFIG_CODE.name)
    (tmp / "config.json").write_text(json.dumps(config_json, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    # on disk before the rename commits them: after a power loss a renamed dir could hold empty files
    for f in [*sorted(q for q in tmp.rglob("*") if q.is_file()), tmp]:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path

# -----------------------------------------------------------------------------
# CLI: inspect a config (no weights), or write a fresh tiny checkpoint for the CPU demo
#   python model.py CONFIG.json|CHECKPOINT_DIR [--json OUT]
#   python model.py --init_tiny OUT_DIR [--corpus TEXT_FILE] [--overrides JSON] [--seed N]


@dataclass
class CLIConfig:
    json: str = ""           # inspect: also write {total, modules, parameters} to this file
    init_tiny: str = ""      # write a fresh tiny checkpoint (tiny_config) to this directory instead
    corpus: str = ""         # init_tiny: the tokenizer's BPE is fit on this file's lines
    overrides: str = "{}"    # init_tiny: tiny_config overrides, JSON: {"vision": {"image_size": 56}}
    vocab_size: int = 1024   # init_tiny
    seed: int = 0            # init_tiny: seed of the weight init


def init_tiny(cfg):
    corpus = Path(cfg.corpus).read_text().splitlines() if cfg.corpus else None
    tokenizer = build_tiny_tokenizer(corpus, vocab_size=cfg.vocab_size)
    config = tiny_config(vocab_size=len(tokenizer), **json.loads(cfg.overrides))
    config.llm_config.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(cfg.seed)
    model = build_model(config)
    save_model(cfg.init_tiny, model.state_dict(), config, tokenizer)
    print(f"wrote a fresh tiny model to {cfg.init_tiny}: {parameter_counts(model)}, "
          f"vocab {len(tokenizer)}")
    return 0


def main(argv):
    usage = ("usage: python model.py CONFIG.json|CHECKPOINT_DIR [--json OUT]\n"
             "       python model.py --init_tiny OUT_DIR [--corpus TEXT_FILE] [--overrides JSON] [--seed N]")
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print(usage)
        return 1
    # the first argument, unless a flag, is the config to inspect (not a configurator config file)
    src = "" if argv[0].startswith("-") else argv[0]
    cfg = parse_config(CLIConfig, argv[1:] if src else argv)
    if cfg.init_tiny:
        return init_tiny(cfg)
    if not src:
        raise SystemExit(f"model.py: give the CONFIG.json or CHECKPOINT_DIR to inspect\n{usage}")
    src = Path(src)
    config = ModelConfig.from_json(src / "config.json" if src.is_dir() else src)
    model = build_model(config, device="meta")
    counts = parameter_counts(model)
    total = sum(counts.values())
    print(f"{src}: {config.architectures[0]} ({config.model_type}), LLM {config.llm_config.get('architectures')}")
    print(f"image tokens per tile: {config.num_image_token}")
    for module, n in counts.items():
        print(f"{module:>10}: {n:>15,d} ({n / 1e9:.3f}B)")
    print(f"{'total':>10}: {total:>15,d} ({total / 1e9:.3f}B)")
    if cfg.json:
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        if tied_lm_head(config):
            shapes.pop("language_model.lm_head.weight", None)
        Path(cfg.json).write_text(json.dumps({"total": total, "modules": counts, "parameters": shapes}, indent=1))
        print(f"wrote {cfg.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
