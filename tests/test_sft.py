"""Tests for sft.py (tiny model, CPU). Also the torchrun worker: `python -m torch.distributed.run --standalone
--nproc_per_node=2 tests/test_sft.py CONFIGS_JSON` (launched by the two_ranks fixture)."""
import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

import chat
import checkpoint
import data
import model
import sft
import train_utils as tu
from test_train_utils import torchrun

torch.set_num_threads(1)  # the CI cores are shared: multi-threaded tiny matmuls are ~20x slower under load

A1 = "<think>\nI see 2 red circles.\n</think>\n\nThe answer is \\boxed{2}."
A2 = "<think>\nBlue, one square.\n</think>\n\n1"
MULTI_TURN = {"messages": [{"role": "system", "content": "You are careful."},
                           {"role": "user", "content": "<image>\nHow many circles?"},
                           {"role": "assistant", "content": A1},
                           {"role": "user", "content": "And <image> here?"},
                           {"role": "assistant", "content": A2}],
              "images": ["red.png", "blue.png"]}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def chat_sample(i, image=None):
    user = ("<image>\n" if image else "") + f"Count the circles: {i}?"
    answer = f"<think>\nThere are {i} circles.\n</think>\n\n\\boxed{{{i}}}"
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
            "images": [image] if image else []}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    tok = chat.build_tiny_tokenizer()
    mc = model.tiny_config(vocab_size=len(tok))  # 112px tiles, 1 tile per image, 16 image tokens
    torch.manual_seed(0)
    net = model.build_model(mc)
    model.save_model(root / "init", net.state_dict(), mc, tokenizer=tok)
    Image.new("RGB", (60, 40), (200, 30, 30)).save(root / "red.png")
    Image.new("RGB", (40, 60), (30, 30, 200)).save(root / "blue.png")
    write_jsonl(root / "train.jsonl", [chat_sample(i, ["red.png", None, "blue.png", None][i % 4]) for i in range(8)])
    write_jsonl(root / "multi_turn.jsonl", [MULTI_TURN])
    return SimpleNamespace(root=root, tok=tok, mc=mc, init=root / "init", train=root / "train.jsonl")


def make_config(tiny, out_dir, **overrides):
    kwargs = dict(checkpoint=str(tiny.init), data=str(tiny.train), out_dir=str(out_dir), global_batch_size=4,
                  micro_batch_size=2, max_seq_len=160, lr=2e-3, warmup_ratio=0.0, max_steps=2, save_dtype="float32",
                  compute_dtype="float32", wandb=False)
    return sft.Config(**{**kwargs, **overrides})


def load_net(tiny):
    net = model.load_model(tiny.init)
    net.img_context_token_id = tiny.tok.convert_tokens_to_ids(chat.IMG_CONTEXT_TOKEN)
    return net


def decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def labelled_spans(labels):
    spans, start = [], None
    for t, label in enumerate(list(labels) + [-100]):
        if label != -100 and start is None:
            start = t
        if label == -100 and start is not None:
            spans.append((start, t))
            start = None
    return spans

# -----------------------------------------------------------------------------
# batches and loss


@pytest.mark.parametrize("packing", [False, True])
def test_label_masking_exact_through_the_batch_path(tiny, tmp_path, packing):
    cfg = make_config(tiny, tmp_path, packing=packing, max_seq_len=300, data=str(tiny.root / "multi_turn.jsonl"))
    sample = data.read_chat_jsonl(cfg.data)[0]
    samples, skipped, truncated = sft.tokenize_share([sample, sample], [0, 1], cfg, tiny.tok, tiny.mc, tu.Dist())
    assert (skipped, truncated) == (0, 0)
    [batch] = sft.micro_batches(samples, cfg, tiny.tok.pad_token_id, tiny.mc.force_image_size)
    ids, labels = batch["input_ids"].reshape(-1).tolist(), batch["labels"].reshape(-1).tolist()

    image = "<img>" + "<IMG_CONTEXT>" * 16 + "</img>"
    one = ("<|im_start|>system\nYou are careful.<|im_end|>\n"
           f"<|im_start|>user\n{image}\nHow many circles?<|im_end|>\n"
           f"<|im_start|>assistant\n{A1}<|im_end|>\n"
           f"<|im_start|>user\nAnd {image} here?<|im_end|>\n"
           f"<|im_start|>assistant\n{A2}<|im_end|>\n")
    n = len(samples[0]["input_ids"])
    assert decode(tiny.tok, ids) == one + one  # two rows of n tokens, or one packed row of 2n
    # exactly the assistant contents with their <|im_end|> are labelled, in both copies of the sample
    spans = labelled_spans(labels)
    assert [decode(tiny.tok, ids[a:b]) for a, b in spans] == [A1 + "<|im_end|>", A2 + "<|im_end|>"] * 2
    assert all(labels[t] == ids[t] for a, b in spans for t in range(a, b))
    n_labelled = 2 * len(tiny.tok.encode(A1 + "<|im_end|>") + tiny.tok.encode(A2 + "<|im_end|>"))
    assert sum(label != -100 for label in labels) == n_labelled == sft.num_targets(batch)
    assert ids.count(tiny.tok.convert_tokens_to_ids("<IMG_CONTEXT>")) == 4 * 16
    assert batch["pixel_values"].shape == (4, 3, 112, 112)
    if packing:  # one row, two documents, positions restarting at the second
        assert batch["input_ids"].shape == (1, 2 * n)
        assert batch["position_ids"][0, n].item() == 0 and "attention_mask" not in batch   # no dense mask

    # the trainer's loss is cross-entropy over exactly those tokens (reference: full logits, unpacked)
    net = load_net(tiny)
    with torch.no_grad():
        nll, _ = sft.nll_and_entropy(net, batch, torch.device("cpu"), chunk_tokens=7)
        plain = data.collate_right_padded(samples, tiny.tok.pad_token_id, tiny.mc.force_image_size)
        logits = net(plain["input_ids"], plain["pixel_values"], plain["image_flags"], plain["attention_mask"])
        reference = F.cross_entropy(logits[:, :-1].flatten(0, 1), plain["labels"][:, 1:].flatten(),
                                    ignore_index=-100, reduction="sum")
    torch.testing.assert_close(nll, reference, rtol=1e-5, atol=1e-4)


def test_packed_loss_and_gradients_equal_unpacked(tiny, tmp_path):
    cfg = make_config(tiny, tmp_path, max_seq_len=100, micro_batch_size=8)
    train_set = data.read_chat_jsonl(tiny.train)
    samples, _, _ = sft.tokenize_share(train_set, list(range(6)), cfg, tiny.tok, tiny.mc, tu.Dist())
    assert [len(s["input_ids"]) for s in samples] == [58, 37, 56, 37, 56, 37]
    pad, size = tiny.tok.pad_token_id, tiny.mc.force_image_size
    [unpacked] = sft.micro_batches(samples, cfg, pad, size)
    packed = sft.micro_batches(samples, sft.Config(**{**cfg.__dict__, "packing": True, "micro_batch_tokens": 200}),
                               pad, size)
    # next-fit by a 200-token budget: [58+37+56+37], [56+37]; each one row without padding
    assert [tuple(b["input_ids"].shape) for b in packed] == [(1, 188), (1, 93)]
    assert [b["seq_lens"] for b in packed] == [[[58, 37, 56, 37]], [[56, 37]]]
    assert (packed[0]["input_ids"] != pad).all()
    net = load_net(tiny)

    def loss_and_grads(batches):
        net.zero_grad(set_to_none=True)
        loss = sum(sft.nll_and_entropy(net, b, torch.device("cpu"), 64)[0] for b in batches)
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}

    loss_unpacked, grads_unpacked = loss_and_grads([unpacked])
    loss_packed, grads_packed = loss_and_grads(packed)
    torch.testing.assert_close(loss_packed, loss_unpacked, rtol=1e-5, atol=1e-4)
    assert grads_packed.keys() == grads_unpacked.keys() and any(k.startswith("vision_model") for k in grads_packed)
    for k in grads_unpacked:
        torch.testing.assert_close(grads_packed[k], grads_unpacked[k], rtol=1e-4, atol=1e-6, msg=k)
    with torch.no_grad():   # control: the same row with positions that do not restart lets samples see each other
        leaky = dict(packed[0], position_ids=torch.arange(188)[None])
        assert abs(sft.nll_and_entropy(net, leaky, torch.device("cpu"), 64)[0]
                   - sft.nll_and_entropy(net, packed[0], torch.device("cpu"), 64)[0]) > 1e-2


def test_update_is_the_global_token_mean_for_any_micro_batch_size(tiny, tmp_path):
    """One step with SGD(lr=1): the weight change is minus the gradient of (sum of token losses / tokens of the
    whole global batch), whatever the micro-batching; samples have different lengths, so a per-micro-batch
    mean would differ."""
    train_set = data.read_chat_jsonl(tiny.train)
    cfg = make_config(tiny, tmp_path, grad_clip=0.0)
    samples, _, _ = sft.tokenize_share(train_set, [0, 1, 2, 5], cfg, tiny.tok, tiny.mc, tu.Dist())
    assert len({len(s["input_ids"]) for s in samples}) > 1
    pad, size = tiny.tok.pad_token_id, tiny.mc.force_image_size

    net = load_net(tiny)
    batch = data.collate_right_padded(samples, pad, size)
    logits = net(batch["input_ids"], batch["pixel_values"], batch["image_flags"], batch["attention_mask"])
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    (loss / (targets != -100).sum()).backward()
    expected = {k: p.detach() - p.grad for k, p in net.named_parameters()}

    for micro in (1, 3):
        net = load_net(tiny)
        optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
        batches = sft.micro_batches(samples, sft.Config(**{**cfg.__dict__, "micro_batch_size": micro}), pad, size)
        assert len(batches) == (4 if micro == 1 else 2)
        sft.train_step(net, optimizer, batches, tu.Dist(), cfg)
        for k, p in net.named_parameters():
            torch.testing.assert_close(p.detach(), expected[k], rtol=1e-5, atol=1e-6, msg=k)

# -----------------------------------------------------------------------------
# the training loop


def test_loss_falls_on_a_tiny_overfit_set(tiny, tmp_path):
    cfg = make_config(tiny, tmp_path, max_steps=12, val_data=str(tiny.train), eval_every=4, micro_batch_size=4,
                      lr=5e-3, schedule="constant")
    summary = sft.train(cfg)
    losses = [json.loads(line)["train/loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in line]
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0], losses
    vals = [v for _, v in summary["val_history"]]
    assert [s for s, _ in summary["val_history"]] == [4, 8, 12] and vals[2] < vals[1] < vals[0]
    assert summary["best_step"] == 12 and summary["best_checkpoint"].endswith("step_000012")
    assert (summary["skipped"], summary["truncated"]) == (0, 0)


def test_early_stopping_fires_and_keeps_the_best_checkpoint(tiny, tmp_path, monkeypatch):
    scripted = iter([5.0, 4.0, 4.5, 4.2, 3.0, 3.0])  # best at step 2, then two evaluations without improvement
    monkeypatch.setattr(sft, "validation_loss", lambda *args: next(scripted))
    cfg = make_config(tiny, tmp_path, max_steps=6, val_data=str(tiny.train), eval_every=1, patience=2,
                      save_every=1, keep_last=1)
    summary = sft.train(cfg)
    assert summary["steps"] == 4 and summary["stopped_early"]
    assert summary["best_step"] == 2 and summary["best_val_loss"] == 4.0
    out = tmp_path
    assert sorted(p.name for p in out.glob("step_*")) == ["step_000002", "step_000004"]  # keep_last=1 + best
    assert json.loads((out / "best.json").read_text())["step"] == 2
    best = load_file(out / "step_000002" / "model.safetensors")
    last = load_file(out / "step_000004" / "model.safetensors")
    assert not torch.equal(best["mlp1.1.weight"], last["mlp1.1.weight"])
    assert model.load_model(summary["best_checkpoint"]) is not None  # loadable as a plain model
    # resuming a run that stopped early does nothing more
    again = sft.train(sft.Config(**{**cfg.__dict__, "resume": True}))
    assert again["steps"] == 4 and again["best_step"] == 2


def test_overlong_samples_are_truncated_or_skipped_and_counted(tiny, tmp_path):
    long_sample = chat_sample(3, "red.png")
    long_sample["messages"][1]["content"] = "<think>\n" + "Wait, let me check again. " * 30 + "</think>\n\n3"
    path = write_jsonl(tiny.root / "long.jsonl", [chat_sample(0), chat_sample(1), long_sample, chat_sample(2)])
    for overflow, expected in (("truncate", (0, 2)), ("skip", (2, 0))):
        cfg = make_config(tiny, tmp_path / overflow, data=str(path), overflow=overflow, max_seq_len=100)
        summary = sft.train(cfg)
        assert (summary["skipped"], summary["truncated"]) == expected  # the long sample is in both global batches
        rows = [json.loads(line) for line in (tmp_path / overflow / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["data/skipped_total"] == expected[0] and rows[-1]["data/truncated_total"] == expected[1]


def test_resume_after_interruption_gives_the_same_weights(tiny, tmp_path, monkeypatch):
    kwargs = dict(max_steps=4, save_every=2, packing=True, micro_batch_size=1, keep_last=1)
    straight = sft.train(make_config(tiny, tmp_path / "straight", **kwargs))

    calls, real_step = [], sft.train_step

    def crashing_step(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash in step 3")
        return real_step(*args)

    monkeypatch.setattr(sft, "train_step", crashing_step)
    cfg = make_config(tiny, tmp_path / "resumed", **kwargs)
    with pytest.raises(KeyboardInterrupt):
        sft.train(cfg)
    assert checkpoint.find_last_checkpoint(tmp_path / "resumed").name == "step_000002"
    with pytest.raises(ValueError, match="--resume=True"):
        sft.train(cfg)  # a fresh start over existing checkpoints is refused
    monkeypatch.setattr(sft, "train_step", real_step)
    resumed = sft.train(sft.Config(**{**cfg.__dict__, "resume": True}))
    assert resumed["steps"] == straight["steps"] == 4
    a = load_file(Path(straight["last_checkpoint"]) / "model.safetensors")
    b = load_file(Path(resumed["last_checkpoint"]) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mlp1.1.weight"], load_file(tiny.init / "model.safetensors")["mlp1.1.weight"])
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_crash_after_the_best_checkpoint_keeps_its_val_line(tiny, tmp_path, monkeypatch):
    # killed between committing the best checkpoint and the next step: the resume starts after that step,
    # so the step's val/loss line must already be in metrics.jsonl
    kwargs = dict(max_steps=6, val_data=str(tiny.train), eval_every=2)
    sft.train(make_config(tiny, tmp_path / "straight", **kwargs))
    real_mark_best = checkpoint.mark_best

    def crash_after_marking(out_dir, step, **info):
        real_mark_best(out_dir, step, **info)
        if step == 4:
            raise KeyboardInterrupt("simulated kill right after the best checkpoint of step 4")

    monkeypatch.setattr(checkpoint, "mark_best", crash_after_marking)
    cfg = make_config(tiny, tmp_path / "resumed", **kwargs)
    with pytest.raises(KeyboardInterrupt):
        sft.train(cfg)
    monkeypatch.setattr(checkpoint, "mark_best", real_mark_best)
    sft.train(sft.Config(**{**cfg.__dict__, "resume": True}))

    def rows(out):
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], sorted(k for k in r if k.startswith("val/"))) for r in lines]

    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")
    assert sum(1 for _, keys in rows(tmp_path / "resumed") if keys) == 3   # val at steps 2, 4, 6


def test_missing_image_fails_at_startup_naming_the_record(tiny, tmp_path):
    # the bad sample is the last one: before, training ran until a batch drew it
    rows = [chat_sample(i, "red.png" if i % 2 else None) for i in range(7)] + [chat_sample(7, "nope.png")]
    path = write_jsonl(tiny.root / "missing_image.jsonl", rows)
    with pytest.raises(FileNotFoundError, match=r"missing_image\.jsonl:8: image not found: .*nope\.png"):
        sft.train(make_config(tiny, tmp_path, data=str(path), max_steps=1))
    assert not (tmp_path / "metrics.jsonl").exists()   # not a single step


def test_resume_refuses_a_changed_data_file(tiny, tmp_path):
    data_file = write_jsonl(tmp_path / "train.jsonl", [chat_sample(i) for i in range(8)])
    cfg = make_config(tiny, tmp_path / "out", data=str(data_file), save_every=1, max_steps=1)
    sft.train(cfg)
    write_jsonl(data_file, [chat_sample(i + 10) for i in range(16)])   # another file under the same name
    with pytest.raises(ValueError, match=r"another run: sha256 of data file 0: "):
        sft.train(sft.Config(**{**cfg.__dict__, "resume": True, "max_steps": 2}))
    summary = sft.train(sft.Config(**{**cfg.__dict__, "resume": True, "max_steps": 2, "allow_run_change": True}))
    assert summary["steps"] == 2
    # --checkpoint may move, but its tokenizer is the run's: another tokenizer at the same path is refused
    other = tmp_path / "other_tokenizer"
    shutil.copytree(tiny.init, other)
    tok_config = other / "tokenizer_config.json"
    tok_config.write_text(json.dumps({**json.loads(tok_config.read_text()), "model_max_length": 77}))
    with pytest.raises(ValueError, match=r"another run: sha256 of checkpoint: '[0-9a-f]+' -> '[0-9a-f]+'"):
        sft.train(sft.Config(**{**cfg.__dict__, "resume": True, "max_steps": 3, "checkpoint": str(other),
                                "allow_run_change": False}))


def test_a_corrupt_checkpoint_is_never_marked_best(tiny, tmp_path, monkeypatch, capsys):
    """The resume re-marks the best checkpoint (a crash may have come between saving and marking it): not when
    its weights no longer match their checksum."""
    scripted = iter([5.0, 4.0, 4.5, 4.2])   # best at step 2
    monkeypatch.setattr(sft, "validation_loss", lambda *args: next(scripted))
    cfg = make_config(tiny, tmp_path, max_steps=4, val_data=str(tiny.train), eval_every=1, patience=10,
                      save_every=1, keep_last=0)
    assert sft.train(cfg)["best_step"] == 2
    weights = bytearray((tmp_path / "step_000002" / "model.safetensors").read_bytes())
    weights[-1] ^= 0x01   # one bit of tensor data: same size, same header
    (tmp_path / "step_000002" / "model.safetensors").write_bytes(bytes(weights))
    (tmp_path / "best.json").unlink()   # as a crash between saving the best and marking it leaves it
    capsys.readouterr()
    sft.train(sft.Config(**{**cfg.__dict__, "resume": True}))
    assert not (tmp_path / "best.json").exists()
    assert "not marking" in capsys.readouterr().err and checkpoint.find_best_checkpoint(tmp_path) is None


def test_bad_config_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="overflow"):
        sft.train(make_config(tiny, tmp_path, overflow="drop"))
    with pytest.raises(ValueError, match="fewer than global_batch_size"):
        sft.train(make_config(tiny, tmp_path, global_batch_size=64))
    with pytest.raises(ValueError, match="patience"):
        sft.train(make_config(tiny, tmp_path, patience=2))
    # counts, the learning rate and the trainable modules are checked at startup, naming the field
    for overrides, message in (({"global_batch_size": 0}, "--global_batch_size=0: must be > 0"),
                               ({"max_steps": -5}, "--max_steps=-5: must be >= 0"),
                               ({"save_every": -1}, "--save_every=-1: must be >= 0"),
                               ({"trainable": []}, r"--trainable=\[\]: must not be empty"),
                               ({"lr": 1e3}, r"--lr=1000.0: the learning rate must be in \(0, 1\]"),
                               ({"lr": float("inf")}, "--lr=inf: must be a finite number")):
        with pytest.raises(ValueError, match=message):
            sft.train(make_config(tiny, tmp_path, **overrides))
    assert not (tmp_path / "metrics.jsonl").exists()   # refused before any step


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_finite_checkpoint(tiny, tmp_path, monkeypatch):
    """From step 3 every loss is NaN: steps 3-5 update nothing and save nothing, step 5 (3 in a row) stops the
    run with an error naming the step and the values; step 2 stays the last checkpoint, with finite weights."""
    calls, real = [], sft.nll_and_entropy

    def poisoned(*args):
        calls.append(1)
        nll, ent = real(*args)
        return (nll * float("nan"), ent) if len(calls) > 4 else (nll, ent)   # 2 micro-batches per step

    monkeypatch.setattr(sft, "nll_and_entropy", poisoned)
    with pytest.raises(RuntimeError, match=r"step 5: train/loss nan and train/grad_norm nan: a NaN/inf loss or "
                                           r"grad norm 3 steps in a row"):
        sft.train(make_config(tiny, tmp_path, max_steps=8, save_every=1, keep_last=0))
    assert [path.name for _, path in checkpoint.list_checkpoints(tmp_path)] == ["step_000001", "step_000002"]
    weights = load_file(tmp_path / "step_000002" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())

# -----------------------------------------------------------------------------
# torchrun --nproc_per_node=2 (gloo, FSDP2) == one process


@pytest.fixture(scope="module")
def two_ranks(tiny, tmp_path_factory):
    """One torchrun launch for the 2-rank tests below: the worker runs these configs in order. Global batch 4 with
    one over-long sample in every step; "padded": micro-batches of one sample, the long one skipped, so one rank
    has 1 micro-batch and the other 2; "packed": packed micro-batches of at most 110 tokens, the long one
    truncated; "stopped" + "resumed": the packed run stopped after step 1, then resumed to step 2."""
    out = tmp_path_factory.mktemp("sft_two_ranks")
    long_sample = chat_sample(3)
    long_sample["messages"][1]["content"] = "<think>\n" + "Wait, let me check again. " * 30 + "</think>\n\n3"
    path = write_jsonl(tiny.root / "four.jsonl",
                       [chat_sample(0, "red.png"), chat_sample(1), long_sample, chat_sample(2, "blue.png")])
    base = dict(data=str(path), max_seq_len=100, grad_clip=0.5, val_data=str(path), eval_every=1)
    kwargs = {"padded": dict(base, overflow="skip", micro_batch_size=1),
              "packed": dict(base, overflow="truncate", packing=True, micro_batch_tokens=110, schedule="constant",
                             save_every=1)}
    runs = {"padded": make_config(tiny, out / "padded", **kwargs["padded"]),
            "packed": make_config(tiny, out / "packed", **kwargs["packed"]),
            "stopped": make_config(tiny, out / "resumed", **kwargs["packed"], max_steps=1),
            "resumed": make_config(tiny, out / "resumed", **kwargs["packed"], resume=True)}
    torchrun(__file__, json.dumps([cfg.__dict__ for cfg in runs.values()]), timeout=300)
    return SimpleNamespace(kwargs=kwargs, summary={name: json.loads((out / name / "summary.json").read_text())
                                                   for name in ("padded", "packed", "resumed")}, out=out, **runs)


def test_two_ranks_give_the_same_update_as_one(tiny, two_ranks, tmp_path):
    """All modules trainable, gradient clipping on, validation on (under FSDP2 with a dummy forward too)."""
    two = two_ranks.summary["padded"]
    one = sft.train(make_config(tiny, tmp_path / "one", **two_ranks.kwargs["padded"]))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["skipped"] == one["skipped"] == 2 and two["target_tokens"] == one["target_tokens"]
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    # the gradient itself (AdamW's update would hide a constant factor such as a missing world_size)
    norms = [grad_norms(tmp_path / "one"), grad_norms(two_ranks.out / "padded")]
    assert len(norms[0]) == 2 and norms[1] == pytest.approx(norms[0], rel=1e-5)
    assert [s for s, _ in two["val_history"]] == [1, 2]  # validation under FSDP2 (with a dummy forward) too
    assert [v for _, v in two["val_history"]] == pytest.approx([v for _, v in one["val_history"]], rel=1e-5)
    a = load_file(Path(one["last_checkpoint"]) / "model.safetensors")
    b = load_file(Path(two["last_checkpoint"]) / "model.safetensors")
    init = load_file(tiny.init / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
        assert not torch.equal(a[k], init[k]) or k.endswith("bias") or "norm" in k, k  # every weight moved



def grad_norms(out_dir):
    return [json.loads(line)["train/grad_norm"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()
            if "train/grad_norm" in line]


def test_two_ranks_packed_token_budget_resume_and_one_process(tiny, two_ranks, tmp_path):
    """Packed micro-batches under a token budget give the ranks different micro-batch counts (checked from the
    same shares below). The 2-rank run equals one process (the same global batches; loss, grad norms, val
    losses and weights to fp32 round-off), and stopped after step 1 and resumed it equals itself bit for bit."""
    cfg = two_ranks.packed
    train_set, state, counts = sft.read_splits(cfg)[0], (0, 0), []
    for _ in range(2):
        indices, state = data.next_batch(len(train_set), cfg.global_batch_size, cfg.seed, state)
        shares = [sft.tokenize_share(train_set, indices, cfg, tiny.tok, tiny.mc, tu.Dist(rank, 2))[0]
                  for rank in (0, 1)]
        counts.append([len(sft.micro_batches(share, cfg, tiny.tok.pad_token_id, tiny.mc.force_image_size))
                       for share in shares])
    assert any(a != b for a, b in counts), counts
    two, resumed = two_ranks.summary["packed"], two_ranks.summary["resumed"]
    one = sft.train(make_config(tiny, tmp_path / "one", **two_ranks.kwargs["packed"]))
    assert two["truncated"] == one["truncated"] == 2 and two["target_tokens"] == one["target_tokens"]
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert grad_norms(two_ranks.out / "packed") == pytest.approx(grad_norms(tmp_path / "one"), rel=1e-5)
    assert [v for _, v in two["val_history"]] == pytest.approx([v for _, v in one["val_history"]], rel=1e-5)
    a = load_file(Path(one["last_checkpoint"]) / "model.safetensors")
    b = load_file(Path(two["last_checkpoint"]) / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    # the resume: the same losses, validation and weights, exactly
    assert (resumed["steps"], resumed["train_loss"], resumed["val_history"]) == \
        (two["steps"], two["train_loss"], two["val_history"])
    c = load_file(Path(resumed["last_checkpoint"]) / "model.safetensors")
    assert all(torch.equal(c[k], b[k]) for k in b)

# -----------------------------------------------------------------------------

if __name__ == "__main__":  # the torchrun worker of the two_ranks fixture: runs each config in order
    dist = tu.setup_distributed()
    for config in json.loads(sys.argv[1]):
        sft.train(sft.Config(**config), dist)
    tu.cleanup_distributed()
