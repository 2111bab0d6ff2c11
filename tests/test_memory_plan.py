"""memory_plan.py: its arithmetic against hand-computed numbers for the released InternVL3-1B and Skywork-R1V3-38B
shapes, the refusal of a run that cannot fit, and --plan printing the plan without loading anything."""
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import configurator  # noqa: E402
import connector_tune  # noqa: E402
import grpo  # noqa: E402
import memory_plan  # noqa: E402
import model as M  # noqa: E402
import sft  # noqa: E402
import train_utils as tu  # noqa: E402

GIB = 2 ** 30
# The released shapes. InternVL3-1B: InternViT-300M-448px-V2_5 (24 layers, 16 heads, width 1024, MLP 4096, LayerNorm,
# qkv bias) + Qwen2.5-0.5B (https://huggingface.co/OpenGVLab/InternVL3-1B/blob/main/config.json; the ViT's shape
# also in mbridge's InternVL3 bridge, deepwiki.com/ISEEKYAN/mbridge/4.3.5-internvl3-vision-language-models).
INTERNVL3_1B = {
    "model_type": "internvl_chat", "downsample_ratio": 0.5, "force_image_size": 448, "max_dynamic_patch": 12,
    "use_thumbnail": True,
    "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                      "intermediate_size": 4096, "patch_size": 14, "image_size": 448, "qkv_bias": True,
                      "qk_normalization": False, "norm_type": "layer_norm"},
    "llm_config": {"model_type": "qwen2", "vocab_size": 151674, "hidden_size": 896, "intermediate_size": 4864,
                   "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                   "tie_word_embeddings": False}}
# Skywork-R1V3-38B: InternViT-6B-448px-V2_5 (45 layers, 25 heads, width 3200, MLP 12800, RMSNorm, qk norm) +
# the InternVL3-38B LLM (Qwen2.5-32B shape) (https://huggingface.co/Skywork/Skywork-R1V3-38B/blob/main/config.json)
R1V3_38B = {
    "model_type": "skywork_chat", "downsample_ratio": 0.5, "force_image_size": 448, "max_dynamic_patch": 12,
    "use_thumbnail": True,
    "vision_config": {"hidden_size": 3200, "num_hidden_layers": 45, "num_attention_heads": 25,
                      "intermediate_size": 12800, "patch_size": 14, "image_size": 448, "qkv_bias": False,
                      "qk_normalization": True, "norm_type": "rms_norm"},
    "llm_config": {"model_type": "qwen2", "vocab_size": 151674, "hidden_size": 5120, "intermediate_size": 27648,
                   "num_hidden_layers": 64, "num_attention_heads": 40, "num_key_value_heads": 8,
                   "tie_word_embeddings": False}}
CPU = torch.device("cpu")


def totals(config):
    counts = memory_plan.parameter_counts(config)
    counts.pop("_blocks")
    return {m: b + r for m, (b, r) in counts.items()}


def test_parameter_counts_by_hand_and_as_built():
    # InternVL3-1B. ViT layer: 2 LayerNorms 4*1024, qkv 1024*3072 + 3072, proj 1024^2 + 1024, fc1 1024*4096 + 4096,
    # fc2 4096*1024 + 1024, ls1/ls2 2*1024 = 12,598,272; x 24 + embeddings (1024 class + 3*14*14*1024 + 1024 conv
    # + 1025*1024 positions = 1,653,760)
    assert totals(INTERNVL3_1B)["vision"] == 24 * 12_598_272 + 1_653_760 == 304_012_288
    # mlp1: LayerNorm 2*4096, 4096*896 + 896, 896*896 + 896
    assert totals(INTERNVL3_1B)["connector"] == 8192 + 3_670_912 + 803_712 == 4_482_816
    # Qwen2 layer: q 896^2 + 896, k and v 2*(896*128 + 128), o 896^2, MLP 3*896*4864, 2 norms = 14,912,384;
    # x 24 + embeddings and lm_head 2*151674*896 + final norm 896
    assert totals(INTERNVL3_1B)["llm"] == 24 * 14_912_384 + 271_799_808 + 896 == 629_697_920
    # R1V3-38B. ViT layer: 2 RMSNorms 6400, qkv 3*3200^2, q/k norms 6400, proj 3200^2 + 3200, fc1 3200*12800 +
    # 12800, fc2 12800*3200 + 3200, ls 6400 = 122,918,400; embeddings 3200 + 588*3200 + 3200 + 1025*3200 = 5,168,000
    # LLM layer: q 5120^2 + 5120, k/v 2*(5120*1024 + 1024), o 5120^2, MLP 3*5120*27648, norms 10240 = 487,605,248
    r = totals(R1V3_38B)
    assert r["vision"] == 45 * 122_918_400 + 5_168_000 == 5_536_496_000
    assert r["connector"] == 2 * 12800 + 12800 * 5120 + 5120 + 5120 * 5120 + 5120 == 91_786_240
    assert r["llm"] == 64 * 487_605_248 + 2 * 151674 * 5120 + 5120 == 32_759_882_752
    # and model.py builds exactly these (meta device: no memory)
    assert M.parameter_counts(M.build_model(M.ModelConfig.from_json(INTERNVL3_1B), device="meta")) == \
        totals(INTERNVL3_1B)


def test_38b_grpo_plan_by_hand(tmp_path):
    """config/grpo_38b.py on 16 GPUs of 79.19 GiB: every module trainable, bf16 compute, one 4096 + 8192-token
    sequence per micro-batch with one 13-tile image, checkpointed, vLLM TP 8 at 0.35."""
    cfg = configurator.parse_config(grpo.Config, [str(REPO / "config/grpo_38b.py")])
    p = memory_plan.plan(R1V3_38B, world_size=16, trainable=cfg.trainable, tokens=12288, tiles=13,
                         activation_checkpointing=True, logprob_chunk=1024, gpu_bytes=79.19 * GIB,
                         sampler="vllm", vllm_tensor_parallel_size=8, vllm_gpu_memory_utilization=0.35)
    rows = {name: b for name, b, _ in p["rows"]}
    N = 5_536_496_000 + 91_786_240 + 32_759_882_752
    assert rows["parameters"] == rows["gradients"] == 4 * N / 16 == 9_597_041_248
    assert rows["AdamW state"] == 8 * N / 16
    # FSDP2: root group (ViT embeddings 5,168,000 + mlp1 91,786,240 + embed/lm_head/norm 1,553,146,880) in bf16
    # and its bf16 grads, two LLM blocks (487,605,248) in bf16, one block's grads in bf16 + fp32
    root = 5_168_000 + 91_786_240 + 2 * 151674 * 5120 + 5120
    assert rows["FSDP2 gathered"] == 2 * root * 2 + 2 * 2 * 487_605_248 + 6 * 487_605_248
    # per token per layer, bf16: Qwen2 2*(4*5120 + 56*128 + 48*128 + 40*128 + 4*27648) + 4*(2*5120 + 40)
    llm_a = 2 * (20480 + 7168 + 6144 + 5120 + 110592) + 4 * (10240 + 40)
    assert llm_a == 340_128
    # InternViT-6B: 2*(10*3200 + 2*12800 + 4*3200) + 4*(25 + 2*3200 + 4*3200)
    vit_a = 2 * (32000 + 25600 + 12800) + 4 * (25 + 6400 + 12800)
    vit_tokens = 13 * 1025
    head = 12288 * 2 * 5120 + 8 * 1024 * 151674 + 4 * 151674 * 5120
    checkpointed = 12288 * 64 * 2 * 5120 + vit_tokens * 45 * 2 * 3200 + max(12288 * llm_a, vit_tokens * vit_a)
    assert rows["activations (checkpointed)"] == checkpointed + head
    assert rows["  (activations without checkpointing)"] == 12288 * 64 * llm_a + vit_tokens * 45 * vit_a + head
    weights = 2 * N / 8
    assert rows["vLLM weights (awake)"] == weights
    assert rows["vLLM KV cache (awake)"] == pytest.approx(0.35 * 79.19 * GIB - weights)
    # K and V of 64 layers x 8 heads x 128, bf16, over TP 8: 32 KiB per token
    assert p["kv_cache_tokens"] == pytest.approx((0.35 * 79.19 * GIB - weights) / 32768)
    train = 16 * N / 16 + rows["FSDP2 gathered"] + checkpointed + head
    assert p["train"] == pytest.approx(train) and p["train"] / GIB == pytest.approx(65.6, abs=0.05)
    assert p["sample"] == pytest.approx(12 * N / 16 + 0.35 * 79.19 * GIB)
    assert p["fits"] and p["usable"] == pytest.approx(0.9 * 79.19 * GIB)
    # the same run through grpo.py's reading of its config (rollout_backend="vllm" there) and of config.json
    (tmp_path / "config.json").write_text(json.dumps(R1V3_38B))
    got = memory_plan.grpo_plan(configurator.parse_config(grpo.Config, [
        str(REPO / "config/grpo_38b.py"), "--plan_gpu_gib=79.19", f"--init_from={tmp_path}"]), 16, CPU)
    assert got["rows"] == p["rows"] and got["train"] == p["train"]


def test_1b_sft_plan_by_hand():
    """InternVL3-1B, one GPU, connector only, 4096 tokens with no image, not checkpointed."""
    p = memory_plan.plan(INTERNVL3_1B, world_size=1, trainable=["connector"], tokens=4096, tiles=0,
                         activation_checkpointing=False, logprob_chunk=512, gpu_bytes=80 * GIB)
    rows = {name: b for name, b, _ in p["rows"]}
    N, Nt = 304_012_288 + 4_482_816 + 629_697_920, 4_482_816
    assert (rows["parameters"], rows["gradients"], rows["AdamW state"]) == (4 * N, 4 * Nt, 8 * Nt)
    # Qwen2.5-0.5B layer per token: 2*(4*896 + 18*64 + 16*64 + 14*64 + 4*4864) + 4*(2*896 + 14) = 59,448 B;
    # no lm_head gradient (the LLM is frozen)
    assert rows["activations"] == 4096 * 24 * 59_448 + 4096 * 2 * 896 + 8 * 512 * 151674
    # root: ViT embeddings 1,653,760 + mlp1 + embed/lm_head/norm; blocks: the LLM's 14,912,384; grads: mlp1 only
    root = 1_653_760 + 4_482_816 + 271_799_808 + 896
    assert rows["FSDP2 gathered"] == 2 * root + 2 * 2 * 14_912_384 + 2 * 4_482_816
    assert p["fits"] and "peak while sampling" not in memory_plan.format_plan(p)


def test_a_run_that_cannot_fit_is_refused_with_its_numbers():
    cfg = configurator.parse_config(grpo.Config, [str(REPO / "config/grpo_38b.py"), "--plan_gpu_gib=79.19",
                                                  f"--init_from={REPO / 'config/skywork-r1v3-38b.json'}"])
    p = memory_plan.grpo_plan(cfg, 8, CPU)   # one node of 8 x 80 GB
    assert not p["fits"] and p["train"] / GIB == pytest.approx(101.3, abs=0.05)
    with pytest.raises(ValueError, match="does not fit") as e:
        memory_plan.check_fits(p, "grpo.py on 8 GPUs", verbose=False)
    assert "AdamW state" in str(e.value) and "DOES NOT FIT" in str(e.value) and "101.3 GiB" in str(e.value)
    # the 38B defaults agree with the plan: GRPO and SFT on two nodes of 8, connector-only tuning on one
    assert memory_plan.grpo_plan(cfg, 16, CPU)["fits"]
    sft_cfg = configurator.parse_config(sft.Config, [str(REPO / "config/sft_38b.py"), "--plan_gpu_gib=79.19",
                                                     f"--checkpoint={REPO / 'config/skywork-r1v3-38b.json'}"])
    assert memory_plan.sft_plan(sft_cfg, 16, CPU)["fits"] and not memory_plan.sft_plan(sft_cfg, 8, CPU)["fits"]
    ct_cfg = configurator.parse_config(connector_tune.Config, [
        str(REPO / "config/connector_tune_38b.py"), "--plan_gpu_gib=79.19",
        f"--checkpoint={REPO / 'config/skywork-r1v3-38b.json'}"])
    assert memory_plan.sft_plan(ct_cfg, 8, CPU)["fits"]


def test_plan_prints_and_exits_without_loading_anything(tmp_path, capsys):
    """A directory holding only config.json (no weights, no tokenizer) and data that does not exist: --plan prints
    the plan and returns; without it, the same run fails on what it would load."""
    (tmp_path / "config.json").write_text(json.dumps(INTERNVL3_1B))
    args = [f"--init_from={tmp_path}", "--data=missing.jsonl", f"--out_dir={tmp_path / 'out'}",
            "--rollout_backend=builtin", "--plan_gpus=2"]
    assert grpo.main(configurator.parse_config(grpo.Config, args + ["--plan"])) == []
    out = capsys.readouterr().out
    assert "memory plan per GPU (2 GPUs of 79.2 GiB" in out and "builtin KV cache" in out and "fits" in out
    assert not (tmp_path / "out").exists()
    assert sft.main([f"--checkpoint={tmp_path}", "--plan"]) == 0
    assert "memory plan per GPU (1 GPUs" in capsys.readouterr().out
    with pytest.raises(Exception):   # the check that --plan skipped: there is nothing to load
        grpo.main(configurator.parse_config(grpo.Config, args))


def test_sft_on_a_gpu_refuses_a_run_that_cannot_fit_before_loading(tmp_path, capsys):
    """sft.train's startup check on a GPU rank (a cuda Dist; nothing touches the device before the plan): the 38B
    config, all modules trainable, on one 80 GB GPU is refused with the plan, before the data or the weights
    (neither exists here) are read."""
    (tmp_path / "config.json").write_text(json.dumps(R1V3_38B))
    cfg = configurator.parse_config(sft.Config, [f"--checkpoint={tmp_path}", "--data=missing.jsonl",
                                                 "--plan_gpu_gib=79.19", f"--out_dir={tmp_path / 'out'}"])
    with pytest.raises(ValueError, match="does not fit") as e:
        sft.train(cfg, dist=tu.Dist(device=torch.device("cuda", 0)))
    assert "parameters" in str(e.value) and "143.0 GiB" in str(e.value)   # 4 B x 38.39B on one GPU
    assert "memory plan per GPU (1 GPUs of 79.2 GiB" in capsys.readouterr().out
