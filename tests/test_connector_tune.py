"""Tests for connector_tune.py: the paper's defaults, Table 2's variants, and that connector-only tuning leaves
every vision and LLM weight bit-identical (tiny model, CPU, through the real CLI entry point). Also the torchrun
worker: `python -m torch.distributed.run --standalone --nproc_per_node=2 tests/test_connector_tune.py ARGVS_JSON`."""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import chat
import configurator
import connector_tune
import model
import sft
import train_utils as tu
from test_sft import grad_norms
from test_train_utils import torchrun

torch.set_num_threads(1)  # shared CI cores: tiny matmuls are much faster single-threaded under load


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("connector_tune")
    tok = chat.build_tiny_tokenizer()
    mc = model.tiny_config(vocab_size=len(tok))
    torch.manual_seed(0)
    model.save_model(root / "init", model.build_model(mc).state_dict(), mc, tokenizer=tok)
    Image.new("RGB", (60, 40), (200, 30, 30)).save(root / "red.png")
    rows = [{"messages": [{"role": "user", "content": f"<image>\nWhat colour is shape {i}?"},
                          {"role": "assistant", "content": f"<think>\nShape {i} is red.\n</think>\n\nred"}],
             "images": ["red.png"]} for i in range(6)]
    (root / "multi_domain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def argv_of(tiny, out_dir, *flags):
    """connector_tune's command line, with sizes shrunk for the tiny model: 5 train / 1 val samples."""
    return [f"--checkpoint={tiny / 'init'}", f"--data={tiny / 'multi_domain.jsonl'}", f"--out_dir={out_dir}",
            "--global_batch_size=4", "--micro_batch_size=2", "--max_seq_len=128", "--max_steps=2", "--lr=1e-2",
            "--warmup_ratio=0.0", "--eval_every=1", "--save_dtype=float32", "--wandb=False", "--val_fraction=0.2",
            *flags]


def run(tiny, out_dir, *flags):
    """connector_tune's own entry point (argv_of) -> its summary."""
    assert connector_tune.main(argv_of(tiny, out_dir, *flags)) == 0
    return json.loads((Path(out_dir) / "summary.json").read_text())


def module_of(name):
    return next(m for m, prefix in model.MODULE_PREFIXES.items() if name.startswith(prefix))


def test_defaults_are_the_papers():
    cfg = connector_tune.Config()
    assert (cfg.epochs, cfg.global_batch_size, cfg.lr, cfg.schedule, cfg.warmup_ratio, cfg.max_seq_len) == \
        (2.0, 64, 1e-5, "cosine", 0.03, 16384)  # §3.4
    assert cfg.trainable == ["connector"] and cfg.variant == "connector"
    assert cfg.patience > 0 and cfg.val_fraction > 0  # early stopping on the validation loss
    assert isinstance(cfg, sft.Config)  # the loop is sft.train


def test_connector_only_tuning_changes_only_the_connector(tiny, tmp_path):
    summary = run(tiny, tmp_path)
    assert summary["trainable"] == ["connector"] and summary["steps"] == 2
    assert [s for s, _ in summary["val_history"]] == [1, 2] and summary["best_checkpoint"]
    init = load_file(tiny / "init" / "model.safetensors")
    final = load_file(Path(summary["last_checkpoint"]) / "model.safetensors")
    assert final.keys() == init.keys()
    for name in init:
        if module_of(name) == "connector":
            assert not torch.equal(final[name], init[name]), name
        else:
            assert torch.equal(final[name], init[name]), name  # bit-identical
    # the optimizer state holds the connector only (nothing to step, nothing to save for frozen modules)
    shard = torch.load(Path(summary["last_checkpoint"]) / "optim_rank0.pt", weights_only=False)
    assert {module_of(n) for group in shard["param_names"] for n in group} == {"connector"}


@pytest.mark.parametrize("variant,changed", [("connector+llm", {"connector", "llm"}),
                                             ("connector+vision+llm", {"connector", "llm", "vision"})])
def test_table2_variants(tiny, tmp_path, variant, changed):
    summary = run(tiny, tmp_path, f"--variant={variant}")
    assert sorted(summary["trainable"]) == sorted(changed)
    init = load_file(tiny / "init" / "model.safetensors")
    final = load_file(Path(summary["last_checkpoint"]) / "model.safetensors")
    moved = {module_of(n) for n in init if not torch.equal(final[n], init[n])}
    assert moved == changed
    if "vision" not in changed:
        assert all(torch.equal(final[n], init[n]) for n in init if module_of(n) == "vision")


def test_variant_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="contradicts --variant"):
        configurator.parse_config(connector_tune.Config, ["--trainable=connector,llm"])
    assert configurator.parse_config(connector_tune.Config, ["--variant=connector+llm", "--trainable=llm,connector"]).trainable \
        == ["connector", "llm"]
    with pytest.raises(ValueError, match="expected one of"):
        connector_tune.Config(variant="vision")


def test_connector_tune_has_only_training_settings():
    """connector_tune inherits sft.py's training config only: rejection sampling is reject.py's."""
    with pytest.raises(ValueError, match="mode"):
        connector_tune.main(["--mode=reject", "--checkpoint=x", "--data=y"])
    with pytest.raises(ValueError, match="max_per_question"):
        connector_tune.main(["--max_per_question=2"])


def test_bad_lr_and_counts_are_refused_at_startup(tmp_path):
    """The CLI's values go through sft.train's startup checks (no file is read before them)."""
    for flag, message in (("--lr=1e999", "--lr=inf: must be a finite number"),
                          ("--global_batch_size=0", "--global_batch_size=0: must be > 0"),
                          ("--max_steps=-5", "--max_steps=-5: must be >= 0")):
        with pytest.raises(ValueError, match=message):
            connector_tune.main(["--checkpoint=x", "--data=y", f"--out_dir={tmp_path}", "--wandb", "false", flag])


def test_two_ranks_equal_one_process_and_resume(tiny, tmp_path):
    """torchrun --nproc_per_node=2 (gloo, FSDP2 with the frozen ViT and LLM): 8 samples of different lengths, half
    without an image, one too long (skipped), 2 held out; one sample per micro-batch, so the ranks run different
    numbers of forwards (dummy ones fill in) in training and in validation. The 2-rank run equals one process
    (loss, grad norms, val losses, connector weights to fp32 round-off; vision and LLM bit-identical to the
    start), and the run stopped after step 1 and resumed equals it bit for bit."""
    question = lambda i: ("<image>\n" if i % 2 == 0 else "") + "Which colour?" * (1 + i)
    answer = lambda i: "<think>\n" + "It is red. " * (40 if i == 3 else 1 + i) + "</think>\n\nred"
    rows = [{"messages": [{"role": "user", "content": question(i)}, {"role": "assistant", "content": answer(i)}],
             "images": ["red.png"] if i % 2 == 0 else []} for i in range(8)]
    data_path = tiny / "varied.jsonl"   # next to red.png
    data_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = (f"--data={data_path}", "--micro_batch_size=1", "--overflow=skip", "--schedule=constant",
             "--save_every=1")
    two, resumed = tmp_path / "two", tmp_path / "resumed"
    torchrun(__file__, json.dumps([argv_of(tiny, two, *flags), argv_of(tiny, resumed, *flags, "--max_steps=1"),
                                   argv_of(tiny, resumed, *flags, "--resume=True")]), timeout=300)
    summary = {name: json.loads((tmp_path / name / "summary.json").read_text()) for name in ("two", "resumed")}
    one = run(tiny, tmp_path / "one", *flags)
    assert summary["two"]["world_size"] == 2 and summary["two"]["skipped"] == one["skipped"] > 0
    assert summary["two"]["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    norms = [grad_norms(tmp_path / name) for name in ("one", "two")]
    assert len(norms[0]) == 2 and norms[1] == pytest.approx(norms[0], rel=1e-5)
    assert [v for _, v in summary["two"]["val_history"]] == pytest.approx([v for _, v in one["val_history"]], rel=1e-5)
    init = load_file(tiny / "init" / "model.safetensors")
    a = load_file(Path(one["last_checkpoint"]) / "model.safetensors")
    b = load_file(Path(summary["two"]["last_checkpoint"]) / "model.safetensors")
    for name in init:
        if module_of(name) == "connector":
            torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert torch.equal(b[name], init[name]), name
    assert {k: summary["resumed"][k] for k in ("steps", "train_loss", "val_history", "best_step")} == \
        {k: summary["two"][k] for k in ("steps", "train_loss", "val_history", "best_step")}
    c = load_file(Path(summary["resumed"]["last_checkpoint"]) / "model.safetensors")
    assert all(torch.equal(c[k], b[k]) for k in b)


if __name__ == "__main__":   # the torchrun worker: runs connector_tune's command lines in order, in one process group
    dist = tu.setup_distributed()
    for argv in json.loads(sys.argv[1]):
        sft.train(configurator.parse_config(connector_tune.Config, argv), dist)
    tu.cleanup_distributed()
