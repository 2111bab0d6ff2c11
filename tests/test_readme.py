"""Every command the README shows is run: here (with stand-ins where it would install or train for minutes), or by the
named test elsewhere in the suite, or it is listed as not runnable in CI with the README saying so. A command added
to the README without any of these fails `test_every_readme_command_is_accounted_for`."""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import configurator  # noqa: E402
import grpo  # noqa: E402
import report  # noqa: E402

README = ROOT / "README.md"
BEGIN, END = "<!-- paper_demo:begin -->", "<!-- paper_demo:end -->"


def readme_commands(text=None):
    """The shell lines of the README's ```bash blocks (continuations joined, comments dropped), then the
    backquoted commands of its prose and tables (`bash launch.sh ...`, `python ...`, `torchrun ...`, `vllm ...`)."""
    text = README.read_text() if text is None else text
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+", " ", line.split("  #")[0]).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    prose = re.sub(r"```bash\n.*?```", "", text, flags=re.S)
    command = r"`((?:[A-Z_]+=(?:\"[^\"`]*\"|\S+) )*(?:bash launch\.sh|bash demo\.sh|python3? |torchrun |vllm )[^`]*)`"
    commands += re.findall(command, prose)
    return list(dict.fromkeys(commands))


# run by another test: README command -> (that test file, a string it must contain: the call that runs it)
RUN_ELSEWHERE = {
    # conftest.py starts the runs that test_demo.py checks: the same launch.sh/demo.sh path
    "bash launch.sh demo": ("conftest.py", '"demo", log=log, nice=10, SCALE="ci"'),
    "SEED=1 bash launch.sh demo": ("conftest.py", 'SEED="0"'),
    "bash launch.sh paper_demo": ("conftest.py", '"paper_demo", log=log, nice=10, SCALE="ci"'),
    # the confirmatory run's first part: paper_demo over other SEEDS (conftest.py), with TARGETS (test_demo.py)
    'SEEDS="3 4 5 6 7 8 9 10" TARGETS="table2 table3 table4 table5 fig9" JOBS=2 bash launch.sh paper_demo': (
        "test_demo.py", 'TARGETS="table5"'),
    'SEEDS="11 12 13" bash launch.sh paper_demo': ("conftest.py", 'SEEDS="0 1"'),   # part B: every target
    'SEEDS="14 15 16 17 18 19 20 21" TARGETS="table4" JOBS=2 bash launch.sh paper_demo': (   # part C
        "test_demo.py", 'TARGETS="table5"'),
    'SEEDS="14 15 16 17 18 19 20 21" TARGETS="fig5 fig6 fig7_8 fig10 fig11" JOBS=2 bash launch.sh paper_demo': (
        "test_demo.py", 'TARGETS="table5"'),   # part D
    "bash launch.sh TARGET": ("test_demo.py", "def test_paper_scale_commands_parse"),   # every target, DRY_RUN=1
    "SCALE=demo bash launch.sh TARGET": ("conftest.py", '"paper_demo", log=log'),   # every target
    "SCALE=demo bash launch.sh fig5": ("conftest.py", '"paper_demo", log=log'),   # fig5 among them
    "python bench/gpu_check.py": ("test_gpu_check.py", "--tiny"),   # its CPU mode; the GPU run is not in CI
    "python model.py CONFIG [--json OUT]": ("test_model.py", '"--json"'),
    "python model.py --init_tiny OUT": ("test_model.py", '"--init_tiny"'),
    "python rewards.py --jsonl IN --out OUT": ("test_rewards.py", '"--jsonl"'),
    "python eval.py --mmmu_outputs DIR --json OUT": ("test_benchmarks.py", '"--mmmu_outputs"'),
    "python report.py results/paper_demo/part_a --recompute": ("test_report.py", '"--recompute"'),
    "python report.py results/paper_demo --parts part_a part_b part_c part_d": ("test_report.py", '"--parts"'),
}
# run by the tests of this file
RUN_HERE = {
    "bash launch.sh test": "test_launch_test_runs_the_main_suite_then_the_vllm_tier",
    "bash launch.sh test_vllm": "test_launch_test_runs_the_main_suite_then_the_vllm_tier",
    "python grpo.py config/grpo_38b.py --plan --plan_gpus=16 --init_from=config/skywork-r1v3-38b.json":
        "test_memory_plan_command_prints_the_readme_figures",
    "python grpo.py config/grpo_38b.py --lr=1e-6": "test_config_file_then_flags",
    "torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=$FIRST_NODE:29500 grpo.py "
    "config/grpo_38b.py --verifier_url=http://VERIFIER_HOST:8000": "test_config_file_then_flags",
    "python report.py out/paper_demo --seeds 0 1 2 --readme README.md": "test_report_writes_the_readme_claims_table",
}
# cannot run in CI (network, GPU): the README's "Not exercised in CI" section must name each
NOT_RUN = {
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -r requirements-gpu.txt":
        "requirements-gpu.txt",
    "vllm serve Qwen/Qwen2.5-32B-Instruct --served-model-name Qwen2.5-32B-Instruct --tensor-parallel-size 4 --port "
    "8000": "`vllm serve`",
    "vllm serve": "`vllm serve`",
}


def test_readme_commands_are_found():
    text = ("```bash\nbash a.sh   # x\n# c\npython b.py \\\n    --k=1\n```\n"
            'See `bash launch.sh x`, `SEED=1 python y.py` and `SEEDS="1 2" JOBS=2 bash launch.sh z`.')
    assert readme_commands(text) == ["bash a.sh", "python b.py --k=1", "bash launch.sh x", "SEED=1 python y.py",
                                     'SEEDS="1 2" JOBS=2 bash launch.sh z']


def test_every_readme_command_is_accounted_for():
    text = README.read_text()
    start = text.index("## Not exercised in CI")
    not_exercised = text[start:text.find("\n## ", start + 1)]
    unknown = []
    for command in readme_commands():
        if command in RUN_ELSEWHERE:
            test_file, call = RUN_ELSEWHERE[command]
            assert call in (ROOT / "tests" / test_file).read_text(), f"{command}: {test_file} no longer has {call!r}"
        elif command in RUN_HERE:
            assert callable(globals()[RUN_HERE[command]]), command
        elif command in NOT_RUN:
            assert NOT_RUN[command] in not_exercised, f"{command}: the README's 'Not exercised in CI' must say so"
        else:
            unknown.append(command)
    assert not unknown, f"README commands that no test runs (add a test, or list them here): {unknown}"


def stub_python(venv, name, log, rc=0):
    """A venv whose python only appends `NAME ARGS` to LOG and exits RC, installed as far as launch.sh checks."""
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit {rc}\n')
    python.chmod(0o755)
    (venv / ".installed").touch()


@pytest.mark.parametrize("main_rc", [0, 1])
def test_launch_test_runs_the_main_suite_then_the_vllm_tier(tmp_path, main_rc):
    """`bash launch.sh test`: the main suite in the project's venv, then tests/test_vllm.py in the vLLM venv; a failing
    main suite stops it with pytest's status. `bash launch.sh test_vllm`: the vLLM tier alone."""
    log = tmp_path / "log"
    stub_python(tmp_path / "venv", "main", log, rc=main_rc)
    stub_python(tmp_path / "venv-vllm", "vllm", log)
    env = dict(os.environ, VENV=str(tmp_path / "venv"), VLLM_VENV=str(tmp_path / "venv-vllm"))
    for command in ("bash launch.sh test", "bash launch.sh test_vllm"):
        assert command in readme_commands()
        log.write_text("")
        run = subprocess.run(shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        calls = log.read_text().splitlines()
        if command.endswith("test_vllm"):
            assert run.returncode == 0 and len(calls) == 1 and calls[0].startswith("vllm -m pytest"), calls
            assert "tests/test_vllm.py" in calls[0].split()
            continue
        assert run.returncode == main_rc, run.stderr
        assert calls[0].startswith("main -m pytest") and "tests" in calls[0].split(), calls
        if main_rc:
            assert len(calls) == 1, calls   # the vLLM tier does not run after a failed main suite
        else:
            assert len(calls) == 2 and calls[1].startswith("vllm -m pytest"), calls
            assert "tests/test_vllm.py" in calls[1].split()


def test_memory_plan_command_prints_the_readme_figures(monkeypatch, capsys):
    """The README's --plan command, run as written; the 16-GPU GRPO figures of its table are what it prints."""
    command = next(c for c in readme_commands() if " --plan " in c)
    monkeypatch.chdir(ROOT)
    args = shlex.split(command)[2:]   # after `python grpo.py`
    assert grpo.main(configurator.parse_config(grpo.Config, args)) == []
    out = re.sub(r"\s+", " ", capsys.readouterr().out)
    row = next(line for line in README.read_text().splitlines() if line.startswith("| `grpo_38b.py`"))
    kv_gib, kv_ktokens = re.search(r"an ([\d.]+) GiB KV cache of (\d+)k tokens", row).groups()
    training, sampling = re.search(r"\| ([\d.]+) / ([\d.]+) GiB \|", row).groups()
    assert f"peak while training {training} GiB" in out and f"peak while sampling {sampling} GiB" in out, out
    kv = re.search(r"vLLM KV cache \(awake\) ([\d.]+) GiB .*?: ([\d,]+) tokens", out)
    assert kv and kv.group(1) == kv_gib and round(int(kv.group(2).replace(",", "")) / 1000) == int(kv_ktokens), out
    assert out.rstrip().endswith("fits")


def test_config_file_then_flags(monkeypatch):
    """`python grpo.py config/grpo_38b.py --lr=1e-6` and the multi-node torchrun line parse as the README says."""
    monkeypatch.chdir(ROOT)
    paper = configurator.parse_config(grpo.Config, ["config/grpo_38b.py"])
    for command in readme_commands():
        argv = shlex.split(command)
        if "grpo.py" not in argv or "--plan" in argv:
            continue
        cfg = configurator.parse_config(grpo.Config, argv[argv.index("grpo.py") + 1:])
        if "--lr=1e-6" in argv:
            assert cfg.lr == 1e-6 and paper.lr != 1e-6 and cfg.verifier_url == paper.verifier_url
        else:
            assert argv[0] == "torchrun" and "--nnodes=2" in argv and "--nproc_per_node=8" in argv
            assert cfg.verifier_url == "http://VERIFIER_HOST:8000" and cfg.lr == paper.lr


def test_report_writes_the_readme_claims_table(tmp_path):
    """The README's claims table is the measured run's summary.md, and the README's report.py command rewrites
    only that block."""
    text = README.read_text()
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    assert block == (ROOT / "results" / "paper_demo" / "summary.md").read_text().strip()
    command = next(c for c in readme_commands() if c.startswith("python report.py") and "--readme" in c)
    readme = tmp_path / "README.md"
    shutil.copy(README, readme)
    argv = shlex.split(command)[2:]
    argv[0] = str(tmp_path / "paper_demo")   # an empty run: every claim without seeds
    argv[argv.index("--readme") + 1] = str(readme)
    report.main(argv)
    new = readme.read_text()
    assert new[:new.index(BEGIN)] == text[:text.index(BEGIN)] and new[new.index(END):] == text[text.index(END):]
    new_block = new[new.index(BEGIN) + len(BEGIN):new.index(END)].strip()
    assert new_block == (tmp_path / "paper_demo" / "summary.md").read_text().strip() and new_block != block
