"""Tests for configurator.py: the one config parser of every entry point."""
import dataclasses
import sys
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pytest

import configurator


@dataclasses.dataclass
class Cfg:
    lr: float = 1e-5
    steps: int = 10
    run_name: str = "run"
    use_kl: bool = False
    trainable: list[str] = dataclasses.field(default_factory=lambda: ["connector"])
    betas: tuple[float, float] = (0.9, 0.999)
    resume: typing.Optional[str] = None
    schedule: typing.Literal["constant", "cosine"] = "cosine"
    stages: list[tuple[str, int]] = dataclasses.field(default_factory=list)


def write(path, text):
    path.write_text(text)
    return str(path)


def test_config_file_then_overrides(tmp_path):
    f = write(tmp_path / "cfg.py", "import math\nlr = 3e-4\nsteps = 2 * 5 + 1\nstages = [('a.jsonl', 100)]\n"
                                   "trainable = ['llm']\n_private = 1\n")
    cfg = configurator.parse_config(Cfg, [f, "--lr=1e-6", "--run_name=2024", "--use_kl", "--betas=0.9,0.95",
                                "--resume=None", "--schedule=constant", "--trainable=connector,llm"])
    assert cfg == Cfg(lr=1e-6, steps=11, run_name="2024", use_kl=True, trainable=["connector", "llm"],
                      betas=(0.9, 0.95), resume=None, schedule="constant", stages=[("a.jsonl", 100)])
    assert isinstance(cfg.lr, float) and isinstance(cfg.steps, int)
    # ints are accepted for floats (converted), words for bools, one bare word for a list[str]
    cfg = configurator.parse_config(Cfg, ["--lr=1", "--use_kl=false", "--trainable=vision", "--resume=out/step_000010"])
    assert (cfg.lr, type(cfg.lr), cfg.use_kl, cfg.trainable, cfg.resume) == (1.0, float, False, ["vision"],
                                                                              "out/step_000010")
    # an instance keeps its own values for keys not overridden
    base = Cfg(steps=99)
    assert configurator.parse_config(base, ["--lr=2e-5"]) == Cfg(steps=99, lr=2e-5)


def test_config_errors_name_the_place(tmp_path):
    f = write(tmp_path / "bad.py", "lr = 1e-5\n\nlrr = 3\n")
    with pytest.raises(ValueError, match=r"bad\.py:3: unknown config key 'lrr' \(did you mean lr\?\)"):
        configurator.parse_config(Cfg, [f])
    f = write(tmp_path / "badtype.py", "steps = 'ten'\n")
    with pytest.raises(ValueError, match=r"badtype\.py:1: steps: expected int"):
        configurator.parse_config(Cfg, [f])
    with pytest.raises(ValueError, match=r"'--step=3': unknown config key 'step' \(did you mean steps or stages\?\)"):
        configurator.parse_config(Cfg, ["--step=3"])
    with pytest.raises(ValueError, match="expected int, got 1.5"):
        configurator.parse_config(Cfg, ["--steps=1.5"])
    with pytest.raises(ValueError, match="expected bool"):
        configurator.parse_config(Cfg, ["--use_kl=2"])
    with pytest.raises(ValueError, match=r"expected one of \['constant', 'cosine'\], got 'linear'"):
        configurator.parse_config(Cfg, ["--schedule=linear"])
    with pytest.raises(ValueError, match="expected 2 items"):
        configurator.parse_config(Cfg, ["--betas=(0.9, 0.95, 0.99)"])
    with pytest.raises(ValueError, match=r"expected --steps=VALUE"):
        configurator.parse_config(Cfg, ["--steps"])
    with pytest.raises(FileNotFoundError, match="nope.py"):
        configurator.parse_config(Cfg, [str(tmp_path / "nope.py")])


def test_print_config_is_a_valid_config_file(tmp_path, capsys):
    cfg = Cfg(lr=3e-4, trainable=["vision", "llm"], stages=[("x", 1)])
    configurator.print_config(cfg)
    text = capsys.readouterr().out
    f = write(tmp_path / "printed.py", "\n".join(line.strip() for line in text.splitlines()[1:]))
    assert configurator.parse_config(Cfg, [f]) == cfg


def test_space_separated_values_and_lists(tmp_path):
    """--key VALUE as well as --key=VALUE; a list field takes every value up to the next --key (entropy.py's
    --checkpoints A B C), a bare bool flag takes none, and a later positional is still a config file."""
    f = write(tmp_path / "cfg.py", "steps = 3\n")
    cfg = configurator.parse_config(Cfg, ["--lr", "2e-5", "--trainable", "vision", "llm", "--use_kl", f,
                                "--run_name", "x"])
    assert cfg == Cfg(lr=2e-5, steps=3, run_name="x", use_kl=True, trainable=["vision", "llm"])
    with pytest.raises(ValueError, match="expected int"):
        configurator.parse_config(Cfg, ["--steps", "many"])
    with pytest.raises(ValueError, match="expected --lr=VALUE"):
        configurator.parse_config(Cfg, ["--lr"])


def test_bare_bool_flag_takes_a_bool_word(tmp_path):
    """`--wandb false` is the flag's value, not a config file named "false"; any other word still is a file."""
    for word, value in (("false", False), ("False", False), ("off", False), ("no", False), ("true", True),
                        ("yes", True)):
        assert configurator.parse_config(Cfg, ["--use_kl", word, "--steps", "4"]) == Cfg(use_kl=value, steps=4)
    f = write(tmp_path / "cfg.py", "steps = 3\n")
    assert configurator.parse_config(Cfg, ["--use_kl", f]) == Cfg(use_kl=True, steps=3)


def test_check_values_names_the_field():
    @dataclasses.dataclass
    class Run:
        lr: float = 1e-5
        steps: int = 10
        save_every: int = 0
        trainable: list[str] = dataclasses.field(default_factory=lambda: ["llm"])
    check = lambda **kw: configurator.check_values(Run(**kw), positive=("steps",), non_negative=("save_every",),
                                                   nonempty=("trainable",))
    check()
    for kw, message in (({"lr": 1e3}, r"--lr=1000.0: the learning rate must be in \(0, 1\]"),
                        ({"lr": float("inf")}, "--lr=inf: must be a finite number"),
                        ({"lr": float("nan")}, "--lr=nan: must be a finite number"),
                        ({"lr": 0.0}, "--lr=0.0"), ({"steps": 0}, "--steps=0: must be > 0"),
                        ({"steps": -3}, "--steps=-3: must be > 0"),
                        ({"save_every": -1}, "--save_every=-1: must be >= 0"),
                        ({"trainable": []}, r"--trainable=\[\]: must not be empty")):
        with pytest.raises(ValueError, match=message):
            check(**kw)


def test_schedules():
    schedule = [(0, 4096), (100, 8192)]
    assert [configurator.value_at(s, schedule) for s in (0, 99, 100, 500)] == [4096, 4096, 8192, 8192]
    stages = [("normal.jsonl", 0), ("hard.jsonl", 50)]
    assert [configurator.stage_at(s, stages) for s in (0, 49, 50)] == [0, 0, 1]


def test_check_schedule_wants_step_0_first_and_sorted_steps():
    for firsts in ([], [0], [0, 100, 100, 500]):
        configurator.check_schedule("response_length_schedule", firsts)
    for firsts in ([5], [0, 500, 100]):
        with pytest.raises(ValueError, match=r"--response_length_schedule: must start at step 0 and be sorted"):
            configurator.check_schedule("response_length_schedule", firsts)
