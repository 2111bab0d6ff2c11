"""Tests for grpo.py. Also the torchrun worker of the distributed test:
`python -m torch.distributed.run --standalone --nproc_per_node=2 tests/test_grpo.py WORKSPACE OUT_DIR`."""
import dataclasses
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import chat
import data
import grpo
import grpo_metrics
import logprobs
import model
import sampling
import stub_server
import train_utils as tu
from test_train_utils import torchrun

# 2 shared cores: with more intra-op threads than free cores, tiny matmuls spin and run ~20x slower
torch.set_num_threads(1)

# -----------------------------------------------------------------------------
# workspace: a tiny checkpoint (with tokenizer) and records, some with images


def make_workspace(root, n_records=8, images=True, seed=0):
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tok = chat.build_tiny_tokenizer()
    cfg = model.tiny_config(vocab_size=len(tok))
    torch.manual_seed(seed)
    model.save_model(root / "ckpt", model.build_model(cfg).state_dict(), cfg, tok)
    Image.new("RGB", (60, 40), (200, 10, 10)).save(root / "red.png")
    Image.new("RGB", (40, 40), (10, 10, 200)).save(root / "blue.png")
    with open(root / "train.jsonl", "w") as f:
        for i in range(n_records):
            image = [] if not images or i % 3 == 0 else ["red.png" if i % 2 else "blue.png"]
            f.write(json.dumps({"id": f"q{i}", "images": image, "question": f"What is {i} + 1?",
                                "answer": str(i % 3)}) + "\n")
    return root / "ckpt", root / "train.jsonl"


def end_of_turn_checkpoint(ckpt, out):
    """ckpt with its <|im_end|> row of lm_head drawn anew, N(0, 4^2) per entry: the end-of-turn probability then
    depends on the context, as a trained model's does, so the rollouts of some prompts stop after 2-3 tokens and
    others run to max_tokens. Under torchrun each rank's rollouts then end at a different decode step."""
    tok, net = chat.load_tokenizer(ckpt), model.load_model(ckpt)
    weight = net.language_model.lm_head.weight
    with torch.no_grad():
        weight[tok.convert_tokens_to_ids("<|im_end|>")] = 4.0 * torch.randn(weight.shape[1],
                                                                            generator=torch.Generator().manual_seed(2))
    model.save_model(out, net.state_dict(), net.config, tok)
    return out


def toy_reward(texts, records):
    """TOY REWARD (custom reward_fn hook, not the paper's): the share of response characters that are digits.
    Dense, so an untrained tiny model learns it in a few dozen GRPO steps."""
    return [{"reward": sum(c.isdigit() for c in t) / max(1, len(t)), "accuracy": 0.0, "format": 0.0} for t in texts]


def half_constant_reward(texts, records):
    """TOY REWARD for dynamic sampling: records with an even number always get 0.5 (zero-variance groups), the
    others the toy reward."""
    toy = toy_reward(texts, records)
    return [{**t, "reward": 0.5} if int(r.id[1:]) % 2 == 0 else t for t, r in zip(toy, records)]


class FixedRollout:
    """Pre-written rollouts, the same whatever the rank or world size: rollout k of a prompt is a response whose
    boxed answer is k % 3 (so rewards.score_batch marks about a third right), with or without the </think>
    format, of varying lengths."""

    def __init__(self, tokenizer, dist):
        self.tokenizer, self.ranks = tokenizer, [dist.rank]

    def sample(self, prompts, n, max_tokens, seed=None):
        out = []
        for p in prompts:
            outs = []
            for k in range(n):
                text = "I count" + " 1" * ((len(p["input_ids"]) + k) % 4) + (" </think>" if k % 2 else "") + \
                       f" \\boxed{{{k % 3}}}"
                ids = self.tokenizer.encode(text, add_special_tokens=False)[:max_tokens - 1]
                ids.append(self.tokenizer.eos_token_id)
                outs.append({"token_ids": ids, "logprobs": [], "finish_reason": "stop"})
            out.append(outs)
        return out

    def sleep(self):
        pass

    def update_weights(self, net):
        pass


def run_config(ckpt, records, out, **overrides):
    base = dict(init_from=str(ckpt), data=str(records), out_dir=str(out), steps=2, prompts_per_step=4,
                rollouts_per_prompt=4, response_length_schedule=[(0, 6)], lr=1e-3, reward_workers=0,
                micro_batch_size=2, save_every=1000, max_prompt_tokens=512)
    base.update(overrides)
    return grpo.Config(**base)

# -----------------------------------------------------------------------------
# (a) advantages and loss by hand


def test_group_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.2, 0.2, 0.2, 0.2], [1.0, 0.8, 0.0, 0.2]], dtype=torch.float64)
    adv = grpo.group_advantages(r, eps=1e-6)
    # group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735
    s0 = math.sqrt(1 / 3)
    assert adv[0].tolist() == pytest.approx([d / (s0 + 1e-6) for d in (0.5, -0.5, -0.5, 0.5)], abs=1e-12)
    assert adv[1].tolist() == [0.0, 0.0, 0.0, 0.0]   # zero variance: no signal
    # group 2: mean 0.5, deviations .5 .3 -.5 -.3, unbiased var (.25+.09+.25+.09)/3
    s2 = math.sqrt(0.68 / 3)
    assert adv[2].tolist() == pytest.approx([d / (s2 + 1e-6) for d in (0.5, 0.3, -0.5, -0.3)], abs=1e-12)
    # Dr. GRPO: no division by the std
    assert grpo.group_advantages(r, scale_by_std=False)[2].tolist() == pytest.approx([0.5, 0.3, -0.5, -0.3])
    with pytest.raises(ValueError, match=">= 2 rollouts"):
        grpo.group_advantages(torch.ones(3, 1))


def hand_loss(logp, old, ref, adv, lengths, agg, normaliser, lo, hi, beta):
    """eq. 7 with plain Python floats, token by token."""
    seq_terms, token_sum, clipped = [], 0.0, 0
    for i, n in enumerate(lengths):
        terms = []
        for t in range(n):
            ratio = math.exp(logp[i][t] - old[i][t])
            clip_ratio = min(max(ratio, 1 - lo), 1 + hi)
            term = -min(ratio * adv[i], clip_ratio * adv[i])
            clipped += (adv[i] > 0 and ratio > 1 + hi) or (adv[i] < 0 and ratio < 1 - lo)
            d = ref[i][t] - logp[i][t]
            term += beta * (math.exp(d) - d - 1)
            terms.append(term)
        seq_terms.append(sum(terms) / n)
        token_sum += sum(terms)
    total = sum(seq_terms) if agg == "seq-mean-token-mean" else token_sum
    return total / normaliser, clipped


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean"])
def test_policy_loss_by_hand_with_clip_higher_and_kl(agg):
    lengths = [4, 2, 3]
    # ratios exp(logp - old): inside the range, above 1 + 0.28, below 1 - 0.2, between 1.2 and 1.28 (clip-higher)
    logp = [[-1.0, -0.5, -2.0, -0.1], [-0.3, -1.2, 0, 0], [-0.7, -0.2, -3.0, 0]]
    old = [[-1.1, -0.9, -1.7, -0.32], [-0.6, -0.9, 0, 0], [-0.4, -0.6, -2.8, 0]]
    ref = [[-1.2, -0.4, -2.2, -0.2], [-0.2, -1.0, 0, 0], [-0.9, -0.3, -3.1, 0]]
    adv = [1.5, -0.8, 0.6]
    normaliser = 7.0 if agg == "seq-mean-token-mean" else 19.0   # the whole mini-batch, beyond this micro-batch
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    lp = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
    cfg = grpo.Config(loss_agg=agg, clip_eps_low=0.2, clip_eps_high=0.28, kl_beta=0.05)
    loss, stats = grpo.policy_loss(lp, torch.tensor(old, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64),
                                   torch.tensor(adv, dtype=torch.float64), mask, cfg)
    loss = loss / normaliser   # grpo.main's division by the whole mini-batch's count
    want, clipped = hand_loss(logp, old, ref, adv, lengths, agg, normaliser, 0.2, 0.28, 0.05)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    assert stats["clipped"] == clipped == 3 and stats["tokens"] == 9
    # clip-higher: ratio e^0.22 = 1.246 with A > 0 is inside [0.8, 1.28] (would be clipped at 1.2)
    assert math.exp(-0.1 + 0.32) < 1.28
    # clipped tokens get no policy gradient, only the KL term's; padding gets none at all
    loss.backward()
    d = [[r - p for r, p in zip(rr, pp)] for rr, pp in zip(ref, logp)]
    scale = [(1 / n if agg == "seq-mean-token-mean" else 1.0) / normaliser for n in lengths]
    for i, t in ((0, 1), (1, 1), (2, 1)):   # the three clipped tokens
        kl_grad = 0.05 * (1 - math.exp(d[i][t])) * scale[i]   # d/dlogp of beta * (e^d - d - 1), d = ref - logp
        assert float(lp.grad[i, t]) == pytest.approx(kl_grad, rel=1e-9)
    assert lp.grad[1, 2:].abs().sum() == 0 and lp.grad[2, 3] == 0


def test_ratio_one_is_reinforce_with_group_advantages():
    # the paper's setting: old = logp.detach(), so d loss / d logp = -A / |y| / N exactly and nothing is clipped
    lp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.4, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([2.0, -1.0])
    loss, stats = grpo.policy_loss(lp, lp.detach(), None, adv, mask, grpo.Config())
    loss = loss / 4.0   # normaliser: the mini-batch's 4 sequences
    loss.backward()
    assert loss.item() == pytest.approx(-(2.0 - 1.0) / 4.0)
    torch.testing.assert_close(lp.grad, torch.tensor([[-2 / 3 / 4] * 3, [1 / 2 / 4, 1 / 2 / 4, 0.0]]))
    assert stats["clipped"] == 0 and stats["approx_kl"] == 0


def micro_batch_loss_and_grads(net, samples, cfg, normaliser):
    """update_policy's micro-batch loop (eq. 7, one process) -> (summed loss, parameter gradients)."""
    net.zero_grad(set_to_none=True)
    total = 0.0
    cfg = dataclasses.replace(cfg, logprob_chunk_size=5, clip_eps_low=0.2, clip_eps_high=0.28, kl_beta=0.0)
    for micro in grpo.micro_batches(samples, cfg, tu.Dist(), 0):
        logp, _, mask = logprobs.sequence_logprobs(net, micro, 0, 112, cfg, True)
        old = logprobs.padded([s["old_logp"] for s in micro], mask)
        adv = torch.tensor([s["advantage"] for s in micro])
        loss, _ = grpo.policy_loss(logp, old, None, adv, mask, cfg)
        loss = loss / normaliser
        loss.backward()
        total += float(loss.detach())
    return total, {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean"])
def test_packed_micro_batches_give_the_padded_loss_and_gradients(tmp_path, agg):
    ckpt, records = make_workspace(tmp_path)
    net = model.load_model(ckpt).eval()
    tok = chat.load_tokenizer(ckpt)
    g = torch.Generator().manual_seed(0)
    samples = []
    for r in data.read_records(records)[:5]:   # with and without an image, prompts of different lengths
        p = data.encode_prompt(tok, net.config, r)
        for k in range(2):
            n = 3 + 4 * k + len(samples) % 3
            samples.append({"prompt_ids": p["input_ids"], "pixel_values": p["pixel_values"],
                            "response_ids": torch.randint(10, len(tok) - 10, (n,), generator=g).tolist(),
                            "old_logp": -torch.rand(n, generator=g) * 8,   # ratios far from 1: the clip acts
                            "advantage": float(torch.randn(1, generator=g))})
    assert len({len(s["prompt_ids"]) for s in samples}) > 1 and sum(s["pixel_values"] is not None for s in samples) > 2
    normaliser = len(samples) if agg == "seq-mean-token-mean" else sum(len(s["response_ids"]) for s in samples)
    padded = run_config(ckpt, records, tmp_path, loss_agg=agg, packing=False, micro_batch_size=3)
    packed = run_config(ckpt, records, tmp_path, loss_agg=agg, packing=True, micro_batch_tokens=300,
                        shared_prefix=False)   # one copy of the prompt per sequence (shared: the test below)
    assert [len(s["prompt_ids"]) + len(s["response_ids"]) for s in samples] == [61, 66, 81, 83, 80, 85, 60, 65, 81, 83]
    assert [len(m) for m in grpo.micro_batches(samples, packed, tu.Dist(), 0)] == [4, 4, 2]   # next-fit <= 300
    packed_big = run_config(ckpt, records, tmp_path, loss_agg=agg, packing=True, micro_batch_tokens=10_000,
                            shared_prefix=False)
    loss_padded, grads_padded = micro_batch_loss_and_grads(net, samples, padded, normaliser)
    for cfg in (packed, packed_big):
        loss_packed, grads_packed = micro_batch_loss_and_grads(net, samples, cfg, normaliser)
        assert loss_packed == pytest.approx(loss_padded, rel=1e-5)
        assert grads_packed.keys() == grads_padded.keys() and any(k.startswith("vision") for k in grads_padded)
        for k in grads_padded:
            torch.testing.assert_close(grads_packed[k], grads_padded[k], rtol=1e-4, atol=1e-7, msg=k)
    # control: one row whose positions do not restart lets the sequences see each other
    micro = samples[:4]
    packing = {p: grpo.Config(logprob_chunk_size=5, packing=p, shared_prefix=False) for p in (True, False)}
    logp_packed = logprobs.sequence_logprobs(net, micro, 0, 112, packing[True], False)[0]
    logp_padded = logprobs.sequence_logprobs(net, micro, 0, 112, packing[False], False)[0]
    torch.testing.assert_close(logp_packed, logp_padded, rtol=1e-5, atol=1e-5)
    original = data.pack_samples
    leaky = lambda *a: dict(original(*a), position_ids=torch.arange(original(*a)["input_ids"].shape[1])[None])
    try:
        data.pack_samples = leaky
        logp_leaky = logprobs.sequence_logprobs(net, micro, 0, 112, packing[True], False)[0]
    finally:
        data.pack_samples = original
    assert (logp_leaky - logp_padded).abs().max() > 1e-3


def test_shared_prefix_gives_the_per_sequence_loss_and_gradients(tmp_path):
    """Each group's prompt (image and ViT included) once per micro-batch, its rollouts attending to it: eq. 7's loss
    and every parameter gradient equal the per-sequence forward's, with token-budget micro-batches that split a
    group and with one micro-batch for everything; a prompt that is not shared (other tiles) gets its own copy."""
    ckpt, records = make_workspace(tmp_path)
    net = model.load_model(ckpt).eval()
    tok = chat.load_tokenizer(ckpt)
    g = torch.Generator().manual_seed(0)
    samples = []
    for r in data.read_records(records)[:4]:   # prompts 0 (text), 1 and 2 (an image each), 3 (text)
        p = data.encode_prompt(tok, net.config, r)
        for k in range(3):
            n = 2 + 5 * k + len(samples) % 4
            samples.append({"prompt_ids": p["input_ids"], "pixel_values": p["pixel_values"],
                            "response_ids": torch.randint(10, len(tok) - 10, (n,), generator=g).tolist(),
                            "old_logp": -torch.rand(n, generator=g) * 8,
                            "advantage": float(torch.randn(1, generator=g))})
    samples[5] = dict(samples[5], pixel_values=samples[5]["pixel_values"].clone())   # equal, but not the group's
    normaliser = len(samples)
    per_seq = run_config(ckpt, records, tmp_path, packing=True, micro_batch_tokens=10_000, shared_prefix=False)
    loss, grads = micro_batch_loss_and_grads(net, samples, per_seq, normaliser)
    assert any(k.startswith("vision") for k in grads) and any(k.startswith("mlp1") for k in grads)
    for budget in (10_000, 90):
        cfg = dataclasses.replace(per_seq, shared_prefix=True, micro_batch_tokens=budget)
        micros = grpo.micro_batches(samples, cfg, tu.Dist(), 0)
        batches = [data.collate_responses(m, 0, 112, True, True)[0] for m in micros]
        if budget == 90:   # next-fit over tokens, each prompt counted once: a group split over micro-batches
            assert any(data.same_prompt(a[-1], b[0]) for a, b in zip(micros, micros[1:]))
        else:   # prompts 0, 2, 3 once each, prompt 1 twice (its third rollout's tiles are another tensor)
            assert [len(lens) for _, _, lens in batches[0]["prefix_layout"]] == [3, 2, 1, 3, 3]
            assert batches[0]["pixel_values"].shape[0] == 3
        shared_loss, shared_grads = micro_batch_loss_and_grads(net, samples, cfg, normaliser)
        assert shared_loss == pytest.approx(loss, rel=1e-5)
        assert shared_grads.keys() == grads.keys()
        for k in grads:   # fp32 round-off, relative to the gradient's largest entry
            assert (shared_grads[k] - grads[k]).abs().max() <= 1e-5 * grads[k].abs().max(), (budget, k)
    # control: rollouts of different prompts forced into one segment (the first prompt's) give another loss
    same = data.same_prompt
    try:
        data.same_prompt = lambda a, b: True
        forced = dataclasses.replace(cfg, micro_batch_tokens=10_000)
        forced_loss, _ = micro_batch_loss_and_grads(net, samples[:6], forced, 6)
    finally:
        data.same_prompt = same
    assert abs(forced_loss - micro_batch_loss_and_grads(net, samples[:6], per_seq, 6)[0]) > 1e-4


# -----------------------------------------------------------------------------
# (b) two ranks == one process


def distributed_configs(ckpt, records, out, world):
    """The same global batches; micro-batch sizes differ between the 1- and 2-rank runs on purpose."""
    return [
        run_config(ckpt, records, out / "seq", loss_agg="seq-mean-token-mean", mini_batches=2, clip_eps_high=0.28,
                   kl_beta=0.05, micro_batch_size=2 if world == 2 else 3, steps=1, response_length_schedule=[(0, 40)]),
        run_config(ckpt, records, out / "tok", loss_agg="token-mean", micro_batch_size=2 if world == 2 else 5,
                   trainable=["connector", "llm"], steps=1, response_length_schedule=[(0, 40)]),
    ]


def recording_adamw_step(store):
    """AdamW.step that first keeps a full copy of every gradient it is about to apply (gathered under FSDP2,
    a collective that all ranks reach in the same order), so the test compares the update before Adam's
    per-element 1/sqrt(v) amplifies summation-order noise of near-zero gradients."""
    step = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        grads = []
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                grads.append(tu.full_tensor(g).detach().cpu().clone())
        store.append(grads)
        return step(self, *args, **kwargs)
    return recording


def torchrun_worker(workspace, out):
    dist = tu.setup_distributed()
    tokenizer = chat.load_tokenizer(Path(workspace) / "ckpt")
    store = []
    torch.optim.AdamW.step = recording_adamw_step(store)
    for cfg in distributed_configs(Path(workspace) / "ckpt", Path(workspace) / "train.jsonl", Path(out), 2):
        store.clear()
        history = grpo.main(cfg, sampler=FixedRollout(tokenizer, dist))
        if dist.is_main:
            (Path(cfg.out_dir) / "history.json").write_text(json.dumps(history))
            torch.save(store, Path(cfg.out_dir) / "grads.pt")
    # decode.generate under FSDP (sync_ranks, dummy tiles) and dynamic sampling's cross-rank trimming
    cfg = dynamic_sampling_config(Path(workspace) / "ckpt", Path(workspace) / "train.jsonl", Path(out) / "dyn")
    history = grpo.main(cfg, reward_fn=half_constant_reward)
    if dist.is_main:
        (Path(cfg.out_dir) / "history.json").write_text(json.dumps(history))
    # the built-in sampler with rollouts that end at different steps on each rank (each rank's rollouts recorded
    # for the one-process replay), then a resume from its first checkpoint
    cfg = builtin_rehearsal_config(Path(workspace) / "ckpt_eos", Path(workspace) / "train.jsonl", Path(out) / "builtin")
    calls, sample = [], sampling.BuiltinSampler.sample

    def recording_sample(self, prompts, n, max_tokens, **kwargs):
        outputs = sample(self, prompts, n, max_tokens, **kwargs)
        calls.append({p["id"]: o for p, o in zip(prompts, outputs)})
        return outputs
    sampling.BuiltinSampler.sample = recording_sample
    history = grpo.main(cfg, reward_fn=toy_reward)
    (Path(cfg.out_dir) / f"rollouts_rank{dist.rank}.json").write_text(json.dumps(calls))
    if dist.is_main:
        (Path(cfg.out_dir) / "history.json").write_text(json.dumps(history))
        shutil.copytree(cfg.out_dir, Path(out) / "resumed", ignore=shutil.ignore_patterns("step_000002"))
    torch.distributed.barrier()
    resumed = grpo.main(dataclasses.replace(cfg, out_dir=str(Path(out) / "resumed"), resume=True),
                        reward_fn=toy_reward)
    if dist.is_main:
        (Path(out) / "resumed" / "history.json").write_text(json.dumps(resumed))
    tu.cleanup_distributed()


def builtin_rehearsal_config(ckpt, records, out):
    """2 steps of 4 prompts x 4 rollouts of at most 8 tokens, sampled at T = 1 by the built-in sampler; token-budget
    micro-batches (so the ranks' micro-batch counts follow their rollouts' lengths), a checkpoint every step."""
    return run_config(ckpt, records, out, rollout_backend="builtin", response_length_schedule=[(0, 8)],
                      micro_batch_tokens=160, save_every=1, keep_last=0)


class Replay:
    """The sampler interface, answering each call with the rollouts a 2-rank run sampled at the same call (the
    ranks' prompts merged, looked up by record id): one process then trains on exactly those rollouts."""

    def __init__(self, calls):
        self.calls, self.ranks = iter(calls), [0]

    def sample(self, prompts, n, max_tokens, seed=None):
        call = next(self.calls)
        return [call[p["id"]] for p in prompts]

    def sleep(self):
        pass

    def update_weights(self, net):
        pass


def dynamic_sampling_config(ckpt, records, out):
    return run_config(ckpt, records, out, steps=2, dynamic_sampling=True, max_sampling_rounds=4,
                      rollout_backend="builtin")


def check_dynamic_sampling(history):
    for m in history:
        assert m["data/groups_trained"] == 4   # exactly prompts_per_step groups, all with reward variance
        assert m["data/sampling_rounds"] >= 2 and 0 < m["reward/zero_var_groups"] < 1


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One torchrun launch (torchrun_worker) for the 2-rank tests below -> its root: ws/ (workspace), two/ (runs)."""
    root = tmp_path_factory.mktemp("two_ranks")
    ckpt, _ = make_workspace(root / "ws")
    end_of_turn_checkpoint(ckpt, root / "ws" / "ckpt_eos")
    torchrun(__file__, root / "ws", root / "two", timeout=600)
    return root


def test_two_ranks_give_the_same_update_as_one_process(two_ranks, tmp_path, monkeypatch):
    ckpt, records = two_ranks / "ws" / "ckpt", two_ranks / "ws" / "train.jsonl"
    tokenizer = chat.load_tokenizer(ckpt)
    store = []
    monkeypatch.setattr(torch.optim.AdamW, "step", recording_adamw_step(store))
    for one_cfg, two_cfg in zip(distributed_configs(ckpt, records, tmp_path / "one", 1),
                                distributed_configs(ckpt, records, two_ranks / "two", 2)):
        store.clear()
        one = grpo.main(one_cfg, sampler=FixedRollout(tokenizer, tu.Dist()))
        two = json.loads((Path(two_cfg.out_dir) / "history.json").read_text())
        for a, b in zip(one, two):
            assert a["reward/mean"] == pytest.approx(b["reward/mean"]) and 0 < a["reward/mean"] < 1
            assert a["reward/zero_var_groups"] < 1   # there is something to learn
            for key in ("train/loss", "train/grad_norm", "train/clip_frac", "train/approx_kl", "train/kl_ref",
                        "entropy/mean"):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key
        if one_cfg.mini_batches > 1:
            assert one[0]["train/clip_frac"] > 0 and one[0]["train/kl_ref"] > 0   # clip and KL really act
        # the gradient of every optimizer step (mini_batches of them) is the same
        two_grads = torch.load(Path(two_cfg.out_dir) / "grads.pt")
        assert len(store) == len(two_grads) == one_cfg.mini_batches
        for g1, g2 in zip(store, two_grads):
            assert len(g1) == len(g2) and sum(int(g.count_nonzero()) for g in g1) > 0
            for a, b in zip(g1, g2):
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
        # the 2 ranks shared each group's prompt in a micro-batch (shared_prefix, the default); one process with
        # one prompt copy per sequence gives the same loss and gradients (not the same weights bit for bit: Adam's
        # first step turns fp32 round-off in a near-zero gradient into up to 2 lr, the check below)
        assert two_cfg.shared_prefix and two_cfg.micro_batch_size == 2 and two_cfg.rollouts_per_prompt == 4
        store.clear()
        per_seq = grpo.main(dataclasses.replace(one_cfg, shared_prefix=False, out_dir=f"{one_cfg.out_dir}_per_seq"),
                            sampler=FixedRollout(tokenizer, tu.Dist()))
        per_seq_grads = list(store)
        for a, b in zip(per_seq, two):
            for key in ("train/loss", "train/grad_norm", "train/clip_frac", "train/kl_ref", "entropy/mean"):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key
        assert len(per_seq_grads) == len(two_grads)
        for g1, g2 in zip(per_seq_grads, two_grads):
            for a, b in zip(g1, g2):
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
        # hence the weights, up to Adam's g / (sqrt(v) + eps) blowing up fp32 summation noise where |g| ~ 1e-8:
        # far below one step (lr) everywhere
        w1 = load_file(str(Path(one_cfg.out_dir) / "step_000001" / "model.safetensors"))
        w2 = load_file(str(Path(two_cfg.out_dir) / "step_000001" / "model.safetensors"))
        w0 = load_file(str(ckpt / "model.safetensors"))
        assert w1.keys() == w2.keys()
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=0.1 * one_cfg.lr, msg=k)
        frozen = [k for k in w0 if not any(k.startswith(model.MODULE_PREFIXES[m]) for m in one_cfg.trainable)]
        assert all(torch.equal(w0[k], w2[k]) for k in frozen)
        assert sum(not torch.equal(w0[k], w2[k]) for k in w0) > len(w0) // 3   # a real update happened
    check_dynamic_sampling(json.loads((two_ranks / "two" / "dyn" / "history.json").read_text()))


def test_two_ranks_builtin_sampler_rollouts_end_apart_resume_and_equal_one_process(two_ranks, tmp_path):
    """The built-in sampler on 2 ranks (FSDP2, gloo) whose rollouts end at different decode steps: the run finishes,
    a resume from its step-1 checkpoint repeats step 2 bit for bit, and one process trained on the same rollouts
    (Replay: the ranks' samples differ from one process's, whose generator draws for all prompts in one batch)
    gets the same rewards, loss, gradient norm, entropy and weights. The sampled tokens' log-probs (from the
    sharded model) equal the one-process training forward's."""
    two = two_ranks / "two" / "builtin"
    calls = [json.loads((two / f"rollouts_rank{r}.json").read_text()) for r in (0, 1)]
    assert len(calls[0]) == len(calls[1]) == 2   # one sampling call per step on each rank
    ends = [[max(len(o["token_ids"]) for outs in call.values() for o in outs) for call in rank] for rank in calls]
    assert ends[0] != ends[1], ends   # the ranks' decode loops ended at different steps
    assert any(o["finish_reason"] == "stop" for rank in calls for call in rank for outs in call.values() for o in outs)
    # and ran different numbers of micro-batches (grpo.micro_batches' token budget over prompt + response)
    ckpt = two_ranks / "ws" / "ckpt_eos"
    cfg = builtin_rehearsal_config(ckpt, two_ranks / "ws" / "train.jsonl", tmp_path / "one")
    tok, config = chat.load_tokenizer(ckpt), model.ModelConfig.from_json(ckpt / "config.json")
    records = {r.id: r for r in data.read_records(cfg.data)}
    lengths = lambda call: [len(grpo.encode(tok, config, records[i], cfg)["input_ids"]) + len(o["token_ids"])
                            for i, outs in call.items() for o in outs]
    counts = [[len(data.token_budget_groups(lengths(call), cfg.micro_batch_tokens)) for call in rank] for rank in calls]
    assert counts[0] != counts[1], counts
    history = json.loads((two / "history.json").read_text())
    resumed = json.loads((two_ranks / "two" / "resumed" / "history.json").read_text())
    keys = ("reward/mean", "response/len_mean", "train/loss", "train/grad_norm", "entropy/mean",
            "train/rollout_logprob_diff")
    assert len(history) == 2 and len(resumed) == 1
    assert {k: resumed[0][k] for k in keys} == {k: history[1][k] for k in keys}   # exact resume
    last = load_file(str(two / "step_000002" / "model.safetensors"))
    again = load_file(str(two_ranks / "two" / "resumed" / "step_000002" / "model.safetensors"))
    assert all(torch.equal(again[k], last[k]) for k in last)

    merged = [{**a, **b} for a, b in zip(*calls)]
    one = grpo.main(cfg, sampler=Replay(merged), reward_fn=toy_reward)
    for a, b in zip(one, history):
        assert a["reward/mean"] == b["reward/mean"] and a["response/len_mean"] == b["response/len_mean"]
        assert a["reward/zero_var_groups"] < 1   # something to learn
        for key in ("train/loss", "train/grad_norm", "entropy/mean"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key
        assert a["train/rollout_logprob_diff"] < 1e-5 and b["train/rollout_logprob_diff"] < 1e-5
    w1 = load_file(str(tmp_path / "one" / "step_000002" / "model.safetensors"))
    for k in w1:   # Adam's g / (sqrt(v) + eps) amplifies fp32 summation noise where |g| ~ 1e-8: far below lr
        torch.testing.assert_close(last[k], w1[k], rtol=0, atol=0.1 * cfg.lr, msg=k)


def test_dynamic_sampling_refills_to_full_groups(tmp_path):
    ckpt, records = make_workspace(tmp_path / "ws")
    check_dynamic_sampling(grpo.main(dynamic_sampling_config(ckpt, records, tmp_path / "out"),
                                     reward_fn=half_constant_reward))


# -----------------------------------------------------------------------------
# (c) exact resume, with a curriculum stage switch and a length schedule step inside


@pytest.mark.parametrize("rollout_dtype", ["auto", "bfloat16"])   # auto on CPU: the policy itself
def test_resume_is_exact(tmp_path, rollout_dtype):
    ckpt, records = make_workspace(tmp_path / "ws")
    second = tmp_path / "ws" / "hard.jsonl"
    second.write_text("".join(json.dumps({"id": f"h{i}", "images": [], "question": f"Hard {i}?", "answer": "2"}) + "\n"
                              for i in range(6)))
    common = dict(steps=4, save_every=2, curriculum=[(str(records), 0), (str(second), 3)],
                  response_length_schedule=[(0, 5), (2, 7)], rollout_dtype=rollout_dtype)
    full = grpo.main(run_config(ckpt, records, tmp_path / "full", **common), reward_fn=toy_reward)
    grpo.main(run_config(ckpt, records, tmp_path / "split", **{**common, "steps": 2}), reward_fn=toy_reward)
    resumed = grpo.main(run_config(ckpt, records, tmp_path / "split", resume=True, **common), reward_fn=toy_reward)
    assert len(resumed) == 2
    assert [m["data/stage"] for m in full] == [0, 0, 0, 1]
    assert [m["data/max_response_tokens"] for m in full] == [5, 5, 7, 7]

    def lines(path):
        rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/"))} for r in rows]

    a, b = lines(tmp_path / "full"), lines(tmp_path / "split")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert json.dumps(a) == json.dumps(b)   # bitwise: nan == nan as text too
    wa = load_file(str(tmp_path / "full" / "step_000004" / "model.safetensors"))
    wb = load_file(str(tmp_path / "split" / "step_000004" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_curriculum_arm_resumes_from_the_main_run_at_its_switch_step(tmp_path):
    """demo.sh's curriculum arm (normal -> hard at step 2) is the main run (normal only) up to its switch step, bit
    for bit: metrics rows and weights at step 2. So it resumes from a copy of the main run's step-2 checkpoint and
    metrics.jsonl, and the resumed arm equals the arm run from scratch (rows and weights at step 4). Before grpo.py
    checked a resume against the stages begun before it, the added stage was refused as another run."""
    ckpt, records = make_workspace(tmp_path / "ws")
    hard = tmp_path / "ws" / "hard.jsonl"
    hard.write_text("".join(json.dumps({"id": f"h{i}", "images": [], "question": f"Hard {i}?", "answer": "2"}) + "\n"
                            for i in range(6)))
    common = dict(steps=4, save_every=2, lr_schedule="cosine", warmup_steps=1)
    curriculum = [(str(records), 0), (str(hard), 2)]
    grpo.main(run_config(ckpt, records, tmp_path / "main", **common), reward_fn=toy_reward)
    grpo.main(run_config(ckpt, records, tmp_path / "scratch", curriculum=curriculum, **common), reward_fn=toy_reward)
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "main" / "step_000002", tmp_path / "resumed" / "step_000002")
    shutil.copy(tmp_path / "main" / "metrics.jsonl", tmp_path / "resumed" / "metrics.jsonl")
    resumed = grpo.main(run_config(ckpt, records, tmp_path / "resumed", curriculum=curriculum, resume=True,
                                   **common), reward_fn=toy_reward)
    assert [m["data/stage"] for m in resumed] == [1, 1]

    def rows(run):
        return [json.dumps({k: v for k, v in json.loads(line).items() if not k.startswith(("time/", "perf/"))})
                for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    def weights(run, step):
        return load_file(str(tmp_path / run / f"step_{step:06d}" / "model.safetensors"))

    assert rows("scratch")[:2] == rows("main")[:2] and rows("scratch")[2:] != rows("main")[2:]
    assert rows("resumed") == rows("scratch") and len(rows("resumed")) == 4
    for (a, step), b in ((("main", 2), "scratch"), (("resumed", 4), "scratch")):
        wa, wb = weights(a, step), weights(b, step)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a stage that had begun before the resume step still defines the run: another hard file at step 1 is refused
    (tmp_path / "early").mkdir()
    shutil.copytree(tmp_path / "main" / "step_000002", tmp_path / "early" / "step_000002")
    with pytest.raises(ValueError, match=r"another run: curriculum_steps: \[0\] -> \[0, 1\]"):
        grpo.main(run_config(ckpt, records, tmp_path / "early", curriculum=[(str(records), 0), (str(hard), 1)],
                             resume=True, **common), reward_fn=toy_reward)


def test_schedule_steps_stops_early_on_the_longer_schedule(tmp_path):
    """steps=2, schedule_steps=4 is the first half of the 4-step run, bit for bit (cosine LR included); without
    schedule_steps the cosine is squeezed into 2 steps and step 2's lr differs."""
    ckpt, records = make_workspace(tmp_path / "ws")
    common = dict(lr_schedule="cosine", save_every=2)
    full = grpo.main(run_config(ckpt, records, tmp_path / "full", steps=4, **common), reward_fn=toy_reward)
    early = grpo.main(run_config(ckpt, records, tmp_path / "early", steps=2, schedule_steps=4, **common),
                      reward_fn=toy_reward)
    squeezed = grpo.main(run_config(ckpt, records, tmp_path / "squeezed", steps=2, **common), reward_fn=toy_reward)

    def same(m):
        return json.dumps({k: v for k, v in m.items() if not k.startswith(("time/", "perf/"))})
    assert [same(m) for m in early] == [same(m) for m in full[:2]]
    assert squeezed[1]["train/lr"] != full[1]["train/lr"]
    wa = load_file(str(tmp_path / "full" / "step_000002" / "model.safetensors"))
    wb = load_file(str(tmp_path / "early" / "step_000002" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="schedule_steps"):
        grpo.main(run_config(ckpt, records, tmp_path / "bad", steps=4, schedule_steps=3), reward_fn=toy_reward)


def test_one_seed_per_engine(tmp_path):
    """The seed handed to generate is the same on every rank of one vLLM engine (its tp workers must sample
    alike) and differs between builtin ranks, each of which samples its own prompts."""
    ckpt, records = make_workspace(tmp_path / "ws")
    tokenizer, config = chat.load_tokenizer(ckpt), model.ModelConfig.from_json(ckpt / "config.json")
    cfg, recs = run_config(ckpt, records, tmp_path), data.read_records(records)
    seeds = {}

    class SeedRecorder(FixedRollout):
        def sample(self, prompts, n, max_tokens, seed=None):
            seeds[(len(self.ranks), self.rank)] = seed
            return super().sample(prompts, n, max_tokens, seed)

    for engine_ranks in ([2, 3], None):
        for rank in (2, 3):
            dist = tu.Dist(rank=rank, world_size=4)
            rollout = SeedRecorder(tokenizer, dist)
            rollout.ranks, rollout.rank = engine_ranks or [rank], rank
            indices = data.next_batch(len(recs), cfg.prompts_per_step, cfg.seed, (0, 0))[0]
            grpo.sample_groups(grpo.Run(cfg, dist, tokenizer, config, rollout, toy_reward), 5, 0, recs, indices, 6)
    assert seeds[(2, 2)] == seeds[(2, 3)]   # one vLLM engine of ranks 2 and 3
    assert seeds[(1, 2)] != seeds[(1, 3)]   # builtin: one sampler per rank


def test_bf16_rollout_copy(tmp_path):
    """One GPU samples from a bf16 copy (forced here on CPU): bf16(master) after every refresh, the fp32 master
    weights untouched, and it samples exactly as the checkpoint loaded in bf16 does."""
    ckpt, records = make_workspace(tmp_path / "ws")
    tokenizer = chat.load_tokenizer(ckpt)
    config = model.ModelConfig.from_json(ckpt / "config.json")
    net = tu.load_model_sharded(ckpt, tu.Dist(), ["connector", "llm"]).eval()
    master = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = run_config(ckpt, records, tmp_path / "out", rollout_dtype="bfloat16", temperature=0.8)
    rollout = grpo.rollout_sampler(cfg, tu.Dist(), net, tokenizer, ckpt)
    assert rollout.copy is not None and rollout.net is rollout.copy
    assert grpo.rollout_sampler(run_config(ckpt, records, tmp_path / "o2"), tu.Dist(), net, tokenizer, ckpt).copy is None
    copied = rollout.copy.state_dict()
    assert all(copied[k].dtype == torch.bfloat16 and torch.equal(copied[k], v.to(torch.bfloat16))
               for k, v in master.items())
    rotary = [b for n, b in rollout.copy.named_buffers() if n.endswith("inv_freq")]
    assert rotary and all(b.dtype == torch.float32 for b in rotary)   # rebuilt in fp32, as load_model does

    prompts = [dict(grpo.encode(tokenizer, config, r, cfg), id=r.id) for r in data.read_records(records)[:2]]
    out = rollout.sample(prompts, 2, 6, seed=3)
    loaded = model.load_model(ckpt, dtype=torch.bfloat16).eval()
    reference = sampling.BuiltinSampler(loaded, tokenizer, cfg.temperature, cfg.top_p).sample(prompts, 2, 6, seed=3)
    assert out == reference
    assert all(torch.equal(v, master[k]) and v.dtype == master[k].dtype for k, v in net.state_dict().items())

    with torch.no_grad():   # an optimizer step on the trainable modules, then the refresh
        for p in net.parameters():
            if p.requires_grad:
                p.add_(1e-2 * torch.randn_like(p))
    rollout.update_weights(net)
    copied = rollout.copy.state_dict()
    assert all(torch.equal(copied[k], v.to(torch.bfloat16)) for k, v in net.state_dict().items())
    assert torch.equal(copied["vision_model.embeddings.class_embedding"],
                       master["vision_model.embeddings.class_embedding"].to(torch.bfloat16))   # frozen: as loaded

FSDP_COPY_CHECK = """
import sys, torch, chat, grpo, train_utils as tu
sys.path.insert(0, sys.argv[1])
from test_grpo import make_workspace, run_config
from pathlib import Path
root = Path(sys.argv[2])
ckpt, records = make_workspace(root / "ws")
net = tu.load_model_sharded(ckpt, tu.Dist(), ["connector", "llm"], param_dtype=torch.bfloat16).eval()
full = {tu.clean_name(k): v.full_tensor() for k, v in net.state_dict().items()}
rollout = grpo.rollout_sampler(run_config(ckpt, records, root / "out", rollout_dtype="bfloat16"), tu.Dist(), net,
                            chat.load_tokenizer(ckpt), ckpt)
with torch.no_grad():
    for p in net.parameters():
        if p.requires_grad:
            p.add_(1e-2)
rollout.update_weights(net)
copied = rollout.copy.state_dict()
fresh = {tu.clean_name(k): v.full_tensor() for k, v in net.state_dict().items()}
assert set(copied) == set(full), sorted(set(copied) ^ set(full))
assert all(torch.equal(copied[k], v.to(torch.bfloat16)) for k, v in fresh.items())
print("OK", len(copied))
"""


def test_bf16_rollout_copy_of_one_rank_fsdp_policy(tmp_path):
    """One GPU in bf16 trains a one-rank FSDP2 model (train_utils.wrap_fsdp): the rollout copy is built from and
    refreshed with its DTensors under the checkpoint names (gloo on CPU, in a subprocess: it owns the group)."""
    proc = subprocess.run([sys.executable, "-c", FSDP_COPY_CHECK, str(REPO / "tests"), str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


# -----------------------------------------------------------------------------
# (c2) one out_dir, one run: a fresh start is refused, a resume of another run is refused, a damaged last
# checkpoint is skipped


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    """A finished 2-step run with checkpoints step_000001 and step_000002; tests copy its out_dir."""
    root = tmp_path_factory.mktemp("two_step")
    ckpt, records = make_workspace(root / "ws")
    cfg = run_config(ckpt, records, root / "out", save_every=1, keep_last=0)
    grpo.main(cfg, reward_fn=toy_reward)
    return cfg


def copy_run(cfg, out, **overrides):
    shutil.copytree(cfg.out_dir, out)
    return grpo.Config(**{**cfg.__dict__, "out_dir": str(out), **overrides})


def test_fresh_run_over_checkpoints_is_refused(two_step_run, tmp_path):
    cfg = copy_run(two_step_run, tmp_path / "out", seed=5)
    metrics = (tmp_path / "out" / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match=r"already has checkpoints \(step_000002\): pass --resume or another out_dir"):
        grpo.main(cfg, reward_fn=toy_reward)
    assert (tmp_path / "out" / "metrics.jsonl").read_text() == metrics   # the old run's metrics are untouched


def test_resume_refuses_a_changed_model_or_run_config(two_step_run, tmp_path, capsys):
    tok = chat.load_tokenizer(two_step_run.init_from)
    config = model.ModelConfig.from_json(Path(two_step_run.init_from) / "config.json")
    weights = model.load_model(two_step_run.init_from).state_dict()
    config.llm_config["rope_theta"] = 50.0   # same shapes, another model
    model.save_model(tmp_path / "rope50", weights, config, tok)
    cfg = copy_run(two_step_run, tmp_path / "out", resume=True, steps=3, init_from=str(tmp_path / "rope50"))
    with pytest.raises(ValueError, match=r"step_000002 was written by another run: "
                                         r"model_config\.llm_config\.rope_theta: 10000\.0 -> 50\.0; "
                                         r"sha256 of init_from: '[0-9a-f]+' -> '[0-9a-f]+'\."):
        grpo.main(cfg, reward_fn=toy_reward)
    with pytest.raises(ValueError, match=r"another run: prompts_per_step: 4 -> 8"):
        grpo.main(grpo.Config(**{**cfg.__dict__, "init_from": two_step_run.init_from, "prompts_per_step": 8}),
                  reward_fn=toy_reward)
    capsys.readouterr()
    history = grpo.main(grpo.Config(**{**cfg.__dict__, "allow_run_change": True}), reward_fn=toy_reward)
    assert len(history) == 1 and "rope_theta" in capsys.readouterr().err
    # paths may change (a moved data file), steps too: the same run
    moved = Path(two_step_run.data).with_name("moved.jsonl")
    moved.write_bytes(Path(two_step_run.data).read_bytes())
    cfg = copy_run(two_step_run, tmp_path / "out2", resume=True, steps=3, data=str(moved))
    assert len(grpo.main(cfg, reward_fn=toy_reward)) == 1


def test_resume_refuses_another_init_from_and_accepts_a_copy(two_step_run, tmp_path):
    """init_from is the KL reference and the tokenizer: a resume pointing it at other weights or another tokenizer
    is refused (the config is the same), a copy of the same checkpoint elsewhere is fine."""
    weights = model.load_model(two_step_run.init_from).state_dict()
    weights["mlp1.1.bias"] = weights["mlp1.1.bias"] + 1e-3   # same shapes and config, other weights
    config = model.ModelConfig.from_json(Path(two_step_run.init_from) / "config.json")
    model.save_model(tmp_path / "other_weights", weights, config, chat.load_tokenizer(two_step_run.init_from))
    shutil.copytree(two_step_run.init_from, tmp_path / "other_tokenizer")
    tok_config = tmp_path / "other_tokenizer" / "tokenizer_config.json"
    tok_config.write_text(json.dumps({**json.loads(tok_config.read_text()), "model_max_length": 77}))
    for other in ("other_weights", "other_tokenizer"):
        cfg = copy_run(two_step_run, tmp_path / f"out_{other}", resume=True, steps=3,
                       init_from=str(tmp_path / other))
        with pytest.raises(ValueError, match=r"step_000002 was written by another run: sha256 of init_from: "):
            grpo.main(cfg, reward_fn=toy_reward)
    shutil.copytree(two_step_run.init_from, tmp_path / "copy")
    cfg = copy_run(two_step_run, tmp_path / "out", resume=True, steps=3, init_from=str(tmp_path / "copy"))
    assert len(grpo.main(cfg, reward_fn=toy_reward)) == 1


def test_resume_falls_back_from_a_truncated_last_checkpoint(two_step_run, tmp_path, capsys):
    cfg = copy_run(two_step_run, tmp_path / "out", resume=True)
    last = tmp_path / "out" / "step_000002" / "model.safetensors"
    intact = last.read_bytes()
    last.write_bytes(b"")   # a power loss after the rename, before the data reached the disk (simulated)
    capsys.readouterr()
    assert len(grpo.main(cfg, reward_fn=toy_reward)) == 1   # step 2 again, from step_000001
    out = capsys.readouterr()
    assert f"cannot resume from {last.parent}" in out.err and "resumed from" in out.out
    assert last.read_bytes() == intact   # the exact resume wrote the same step 2 again


# -----------------------------------------------------------------------------
# (d) frozen modules stay bit-identical (the frozen-connector ablation of Fig. 6)


def test_frozen_modules_are_bit_identical(tmp_path):
    ckpt, records = make_workspace(tmp_path / "ws")
    grpo.main(run_config(ckpt, records, tmp_path / "out", trainable=["vision", "llm"]), reward_fn=toy_reward)
    before = load_file(str(ckpt / "model.safetensors"))
    after = load_file(str(tmp_path / "out" / "step_000002" / "model.safetensors"))
    for name in before:
        if name.startswith(model.MODULE_PREFIXES["connector"]):
            assert torch.equal(before[name], after[name]), name
    for prefix in (model.MODULE_PREFIXES["vision"], model.MODULE_PREFIXES["llm"]):
        changed = [n for n in before if n.startswith(prefix) and not torch.equal(before[n], after[n])]
        assert len(changed) > 10, prefix   # the images reached the ViT: it trained

# -----------------------------------------------------------------------------
# (e) the reward rises


def test_reward_rises_on_a_toy_task(tmp_path):
    ckpt, records = make_workspace(tmp_path / "ws", images=False)
    history = grpo.main(run_config(ckpt, records, tmp_path / "out", steps=20, rollouts_per_prompt=8, lr=3e-3,
                                   weight_decay=0.0, micro_batch_size=32), reward_fn=toy_reward)
    curve = [m["reward/mean"] for m in history]
    first, last = sum(curve[:4]) / 4, sum(curve[-4:]) / 4
    assert first < 0.15 and last > first + 0.3, [round(x, 3) for x in curve]
    assert history[-1]["entropy/mean"] < history[0]["entropy/mean"]   # the policy sharpens as it learns

# -----------------------------------------------------------------------------
# data: over-long prompts skipped and counted, or an error naming the record; missing images named


def read_prompt_records(path, tokenizer, config, cfg):
    """data.read_prompt_records as grpo.main calls it, in one process."""
    return data.read_prompt_records(path, lambda r: grpo.encode(tokenizer, config, r, cfg), tu.Dist(),
                                    cfg.max_prompt_tokens, cfg.skip_long_prompts, cfg.prompts_per_step)


def test_overlong_prompts_and_missing_images(tmp_path, capsys):
    ckpt, records = make_workspace(tmp_path / "ws")
    tokenizer = chat.load_tokenizer(ckpt)
    config = model.ModelConfig.from_json(ckpt / "config.json")
    lengths = {r.id: len(grpo.encode(tokenizer, config, r, run_config(ckpt, records, tmp_path, max_prompt_tokens=0))
                         ["input_ids"]) for r in data.read_records(records)}
    limit = max(lengths[i] for i in ("q0", "q3", "q6"))   # the text-only ones; an image adds 18 tokens
    cfg = run_config(ckpt, records, tmp_path, max_prompt_tokens=limit, prompts_per_step=2)
    kept, skipped = read_prompt_records(records, tokenizer, config, cfg)
    assert [r.id for r in kept] == ["q0", "q3", "q6"] and skipped == 5
    assert re.search(r"train\.jsonl: 3 records, 5 skipped \(prompt > \d+ tokens, the first at .*train\.jsonl:2\)",
                     capsys.readouterr().out)   # counted, and one of them named by file:line
    cfg = run_config(ckpt, records, tmp_path, max_prompt_tokens=limit, skip_long_prompts=False)
    with pytest.raises(ValueError, match=r"train\.jsonl:\d+: prompt of record 'q\d' is longer than"):
        read_prompt_records(records, tokenizer, config, cfg)
    # a missing image is an error naming it, at startup rather than mid-run
    with open(records, "a") as f:
        f.write(json.dumps({"id": "gone", "images": ["missing.png"], "question": "?", "answer": "1"}) + "\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_prompt_records(records, tokenizer, config, run_config(ckpt, records, tmp_path))

# -----------------------------------------------------------------------------
# vLLM backend against a fake vllm module: engine arguments, requests, sleep/wake, weight push


class FakeLLM:
    """The public LLM API grpo.py may use: building it reseeds the global RNGs as vLLM's worker does
    (set_random_seed), collective_rpc("reload_weights", kwargs) records the weights its iterator yields,
    model_config.dtype is the engine's dtype; llm_engine.engine_core.shutdown() as in vLLM 0.32.0 (no LLM-level
    shutdown there). The real engine's behaviour is tested in test_vllm.py."""
    calls = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.pushed = []
        self.prompt_ids = {}
        self.model_config = types.SimpleNamespace(dtype=torch.float16)
        self.llm_engine = types.SimpleNamespace(engine_core=types.SimpleNamespace(
            shutdown=lambda: FakeLLM.calls.append("shutdown")))
        random.seed(kwargs["seed"]), np.random.seed(kwargs["seed"]), torch.manual_seed(kwargs["seed"])

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        FakeLLM.calls.append(method)
        assert method == "reload_weights" and kwargs["is_checkpoint_format"] is True
        self.pushed.extend(kwargs["weights_iterator"])
        return [None]

    def generate(self, requests, params, use_tqdm=True):
        FakeLLM.calls.append("generate")
        self.requests, self.params = requests, params
        outs = []
        for req in requests:
            completions = [types.SimpleNamespace(token_ids=(5, 6, 2), finish_reason="stop", text="",
                                                 logprobs=[{5: types.SimpleNamespace(logprob=-0.5)},
                                                           {6: types.SimpleNamespace(logprob=-1.0)},
                                                           {2: types.SimpleNamespace(logprob=-0.1)}])
                           for _ in range(params[len(outs)].kwargs["n"])]
            outs.append(types.SimpleNamespace(prompt_token_ids=self.prompt_ids.get(req["prompt"]), outputs=completions))
        return outs

    def sleep(self, level):
        FakeLLM.calls.append(f"sleep({level})")

    def wake_up(self, tags=None):
        FakeLLM.calls.append(f"wake_up({tags})")



def test_vllm_backend_with_a_fake_engine(tmp_path, monkeypatch):
    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(kwargs=kw)
    fake.platforms = types.ModuleType("vllm.platforms")   # CUDA: sleep mode there
    fake.platforms.current_platform = types.SimpleNamespace(is_sleep_mode_available=lambda: True)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.platforms", fake.platforms)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    FakeLLM.calls.clear()
    ckpt, records = make_workspace(tmp_path / "ws")
    tokenizer = chat.load_tokenizer(ckpt)
    config = model.ModelConfig.from_json(ckpt / "config.json")
    cfg = run_config(ckpt, records, tmp_path, vllm_tensor_parallel_size=2, rollout_backend="vllm", max_tiles=2,
                     response_length_schedule=[(0, 4096), (10, 8192)], max_prompt_tokens=1024, temperature=1.0)
    tu.set_seed(5)
    rng_before = tu.get_rng_state()
    rollout = grpo.rollout_sampler(cfg, tu.Dist(rank=3, world_size=4), None, tokenizer, ckpt)
    assert isinstance(rollout, sampling.VLLMSampler) and rollout.ranks == [2, 3]   # engine of ranks 2 and 3
    # the engine reseeded the global RNGs with its seed; the trainer's state is back
    rng_after = tu.get_rng_state()
    assert rng_after["python"] == rng_before["python"] and torch.equal(rng_after["torch"], rng_before["torch"])
    assert (rng_after["numpy"][1] == rng_before["numpy"][1]).all() and rng_after["numpy"][2] == rng_before["numpy"][2]
    kw = rollout.llm.kwargs
    assert kw["model"] == str(ckpt) and kw["tensor_parallel_size"] == 2 and kw["enable_sleep_mode"] is True
    assert kw["distributed_executor_backend"] == "external_launcher" and kw["dtype"] == "bfloat16"
    assert kw["limit_mm_per_prompt"] == {"image": 8, "video": 0} and kw["max_model_len"] == 1024 + 8192
    assert kw["hf_overrides"] == {"max_dynamic_patch": 2} and "mm_processor_kwargs" not in kw
    assert kw["seed"] == cfg.seed + 1 and kw["logprobs_mode"] == "raw_logprobs"

    recs = data.read_records(records)
    prompts = [dict(grpo.encode(tokenizer, config, r, cfg), id=r.id) for r in recs[:2]]   # q0 text, q1 image
    rollout.llm.prompt_ids = {p["prompt"]: p["input_ids"] for p in prompts}
    out = rollout.sample(prompts, 3, 77, seed=0)
    req = rollout.llm.requests
    assert req[0] == {"prompt": prompts[0]["prompt"]} and "<image>" in req[1]["prompt"]
    assert req[1]["multi_modal_data"]["image"] == prompts[1]["images"] and len(req[1]["multi_modal_data"]["image"]) == 1
    seeds = [p.kwargs["seed"] for p in rollout.llm.params]   # per request, from generate's seed
    assert None not in seeds and len(set(seeds)) == 2
    rollout.sample(prompts, 3, 77, seed=0)
    assert [p.kwargs["seed"] for p in rollout.llm.params] == seeds
    rollout.sample(prompts, 3, 77, seed=1)
    assert [p.kwargs["seed"] for p in rollout.llm.params] != seeds
    sp = rollout.llm.params[0].kwargs
    assert (sp["n"], sp["max_tokens"], sp["temperature"], sp["logprobs"]) == (3, 77, 1.0, 0)
    assert sp["stop_token_ids"] == sampling.stop_token_ids(tokenizer) and tokenizer.eos_token_id in sp["stop_token_ids"]
    assert set(sp["logit_bias"]) == set(sampling.image_token_ids(tokenizer))
    assert out[1][2] == {"token_ids": [5, 6, 2], "finish_reason": "stop", "logprobs": [-0.5, -1.0, -0.1], "text": "",
                         "num_tokens": 3}

    # sleep level 1 (it clears vLLM's prefix, multimodal and encoder caches itself)
    rollout.sleep()
    assert FakeLLM.calls[-1] == "sleep(1)"

    # weight push: only trainable parameters, under the checkpoint names, in the engine's dtype, one rpc
    net = tu.load_model_sharded(ckpt, tu.Dist(), ["connector"])
    FakeLLM.calls.clear()
    rollout.update_weights(net)
    names = [name for name, _ in rollout.llm.pushed]
    assert names == [n for n, p in net.named_parameters() if p.requires_grad] and names[0].startswith("mlp1.")
    assert all(t.dtype == torch.float16 for _, t in rollout.llm.pushed)
    torch.testing.assert_close(rollout.llm.pushed[0][1].float(), net.mlp1[0].weight.detach(), rtol=1e-3, atol=1e-3)
    assert FakeLLM.calls == ["wake_up(['weights'])", "reload_weights", "wake_up(['kv_cache'])"]
    # not asleep: it puts the engine to sleep first (a push into a running engine left a stale encoder cache)
    rollout.update_weights(net)
    assert FakeLLM.calls[3:] == ["sleep(1)", "wake_up(['weights'])", "reload_weights", "wake_up(['kv_cache'])"]
    net.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        rollout.update_weights(net)
    rollout.close()
    assert FakeLLM.calls[-1] == "shutdown"

    # one process (python grpo.py, no torchrun): no external_launcher, which reads torchrun's RANK; sleep mode only
    # where the platform has it
    fake.platforms.current_platform.is_sleep_mode_available = lambda: False
    kw = grpo.rollout_sampler(dataclasses.replace(cfg, vllm_tensor_parallel_size=1), tu.Dist(), None, tokenizer,
                              ckpt).llm.kwargs
    assert "distributed_executor_backend" not in kw and kw["enable_sleep_mode"] is False

    # a prompt that vLLM expands differently from us is an error, not a silently corrupted sample
    rollout.llm.prompt_ids = {prompts[1]["prompt"]: prompts[1]["input_ids"][:-3]}
    with pytest.raises(ValueError, match="record q1: vLLM's prompt"):
        rollout.sample(prompts[1:], 1, 5, seed=0)



def test_an_arm_without_learning_signal_warns(tmp_path, capsys, monkeypatch):
    """Every group's rewards equal (eq. 6: all advantages 0, no update): grpo.py says so on stderr, loudly, and
    counts the steps in metrics.jsonl (report.py flags the arm)."""
    monkeypatch.setattr(grpo_metrics, "NO_SIGNAL_WARNING", 2)
    ckpt, records = make_workspace(tmp_path / "ws")

    def zero_reward(texts, records_):
        return [{**t, "reward": 0.0} for t in toy_reward(texts, records_)]

    history = grpo.main(run_config(ckpt, records, tmp_path / "out", steps=2, save_every=1), reward_fn=zero_reward)
    err = capsys.readouterr().err
    assert "WARNING" in err and "no learning signal for 2 steps in a row (steps 1-2)" in err
    # the counts are checkpointed: a resume continues them (the report reads the last line)
    history += grpo.main(run_config(ckpt, records, tmp_path / "out", steps=3, save_every=1, resume=True),
                         reward_fn=zero_reward)
    assert [h["train/no_signal_steps"] for h in history] == [1, 2, 3]
    assert "3 of 3 steps had no learning signal" in capsys.readouterr().err


def test_bad_counts_and_lr_are_refused_at_startup(tmp_path):
    ckpt, records = make_workspace(tmp_path / "ws")
    for overrides, message in (({"save_every": 0}, "--save_every=0: must be > 0"),
                               ({"mini_batches": 0}, "--mini_batches=0: must be > 0"),
                               ({"rollout_batch_size": 0}, "--rollout_batch_size=0: must be > 0"),
                               ({"steps": -3}, "--steps=-3: must be > 0"),
                               ({"trainable": []}, r"--trainable=\[\]: must not be empty"),
                               ({"lr": float("inf")}, "--lr=inf: must be a finite number"),
                               ({"lr": 1e3}, r"--lr=1000.0: the learning rate must be in \(0, 1\]"),
                               ({"response_length_schedule": [(0, 8), (20, 16), (10, 32)]},
                                "--response_length_schedule: must start at step 0 and be sorted"),
                               ({"curriculum": [(str(records), 5)]}, "--curriculum: must start at step 0")):
        with pytest.raises(ValueError, match=message):
            grpo.main(run_config(ckpt, records, tmp_path / "out", **overrides), reward_fn=toy_reward)
    assert not (tmp_path / "out" / "metrics.jsonl").exists()   # nothing ran


def test_nonfinite_grad_norm_stops_the_run_and_saves_nothing_non_finite(tmp_path, monkeypatch):
    """From step 3 every grad norm is NaN: those updates are skipped, counted as steps without a learning signal,
    never checkpointed, and the third in a row stops the run naming the step and the value."""
    ckpt, records = make_workspace(tmp_path / "ws")
    calls, real = [], tu.clip_grad_norm

    def nan_after_two_steps(params, max_norm):
        calls.append(1)
        norm = real(params, max_norm)
        return float("nan") if len(calls) > 2 else norm   # one optimizer step per GRPO step here

    monkeypatch.setattr(tu, "clip_grad_norm", nan_after_two_steps)
    cfg = run_config(ckpt, records, tmp_path / "out", steps=8, save_every=1, keep_last=0)
    with pytest.raises(RuntimeError, match=r"step 5: train/loss .* and train/grad_norm nan: a NaN/inf loss or grad "
                                           r"norm 3 steps in a row"):
        grpo.main(cfg, reward_fn=toy_reward)
    assert sorted(p.name for p in (tmp_path / "out").glob("step_*")) == ["step_000001", "step_000002"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/skipped_updates"] for r in rows] == [0, 0, 1, 1, 1]
    assert [r["train/no_signal_steps"] - rows[1]["train/no_signal_steps"] for r in rows[2:]] == [1, 2, 3]


def test_verifier_counters_every_step_and_the_api_key_is_never_written(tmp_path, monkeypatch, capsys):
    """A key-protected verifier on 127.0.0.1: the key, read from the variable the config names, reaches it as a
    Bearer header; reward/verifier_* are in every metrics line; no file of the run, the config and the console
    output hold the key."""
    key, seen = "sk-grpo-test-key-4f1c9a7e", []

    def respond(handler, request):
        seen.append(handler.headers.get("Authorization"))
        stub_server.reply_chat(handler, "No", status=200 if seen[-1] == f"Bearer {key}" else 401)

    monkeypatch.setenv("R1V3_VERIFIER_KEY", key)
    ckpt, records = make_workspace(tmp_path / "ws")
    with stub_server.chat_endpoint(respond) as url:
        cfg = run_config(ckpt, records, tmp_path / "out", save_every=1, verifier_url=url,
                         verifier_api_key_env="R1V3_VERIFIER_KEY")
        grpo.main(cfg, sampler=FixedRollout(chat.load_tokenizer(ckpt), tu.Dist()))
    assert seen and set(seen) == {f"Bearer {key}"}
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["reward/verifier_calls"] > 0 for r in rows)
    assert sum(r["reward/verifier_calls"] for r in rows) == len(seen)
    assert all(r["reward/verifier_failures"] == r["reward/verifier_timeouts"] == r["reward/verifier_circuit_open"] == 0
               for r in rows)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "trainer_state.pt" for p in files)
    assert [p for p in files if key.encode() in p.read_bytes()] == []
    out = capsys.readouterr()
    assert key not in out.out + out.err and key not in json.dumps(dataclasses.asdict(cfg))


if __name__ == "__main__":
    torchrun_worker(sys.argv[1], sys.argv[2])
