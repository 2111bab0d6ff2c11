"""The two demo-pipeline tests of test_demo.py check runs that take minutes of CPU. Those runs start in the
background when the session starts, at nice 10 (below the tests' CPU priority), and their two tests run last: the
other tests use the cores meanwhile (and come first when both want one), instead of the suite waiting for the
runs."""
import os
import signal

import pytest

from launch_sh import launch

PIPELINE_TESTS = ("test_demo_pipeline_ci", "test_paper_demo_ci")


def pytest_collection_modifyitems(items):
    late = [item for item in items if getattr(item, "originalname", item.name) in PIPELINE_TESTS]
    items[:] = [item for item in items if item not in late] + late


@pytest.fixture(scope="session", autouse=True)
def pipeline_runs(request, tmp_path_factory):
    """-> {test name: (run directory, Popen, log path)} for the pipeline tests this session selected, each run
    started here in the background; a run still going when the session ends (its test failed early, or was
    interrupted) is stopped whole."""
    selected = {getattr(item, "originalname", item.name) for item in request.session.items}
    base, runs = tmp_path_factory.getbasetemp(), {}
    if "test_demo_pipeline_ci" in selected:   # the demo as a user runs it, but W&B offline (the test reads the runs)
        demo = tmp_path_factory.mktemp("demo_ci") / "ci"
        with open(base / "demo_ci.log", "w") as log:   # a file, not a pipe: nobody reads it until the run ends
            runs["test_demo_pipeline_ci"] = demo, launch(
                "demo", log=log, nice=10, SCALE="ci", DEMO=str(demo), SEED="0", WANDB_MODE="offline"), log.name
    if "test_paper_demo_ci" in selected:   # WANDB_MODE unset, as a user runs it: the demo stays W&B-free
        pd = tmp_path_factory.mktemp("paper_demo_ci") / "pd"
        with open(base / "paper_demo_ci.log", "w") as log:
            runs["test_paper_demo_ci"] = pd, launch(
                "paper_demo", log=log, nice=10, SCALE="ci", PAPER_DEMO_CI="1", PAPER_DEMO=str(pd), SEEDS="0 1",
                JOBS="2", WANDB_MODE=None), log.name
    yield runs
    for _, proc, _ in runs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
