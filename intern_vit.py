"""
InternViT, the vision encoder of InternVL / Skywork-R1V3, parameter for parameter as released (modeling_intern_vit.py
there): patch + bicubic-interpolated position embeddings, then pre-norm layers with layer scale and drop path.
Both released sizes: InternViT-300M (LayerNorm, qkv bias) and InternViT-6B (RMSNorm, q/k normalisation), chosen by
model.VisionConfig. model.py puts it in front of pixel shuffle, the mlp1 connector and the LLM.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class InternRMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()  # fp32 statistics, as released
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def make_norm(cfg, dim):
    if cfg.norm_type == "rms_norm":
        return InternRMSNorm(dim, cfg.layer_norm_eps)
    return nn.LayerNorm(dim, eps=cfg.layer_norm_eps)


class InternVisionEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.image_size, self.patch_size = cfg.image_size, cfg.patch_size
        self.class_embedding = nn.Parameter(torch.randn(1, 1, cfg.hidden_size))
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, cfg.patch_size)
        self.num_positions = (cfg.image_size // cfg.patch_size) ** 2 + 1
        self.position_embedding = nn.Parameter(torch.randn(1, self.num_positions, cfg.hidden_size))

    def forward(self, pixel_values):  # [N,3,H,W] -> [N,1+h*w,D]
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # [N,D,h,w]
        n, d, h, w = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(n, 1, d).to(patches.dtype)
        side = self.image_size // self.patch_size
        # bicubic interpolation of the 2-D position grid to the input size, in fp32 as released
        grid = self.position_embedding[:, 1:].float().reshape(1, side, side, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        grid = grid.reshape(1, d, h * w).permute(0, 2, 1).to(patches.dtype)
        pos = torch.cat([self.position_embedding[:, :1].to(patches.dtype), grid], dim=1)
        return torch.cat([cls, patches], dim=1) + pos


class InternAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_attention_heads, d // cfg.num_attention_heads
        self.qkv = nn.Linear(d, 3 * d, bias=cfg.qkv_bias)
        self.qk_normalization = cfg.qk_normalization
        if self.qk_normalization:  # over the full width (all heads concatenated), not per head
            self.q_norm = InternRMSNorm(d, cfg.layer_norm_eps)
            self.k_norm = InternRMSNorm(d, cfg.layer_norm_eps)
        self.proj = nn.Linear(d, d)

    def forward(self, x):  # [N,L,D]
        n, l, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.qk_normalization:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.view(n, l, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # bidirectional
        return self.proj(out.transpose(1, 2).reshape(n, l, d))


class InternMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


def drop_path(x, p, training):
    if p == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - p)
    return x * keep / (1 - p)


class InternVisionEncoderLayer(nn.Module):
    def __init__(self, cfg, drop_path_rate):
        super().__init__()
        self.norm1, self.norm2 = make_norm(cfg, cfg.hidden_size), make_norm(cfg, cfg.hidden_size)
        self.attn, self.mlp = InternAttention(cfg), InternMLP(cfg)
        self.ls1 = nn.Parameter(cfg.initializer_factor * torch.ones(cfg.hidden_size))  # layer scale
        self.ls2 = nn.Parameter(cfg.initializer_factor * torch.ones(cfg.hidden_size))
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        x = x + drop_path(self.attn(self.norm1(x)) * self.ls1, self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)) * self.ls2, self.drop_path_rate, self.training)


class InternVisionEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        rates = np.linspace(0, cfg.drop_path_rate, cfg.num_hidden_layers).tolist()  # linear drop-path schedule
        self.layers = nn.ModuleList(InternVisionEncoderLayer(cfg, r) for r in rates)


class InternVisionModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.embeddings = InternVisionEmbeddings(cfg)
        self.encoder = InternVisionEncoder(cfg)

    def forward(self, pixel_values, select_layer=-1):
        # hidden_states[k] is the output after k layers (k=0: embeddings), as in InternVL's output_hidden_states;
        # layers past the selected one are never run
        n_layers = len(self.encoder.layers)
        k = select_layer if select_layer >= 0 else n_layers + 1 + select_layer
        if not 0 <= k <= n_layers:
            raise ValueError(f"select_layer {select_layer} out of range for {n_layers} layers")
        x = self.embeddings(pixel_values)
        for layer in self.encoder.layers[:k]:
            x = layer(x)
        return x
