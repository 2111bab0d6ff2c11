import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.profiler import ProfilerActivity, profile
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import benchmarks
import chat
import connector_tune
import data
import decode
import entropy
import eval as E
import grpo
import model as M
import sft
import train_utils as tu

ROOT = Path(__file__).resolve().parents[1]


def expected_released_names(cfg):
    """Parameter names and shapes as listed for the released checkpoints (reference note §2), written out by hand."""
    v, l = cfg["vision_config"], cfg["llm_config"]
    D, I, P = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    side = v["image_size"] // P
    out = {
        "vision_model.embeddings.class_embedding": [1, 1, D],
        "vision_model.embeddings.patch_embedding.weight": [D, 3, P, P],
        "vision_model.embeddings.patch_embedding.bias": [D],
        "vision_model.embeddings.position_embedding": [1, side * side + 1, D],
    }
    for i in range(v["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}."
        out.update({p + "ls1": [D], p + "ls2": [D], p + "attn.qkv.weight": [3 * D, D], p + "attn.proj.weight": [D, D],
                    p + "attn.proj.bias": [D], p + "mlp.fc1.weight": [I, D], p + "mlp.fc1.bias": [I],
                    p + "mlp.fc2.weight": [D, I], p + "mlp.fc2.bias": [D], p + "norm1.weight": [D], p + "norm2.weight": [D]})
        if v["qkv_bias"]:
            out[p + "attn.qkv.bias"] = [3 * D]
        if v["qk_normalization"]:
            out.update({p + "attn.q_norm.weight": [D], p + "attn.k_norm.weight": [D]})
        if v["norm_type"] == "layer_norm":
            out.update({p + "norm1.bias": [D], p + "norm2.bias": [D]})
    H, V, F = l["hidden_size"], l["vocab_size"], l["intermediate_size"]
    kv = H // l["num_attention_heads"] * l["num_key_value_heads"]
    C = D * 4
    out.update({"mlp1.0.weight": [C], "mlp1.0.bias": [C], "mlp1.1.weight": [H, C], "mlp1.1.bias": [H],
                "mlp1.3.weight": [H, H], "mlp1.3.bias": [H],
                "language_model.model.embed_tokens.weight": [V, H], "language_model.model.norm.weight": [H],
                "language_model.lm_head.weight": [V, H]})
    for j in range(l["num_hidden_layers"]):
        p = f"language_model.model.layers.{j}."
        out.update({p + "self_attn.q_proj.weight": [H, H], p + "self_attn.q_proj.bias": [H],
                    p + "self_attn.k_proj.weight": [kv, H], p + "self_attn.k_proj.bias": [kv],
                    p + "self_attn.v_proj.weight": [kv, H], p + "self_attn.v_proj.bias": [kv],
                    p + "self_attn.o_proj.weight": [H, H], p + "mlp.gate_proj.weight": [F, H],
                    p + "mlp.up_proj.weight": [F, H], p + "mlp.down_proj.weight": [H, F],
                    p + "input_layernorm.weight": [H], p + "post_attention_layernorm.weight": [H]})
    return out


@pytest.mark.parametrize("name,total", [("skywork-r1v3-38b.json", 38.39e9), ("internvl3-1b.json", 0.94e9)])
def test_released_configs_give_released_names_and_shapes(name, total, tmp_path):
    path = ROOT / "config" / name
    model = M.build_model(M.ModelConfig.from_json(path), device="meta")
    got = {k: list(t.shape) for k, t in model.state_dict().items()}
    assert got == expected_released_names(json.loads(path.read_text()))
    out = tmp_path / "params.json"
    assert M.main([str(path), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["total"] == pytest.approx(total, rel=0.005)
    assert report["parameters"] == got
    if "38b" in name:  # issue 2: vision ~5.54B, connector ~91.8M, LLM ~32.76B
        assert report["modules"]["vision"] == pytest.approx(5.54e9, rel=0.002)
        assert report["modules"]["connector"] == pytest.approx(91.8e6, rel=0.002)
        assert report["modules"]["llm"] == pytest.approx(32.76e9, rel=0.002)


def test_config_round_trip_keeps_unknown_fields():
    d = json.loads((ROOT / "config" / "skywork-r1v3-38b.json").read_text())
    assert M.ModelConfig.from_json(d).to_dict() == d
    with pytest.raises(ValueError, match="model_type"):
        M.ModelConfig.from_json({**d, "model_type": "llava"})


@pytest.fixture(scope="module")
def tok():
    return chat.build_tiny_tokenizer()


def tiny(tok, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = M.tiny_config(vocab_size=len(tok), **overrides)
    model = M.build_model(cfg).eval()
    model.img_context_token_id = tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    return model


def image_prompt(tok, cfg, n_images=1, question="How many circles?"):
    text = chat.build_prompt([{"role": "user", "content": chat.expand_image_tokens(
        "<image>\n" * n_images + question, [1] * n_images, cfg.num_image_token)}], tokenizer=tok)
    return tok(text, add_special_tokens=False)["input_ids"]


def random_pixels(n, cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, cfg.force_image_size, cfg.force_image_size, generator=g)


VIT_6B_STYLE = dict(vision=dict(norm_type="rms_norm", qkv_bias=False, qk_normalization=True, initializer_factor=0.1,
                                drop_path_rate=0.1))


@pytest.mark.parametrize("overrides", [{}, VIT_6B_STYLE, dict(ps_version="v1", select_layer=-2)])
@pytest.mark.parametrize("max_shard_bytes", [2 ** 30, 200_000])
def test_save_load_identical_logits(tok, tmp_path, overrides, max_shard_bytes):
    model = tiny(tok, **overrides)
    ids = torch.tensor([image_prompt(tok, model.config, 2)])
    pv = random_pixels(2, model.config)
    ref = model(ids, pixel_values=pv)
    M.save_model(tmp_path / "ck", model.state_dict(), model.config, tok, max_shard_bytes=max_shard_bytes)
    sharded = (tmp_path / "ck" / "model.safetensors.index.json").exists()
    assert sharded == (max_shard_bytes < 2 ** 30)
    loaded = M.load_model(tmp_path / "ck").eval()
    assert loaded.img_context_token_id == model.img_context_token_id
    assert torch.equal(loaded(ids, pixel_values=pv), ref)
    bf16 = M.load_model(tmp_path / "ck", dtype=torch.bfloat16)
    assert bf16.mlp1[1].weight.dtype == torch.bfloat16
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temp dirs left behind


def test_tied_embeddings_round_trip(tok, tmp_path):
    model = tiny(tok, llm=dict(tie_word_embeddings=True))
    ids = torch.tensor([image_prompt(tok, model.config)])
    pv = random_pixels(1, model.config)
    M.save_model(tmp_path / "ck", model.state_dict(), model.config, tok)
    loaded = M.load_model(tmp_path / "ck").eval()
    assert loaded.language_model.lm_head.weight is loaded.language_model.get_input_embeddings().weight
    assert torch.equal(loaded(ids, pixel_values=pv), model(ids, pixel_values=pv))


def test_save_model_fsyncs_every_file_and_the_dir_before_the_rename(tok, tmp_path, monkeypatch):
    # after a power loss, a renamed checkpoint dir must not hold empty files: everything reaches the disk first
    events, real_fsync, real_rename = [], os.fsync, Path.rename
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(Path, "rename", lambda self, target: (events.append(("rename", str(self))),
                                                              real_rename(self, target))[1])
    cfg = M.tiny_config(vocab_size=len(tok))
    path = M.save_model(tmp_path / "ck", M.build_model(cfg).state_dict(), cfg, tok, max_shard_bytes=2 ** 20)
    commit = events.index(("rename", str(tmp_path / f".ck.tmp-{os.getpid()}")))
    synced = {Path(p).relative_to(tmp_path / f".ck.tmp-{os.getpid()}") for kind, p in events[:commit]
              if kind == "fsync" and p.startswith(str(tmp_path / ".ck.tmp-"))}
    written = {f.relative_to(path) for f in path.rglob("*") if f.is_file()}
    assert len(written) > 4 and written | {Path(".")} == synced, sorted(map(str, written ^ synced))


def test_bad_checkpoints_name_the_tensor(tok, tmp_path):
    model = tiny(tok)
    M.save_model(tmp_path / "ck", model.state_dict(), model.config, tok)
    f = tmp_path / "ck" / "model.safetensors"
    good = load_file(str(f))
    cases = {
        "missing tensor mlp1.1.bias": {k: v for k, v in good.items() if k != "mlp1.1.bias"},
        "unexpected tensor vision_model.extra.weight": {**good, "vision_model.extra.weight": torch.zeros(2)},
        "mis-shaped tensor mlp1.3.weight": {**good, "mlp1.3.weight": torch.zeros(3, 3)},
    }
    for message, tensors in cases.items():
        save_file(tensors, str(f))
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            M.load_model(tmp_path / "ck")
    save_file(cases["missing tensor mlp1.1.bias"], str(f))
    loaded = M.load_model(tmp_path / "ck", allow_missing=True)  # allowed, listed, freshly initialised
    assert torch.equal(loaded.mlp1[3].weight, model.mlp1[3].weight)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pixel_shuffle_moves_the_right_elements(version):
    n, w, h, c = 2, 4, 6, 3
    x = torch.arange(n * w * h * c, dtype=torch.float32).reshape(n, w, h, c)
    y = M.pixel_shuffle(x, 0.5, version)
    assert y.shape == ((n, w // 2, h // 2, 4 * c) if version == "v2" else (n, h // 2, w // 2, 4 * c))
    for b in range(n):
        for i in range(w // 2):
            for j in range(h // 2):
                for m in range(2):
                    for k in range(2):
                        for ch in range(c):
                            # channel block (m, k) of output cell (i, j) holds input cell (2i+m, 2j+k)
                            got = y[b, i, j] if version == "v2" else y[b, j, i]
                            assert got[(m * 2 + k) * c + ch] == x[b, 2 * i + m, 2 * j + k, ch]


def test_image_token_mismatch_says_both_numbers(tok):
    model = tiny(tok)
    ids = torch.tensor([image_prompt(tok, model.config, 2)])  # 2 images x 16 tokens
    with pytest.raises(ValueError, match="32 <IMG_CONTEXT> tokens in input_ids but 16 image features"):
        model(ids, pixel_values=random_pixels(1, model.config))
    with pytest.raises(ValueError, match="32 <IMG_CONTEXT> tokens in input_ids but 0 image features"):
        model(ids)


def test_text_only_and_dummy_tiles(tok):
    model = tiny(tok)
    text = tok(chat.build_prompt([{"role": "user", "content": "2 + 1 = ?"}], tokenizer=tok),
               add_special_tokens=False)["input_ids"]
    ids = torch.tensor([text])
    ref = model(ids)
    # a dummy tile (image_flags=0) leaves the logits unchanged but keeps the ViT in the graph
    out = model(ids, pixel_values=random_pixels(1, model.config), image_flags=torch.tensor([0]))
    assert torch.allclose(out, ref, atol=1e-6)
    out.sum().backward()
    assert model.vision_model.embeddings.patch_embedding.weight.grad is not None


def test_gqa_folded_attention_equals_sdpa_without_copying_kv():
    """At a decode step with a mask, transformers' sdpa copies K and V to all 14 query heads (repeat_kv); the
    folded attention gives the same output (InternVL3-1B's 14 / 2 heads, left-padded rows) and copies neither:
    no aten::copy_ as large as K/V at full width, less than one row's K in all. A prefill (q > 1) is unchanged."""

    class Attention:   # what both read from transformers' attention module
        num_key_value_groups, is_causal = 7, True

    b, heads, kv_heads, cols, d = 3, 14, 2, 40, 16
    g = torch.Generator().manual_seed(0)
    key, value = torch.randn(2, b, kv_heads, cols, d, generator=g)
    for q in (1, 5):
        query = torch.randn(b, q, heads, d, generator=g).transpose(1, 2)   # [b,H,q,d], as the layer hands it over
        mask = torch.ones(b, 1, q, cols, dtype=torch.bool).tril(cols - q)  # causal over the last q columns
        mask[0, ..., :7] = False   # left padding
        mask[2, ..., :2] = False
        results = {}
        for name, attention in (("reference", sdpa_attention_forward), ("folded", M.gqa_folded_sdpa_attention)):
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                out, _ = attention(Attention(), query, key, value, mask, scaling=d ** -0.5)
            results[name] = out, [math.prod(e.input_shapes[0]) for e in prof.events() if e.name == "aten::copy_"]
        assert results["folded"][0].shape == (b, q, heads, d)
        torch.testing.assert_close(results["folded"][0], results["reference"][0], rtol=1e-5, atol=1e-5)
        full_width = b * heads * cols * d
        assert results["reference"][1].count(full_width) == 2   # K and V, copied to 14 heads
        if q == 1:
            assert max(results["folded"][1], default=0) < full_width
            assert sum(results["folded"][1]) < key[0].numel()   # all its copies: less than one row's K


def test_packed_row_equals_each_sequence_alone(tok):
    """A padding-free row of three sequences (two with images, GQA heads) gives each sequence's own outputs: the
    <IMG_CONTEXT> runs get their own tiles in order, and no sequence sees another (no mask is built)."""
    model = tiny(tok)
    cfg = model.config
    text = tok(chat.build_prompt([{"role": "user", "content": "2 + 1 = ?"}], tokenizer=tok), add_special_tokens=False)["input_ids"]
    seqs = [image_prompt(tok, cfg, 2, "Sum both"), text, image_prompt(tok, cfg, 1, "How many?")]
    pv = random_pixels(3, cfg)
    tiles = [pv[:2], None, pv[2:]]
    batch = data.pack_samples([{"input_ids": s, "pixel_values": t} for s, t in zip(seqs, tiles)], 10 ** 6)
    assert batch["input_ids"].shape == (1, sum(map(len, seqs)))
    packed = model(batch["input_ids"], pixel_values=batch["pixel_values"], position_ids=batch["position_ids"])[0]
    start = 0
    for s, t in zip(seqs, tiles):
        alone = model(torch.tensor([s]), pixel_values=t)[0]
        torch.testing.assert_close(packed[start:start + len(s)], alone, rtol=1e-5, atol=1e-5)
        start += len(s)
    kwargs = M.packed_sequence_kwargs(batch["position_ids"])
    assert kwargs["cu_seq_lens_q"].tolist() == [0, len(seqs[0]), len(seqs[0]) + len(seqs[1]), start]
    with pytest.raises(ValueError, match="one row"):
        M.packed_sequence_kwargs(torch.zeros(2, 4, dtype=torch.long))


def count_tolist(monkeypatch):
    calls = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: calls.append(1) or tolist(t))
    return calls


def test_packed_forward_reads_its_boundaries_once(tok, monkeypatch):
    """The packed row's boundaries come to the host once per forward, not in each decoder layer (a GPU stall
    each), nor again in each layer's activation-checkpoint recompute."""
    model = tiny(tok, llm=dict(num_hidden_layers=6))
    for block in tu.transformer_blocks(model):
        tu.checkpoint_block(block)
    ids = torch.tensor([[20, 21, 22, 23, 24, 25, 26]])
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0, 1]])
    calls = count_tolist(monkeypatch)
    out = model(ids, position_ids=position_ids)
    assert len(calls) == 1
    out.sum().backward()
    assert len(calls) == 1


def shared_prefix_case(tok, cfg):
    """Two prompts (2 images; text only) with 3 and 2 rollouts of different lengths."""
    g = torch.Generator().manual_seed(1)
    text = tok(chat.build_prompt([{"role": "user", "content": "2 + 1 = ?"}], tokenizer=tok), add_special_tokens=False)
    pv = random_pixels(2, cfg)
    prompts = [(image_prompt(tok, cfg, 2, "Sum both"), pv), (text["input_ids"], None)]
    return [{"prompt_ids": ids, "pixel_values": tiles, "response_ids": torch.randint(10, len(tok) - 10, (n,),
                                                                                      generator=g).tolist()}
            for (ids, tiles), lens in zip(prompts, ([4, 9, 1], [6, 3])) for n in lens]


def response_loss_and_grads(model, samples, shared_prefix):
    """sum over response tokens of a fixed linear function of their predicting hidden states -> (loss, grads)."""
    model.zero_grad(set_to_none=True)
    batch, rows, cols = data.collate_responses(samples, 0, model.config.force_image_size, True, shared_prefix)
    hidden = model(batch["input_ids"], pixel_values=batch["pixel_values"], image_flags=batch["image_flags"],
                   position_ids=batch["position_ids"], prefix_layout=batch.get("prefix_layout"), return_hidden=True)
    h = hidden[rows, cols]   # [N, D]
    w = torch.linspace(-1, 1, h.shape[0] * h.shape[1]).view_as(h)
    loss = (h * w).sum() + model.language_model.lm_head(h).logsumexp(-1).sum()
    loss.backward()
    return float(loss.detach()), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, batch


def test_shared_prefix_forward_equals_each_sequence(tok, monkeypatch):
    """A group's prompt (two images) once, its rollouts attending to it: the loss and every gradient (the ViT's and
    mlp1's summed over the rollouts) equal the per-sequence packed forward's; GQA heads, two segments in one row.
    Control: a response that sees its own later tokens gives another loss."""
    model = tiny(tok)
    assert model.language_model.config.num_key_value_heads < model.language_model.config.num_attention_heads
    samples = shared_prefix_case(tok, model.config)
    loss, grads, per_seq = response_loss_and_grads(model, samples, False)
    shared_loss, shared_grads, shared = response_loss_and_grads(model, samples, True)
    assert shared["input_ids"].shape[1] == per_seq["input_ids"].shape[1] - 2 * len(samples[0]["prompt_ids"]) - \
        len(samples[3]["prompt_ids"])
    assert shared["pixel_values"].shape[0] == 2 and per_seq["pixel_values"].shape[0] == 6   # ViT once per group
    assert [(p, lens) for _, p, lens in shared["prefix_layout"]] == [
        (len(samples[0]["prompt_ids"]), [4, 9, 1]), (len(samples[3]["prompt_ids"]), [6, 3])]
    assert shared_loss == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == shared_grads.keys() and any(k.startswith("vision_model") for k in grads) and \
        any(k.startswith("mlp1") for k in grads)
    for k in grads:   # fp32 round-off, relative to the gradient's largest entry
        assert (shared_grads[k] - grads[k]).abs().max() <= 1e-5 * grads[k].abs().max(), k
    # control: a mask of all ones lets each response token see its own response's later tokens
    kwargs = M.shared_prefix_kwargs
    monkeypatch.setattr(M, "shared_prefix_kwargs", lambda *a: {**kwargs(*a), "prefix_masks": {
        key: torch.ones_like(m) for key, m in kwargs(*a)["prefix_masks"].items()}})
    assert abs(response_loss_and_grads(model, samples, True)[0] - loss) > 1e-3 * abs(loss)
    with pytest.raises(ValueError, match="covers"):
        M.shared_prefix_kwargs([(0, 3, [2])], 6, "cpu")


def test_position_embedding_interpolates_to_other_sizes(tok):
    model = tiny(tok)
    x = torch.randn(1, 3, 168, 168)  # 12x12 patches from a 8x8 grid
    assert model.vision_model(x).shape == (1, 145, model.config.vision_config.hidden_size)


@pytest.mark.parametrize("modules", [{"vision"}, {"connector"}, {"llm"}, {"connector", "llm"},
                                     {"vision", "connector", "llm"}])
def test_only_trainable_modules_get_gradients(tok, modules):
    model = tiny(tok)
    counts = M.set_trainable(model, modules)
    assert {m for m, (t, n) in counts.items() if t} == modules
    ids = torch.tensor([image_prompt(tok, model.config)])
    model(ids, pixel_values=random_pixels(1, model.config)).float().logsumexp(-1).mean().backward()
    for name, p in model.named_parameters():
        module = next(m for m, pre in M.MODULE_PREFIXES.items() if name.startswith(pre))
        if module in modules and "position_embedding" not in name:
            assert p.grad is not None, name
        if module not in modules:
            assert p.grad is None, name
    with pytest.raises(ValueError, match="adapter"):
        M.set_trainable(model, {"adapter"})


def test_set_trainable_prints_only_when_verbose(tok, capsys):
    model = tiny(tok)
    assert M.set_trainable(model, {"llm"}, verbose=False) == M.set_trainable(model, {"llm"})
    printed = capsys.readouterr().out.splitlines()   # the second call only: one line per module
    assert len(printed) == 3 and printed[2].split()[:2] == ["llm:", f"{M.parameter_counts(model)['llm']:,d}"]


def test_chat_template_matches_build_prompt(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
    jinja = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert jinja == chat.build_prompt(msgs, "think", tokenizer=tok)
    assert jinja.endswith("<|im_start|>assistant\n<think>\n")
    assert chat.build_prompt(msgs, "nothink", tokenizer=tok).endswith("<|im_start|>assistant\n")
    # NoWait still thinks
    assert chat.build_prompt(msgs, "nowait", tokenizer=tok).endswith("<|im_start|>assistant\n<think>\n")
    text = "<think>\nhmm\n</think>\n\\boxed{2}<|im_end|>"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert "<think>" in tok.decode(tok(text)["input_ids"], skip_special_tokens=True)


def test_cli_inspects_a_config_and_names_a_bad_flag(tmp_path, capsys):
    """`python model.py CONFIG` (no --json) prints the counts; its flags go through configurator.py."""
    path = ROOT / "config" / "internvl3-1b.json"
    assert M.main([str(path)]) == 0
    assert "total" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"'--jsn [^']*': unknown config key 'jsn' \(did you mean json\?\)"):
        M.main([str(path), "--jsn", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="CONFIG.json or CHECKPOINT_DIR"):
        M.main(["--json", str(tmp_path / "x.json")])


def test_init_tiny_writes_a_loadable_checkpoint(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("How many red circles are there?\nThe answer is \\boxed{3}.\n")
    assert M.main(["--init_tiny", str(tmp_path / "ck"), "--corpus", str(corpus), "--overrides",
                   '{"vision": {"image_size": 56}}']) == 0
    model = M.load_model(tmp_path / "ck")
    tok = chat.load_tokenizer(tmp_path / "ck")
    assert model.config.force_image_size == 56 and model.config.num_image_token == 4
    assert model.config.llm_config["vocab_size"] == len(tok)
    assert model.img_context_token_id == tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    # servable: config.json names our config code, which transformers' AutoConfig (what vLLM calls for
    # internvl_chat) loads, in a fresh process with its module cache in tmp_path
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["auto_map"] == \
        {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig"}
    script = ("import sys, transformers\n"
              "c = transformers.AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
              "print(type(c).__name__, c.vision_config.image_size, c.force_image_size, c.downsample_ratio,\n"
              "      type(c.llm_config).__name__, c.llm_config.vocab_size, c.llm_config.max_position_embeddings)\n")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ck")], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=300,
                         env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["InternVLChatConfig", "56", "56", "0.5", "Qwen2Config", str(len(tok)),
                                  str(model.config.llm_config["max_position_embeddings"])]


@pytest.mark.parametrize("llm", [
    dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=32),
    dict(architectures=["LlamaForCausalLM"], model_type="llama"),
])
def test_other_llms_build_round_trip_and_generate(tok, tmp_path, llm):
    model = tiny(tok, llm=llm)
    assert type(model.language_model).__name__ == llm["architectures"][0]
    ids = torch.tensor([image_prompt(tok, model.config)])
    pv = random_pixels(1, model.config)
    M.save_model(tmp_path / "ck", model.state_dict(), model.config, tok)
    loaded = M.load_model(tmp_path / "ck").eval()
    assert torch.equal(loaded(ids, pixel_values=pv), model(ids, pixel_values=pv))
    out = decode.generate(loaded, [ids[0].tolist()], pixel_values=pv, max_new_tokens=4, temperature=0)
    assert len(out[0]["token_ids"]) == 4


# -----------------------------------------------------------------------------
# released checkpoints: remote code (auto_map) travels through every save; no script asks about running it

CONFIGURATION_INTERN_VIT = """from transformers import PretrainedConfig


class InternVisionConfig(PretrainedConfig):
    model_type = "intern_vit_6b"

    def __init__(self, hidden_size=3200, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
"""
CONFIGURATION_INTERNVL_CHAT = """from transformers import PretrainedConfig

from .configuration_intern_vit import InternVisionConfig


class InternVLChatConfig(PretrainedConfig):
    model_type = "internvl_chat"

    def __init__(self, vision_config=None, llm_config=None, **kwargs):
        super().__init__(**kwargs)
        self.vision_config = InternVisionConfig(**(vision_config or {}))
        self.llm_config = llm_config or {}
"""
AUTO_MAP = {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat.InternVLChatModel"}   # a released dir has this file; ours lacks it


def released_style_checkpoint(tok, path):
    """A tiny checkpoint shaped like a released one: auto_map in config.json and stand-in remote code (the config
    module imports a sibling relatively), plus a .py file that nothing names."""
    config = M.tiny_config(vocab_size=len(tok))
    config.extra["auto_map"] = AUTO_MAP
    torch.manual_seed(0)
    M.save_model(path, M.build_model(config).state_dict(), config, tok)
    (path / "configuration_internvl_chat.py").write_text(CONFIGURATION_INTERNVL_CHAT)
    (path / "configuration_intern_vit.py").write_text(CONFIGURATION_INTERN_VIT)
    (path / "unrelated.py").write_text("raise RuntimeError('not auto_map code')\n")
    return path


def test_remote_code_travels_through_every_save(tok, tmp_path):
    """init -> SFT -> GRPO -> connector tuning, each saving through checkpoint.save_checkpoint / save_model:
    every output has the auto_map code and its relative import, and transformers' AutoConfig with remote code
    (what vLLM's LLM() calls for internvl_chat) loads it."""
    init = released_style_checkpoint(tok, tmp_path / "init")
    assert M.remote_code_files(M.ModelConfig.from_json(init / "config.json")) == \
        ["configuration_intern_vit.py", "configuration_internvl_chat.py"]
    Image.new("RGB", (60, 40), (200, 30, 30)).save(tmp_path / "red.png")
    chats = [{"messages": [{"role": "user", "content": f"<image>\nHow many? {i}"},
                           {"role": "assistant", "content": f"<think>\nI see {i}.\n</think>\n\n\\boxed{{{i}}}"}],
              "images": ["red.png"]} for i in range(6)]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    (tmp_path / "rl.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "images": ["red.png"], "answer": str(i),
                                                           "question": "How many?"}) + "\n" for i in range(4)))
    small = ["--global_batch_size=2", "--micro_batch_size=2", "--max_seq_len=128", "--max_steps=1",
             "--warmup_ratio=0.0", "--save_dtype=float32", "--compute_dtype=float32", "--wandb=False"]
    assert sft.main([f"--checkpoint={init}", f"--data={tmp_path / 'chat.jsonl'}", f"--out_dir={tmp_path / 'sft'}",
                     *small]) == 0
    sft_ckpt = tmp_path / "sft" / "step_000001"
    grpo.main(grpo.Config(init_from=str(sft_ckpt), data=str(tmp_path / "rl.jsonl"), out_dir=str(tmp_path / "grpo"),
                          steps=1, prompts_per_step=2, rollouts_per_prompt=2, response_length_schedule=[(0, 4)],
                          reward_workers=0, save_every=1, max_prompt_tokens=512))
    grpo_ckpt = tmp_path / "grpo" / "step_000001"
    assert connector_tune.main([f"--checkpoint={grpo_ckpt}", f"--data={tmp_path / 'chat.jsonl'}",
                                f"--out_dir={tmp_path / 'ct'}", "--eval_every=1", "--val_fraction=0.0",
                                "--patience=0", *small]) == 0
    saved = [sft_ckpt, grpo_ckpt, tmp_path / "ct" / "step_000001"]
    for d in saved:
        assert sorted(p.name for p in d.glob("*.py")) == ["configuration_intern_vit.py",
                                                          "configuration_internvl_chat.py"], d
        assert json.loads((d / "config.json").read_text())["auto_map"] == AUTO_MAP
    # a fresh process (no class cached from an earlier directory), its module cache in tmp_path
    script = ("import sys, transformers\n"
              "for d in sys.argv[1:]:\n"
              "    c = transformers.AutoConfig.from_pretrained(d, trust_remote_code=True)\n"
              "    print(type(c).__name__, type(c.vision_config).__name__, c.llm_config['model_type'])\n")
    run = subprocess.run([sys.executable, "-c", script, *map(str, saved)], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=300,
                         env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == ["InternVLChatConfig InternVisionConfig qwen2"] * 3


@pytest.mark.parametrize("bad", ["../../pwned.Config", "/abs/pwned.Config", "link.Config", "sub.mod.Config",
                                 "relative_parent.Config", 7])
def test_remote_code_outside_the_checkpoint_is_refused(tok, tmp_path, bad):
    """auto_map is untrusted: a module name that leaves the source directory (../, an absolute path, a symlink out,
    a relative import of a parent package, a dotted name) is a ValueError naming config.json and the field, and
    save_model writes nothing outside its destination."""
    src = tmp_path / "a" / "b" / "src"
    config = M.tiny_config(vocab_size=len(tok))
    M.save_model(src, M.build_model(config).state_dict(), config, tok)
    (tmp_path / "a" / "pwned.py").write_text("raise SystemExit('pwned')\n")   # src/../../pwned.py
    (tmp_path / "abs").mkdir()
    (tmp_path / "abs" / "pwned.py").write_text("raise SystemExit('pwned')\n")
    (src / "link.py").symlink_to(tmp_path / "a" / "pwned.py")
    (src / "relative_parent.py").write_text("from ..pwned import Config\n")
    raw = json.loads((src / "config.json").read_text())
    raw["auto_map"] = {"AutoConfig": bad.replace("/abs", str(tmp_path / "abs")) if isinstance(bad, str) else bad}
    (src / "config.json").write_text(json.dumps(raw))
    loaded = M.ModelConfig.from_json(src / "config.json")
    where = r"config\.json: auto_map\.AutoConfig|relative_parent\.py: relative import \.\.pwned"
    with pytest.raises(ValueError, match=where):
        M.remote_code_files(loaded)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=where):
        M.save_model(out / "ck", M.build_model(config).state_dict(), loaded, tok)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("pwned.py")) == ["a/pwned.py",
                                                                                          "abs/pwned.py"]
    assert not (out / "ck").exists()


def test_no_custom_code_question(tok, tmp_path):
    """transformers asks "Do you wish to run the custom code?" and waits 15 s for any config with auto_map unless
    told; under torchrun every rank would stall. Loading the tokenizer and model of a released-style checkpoint,
    with stdin open but silent (as under torchrun), prints no question and so takes no wait: the question is
    input()'s prompt (transformers dynamic_module_utils.py:763-767), written before it waits (no wall-clock bound here: under CI load imports alone vary 4-15 s)."""
    ckpt = released_style_checkpoint(tok, tmp_path / "ck")
    script = ("import sys, chat, model\n"
              "tok = chat.load_tokenizer(sys.argv[1])\n"
              "net = model.load_model(sys.argv[1])\n"
              "print('loaded', len(tok), net.img_context_token_id)\n")
    run = subprocess.run([sys.executable, "-c", script, str(ckpt)], capture_output=True, text=True, cwd=ROOT,
                         stdin=subprocess.PIPE, timeout=120,
                         env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "custom code" not in run.stdout + run.stderr and "[y/N]" not in run.stdout + run.stderr
    assert run.stdout.split() == ["loaded", str(len(tok)), str(tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN))]


# a checkpoint template that injects a default system turn (as InternVL's templates and Qwen2.5's do); its
# generation prompt opens the think block, as the released one does (SkyworkAI/Skywork-R1V issue #40)
SYSTEM_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Skywork-R1V, a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)


def test_demo_tokenizer_prompts_are_unchanged(tok):
    # the tiny demo tokenizer carries CHAT_TEMPLATE: its prompts are byte for byte the ChatML ones of before
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>\n1+1?"}]
    head = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image>\n1+1?<|im_end|>\n"
    assert tok.chat_template == chat.CHAT_TEMPLATE
    assert chat.build_prompt(msgs, "think", tokenizer=tok) == head + "<|im_start|>assistant\n<think>\n"
    assert chat.build_prompt(msgs, "nowait", tokenizer=tok) == head + "<|im_start|>assistant\n<think>\n"
    assert chat.build_prompt(msgs, "nothink", tokenizer=tok) == head + "<|im_start|>assistant\n"
    assert chat.build_prompt(msgs, add_generation_prompt=False, tokenizer=tok) == head
    for mode in ("think", "nothink"):   # no template at all: the same ChatML
        assert chat.build_prompt(msgs, mode, tokenizer=None) == chat.build_prompt(msgs, mode, tokenizer=tok)
    with pytest.raises(ValueError, match="mode 'fast'"):
        chat.build_prompt(msgs, "fast", tokenizer=tok)


def test_checkpoint_template_think_handling(tok):
    tok = copy.deepcopy(tok)
    tok.chat_template = SYSTEM_TEMPLATE
    msgs = [{"role": "user", "content": "1+1?"}]
    system = "<|im_start|>system\nYou are Skywork-R1V, a helpful assistant.<|im_end|>\n"
    assert chat.build_prompt(msgs, "think", tokenizer=tok) == \
        system + "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert chat.build_prompt(msgs, "nothink", tokenizer=tok) == \
        system + "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
    # a template whose generation prompt does not open the think block gets "<think>\n" in think mode
    tok.chat_template = SYSTEM_TEMPLATE.replace("<think>\\n", "")
    assert chat.build_prompt(msgs, "think", tokenizer=tok).endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert chat.build_prompt(msgs, "nothink", tokenizer=tok).endswith("<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("mode", ["think", "nothink"])
def test_every_prompt_builder_uses_the_checkpoint_template(tok, mode, tmp_path):
    """grpo.py, sft.py (data.encode_prompt in --mode=reject, data.tokenize_chat in training: tests/test_data.py),
    eval.py and entropy.py: each prompt equals apply_chat_template's tokens, the default system turn included.
    nothink is the release's recipe: the same template without "<think>\\n" in its generation prompt."""
    tok = copy.deepcopy(tok)
    tok.chat_template = SYSTEM_TEMPLATE
    template = SYSTEM_TEMPLATE if mode == "think" else SYSTEM_TEMPLATE.replace("<think>\\n", "")
    expected = lambda messages: tok.apply_chat_template(messages, chat_template=template, tokenize=True,
                                                        add_generation_prompt=True, return_dict=False)
    config = M.tiny_config(vocab_size=len(tok))
    record = data.Record(id="q1", question="1+1?", answer="2", images=[], options={"A": "2", "B": "3"},
                         source="t")
    user = [{"role": "user", "content": data.format_question(record)}]
    assert "You are Skywork-R1V" in tok.decode(expected(user))

    assert grpo.encode(tok, config, record, grpo.Config(mode=mode))["input_ids"] == expected(user)
    assert data.encode_prompt(tok, config, record, mode=mode)["input_ids"] == expected(user)   # sft --mode=reject
    ids, _ = entropy.build_prompt_inputs({"id": "q1", "where": "g:1"}, {"q1": record}, tok, config,
                                         entropy.EntropyConfig(mode=mode))
    assert ids == expected(user)

    item = benchmarks.EvalItem(id="v1", question="2+2?", answer="4", images=[], options={}, benchmark="MathVision")
    seen = []

    def sample_fn(rows, max_tokens, stop_at_think_end):
        seen.extend(rows)
        return [{"text": "4", "finish_reason": "stop", "num_tokens": 1} for _ in rows]
    cfg = E.EvalConfig(k=1, out_dir=str(tmp_path))
    E.generate_run(cfg, [item], mode, None, sample_fn, E.run_prompts(cfg, [item], mode, tok))
    assert tok.encode(seen[0]["prompt"], add_special_tokens=False) == \
        expected([{"role": "user", "content": "2+2?"}])
