"""`bash launch.sh TARGET` from the tests (test_demo.py, and conftest.py's background pipeline runs), with this
interpreter's venv."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch(target, log=None, nice=0, **env):
    """bash launch.sh TARGET -> CompletedProcess (stdout + stderr in .stdout); a variable given as None is unset.
    log: an open file: started in the background (a session of its own, at `nice` lower CPU priority), stdout +
    stderr to the file -> Popen."""
    full_env = {k: v for k, v in dict(os.environ, VENV=sys.prefix, **env).items() if v is not None}
    argv = ["bash", str(ROOT / "launch.sh"), target]
    if log is not None:
        return subprocess.Popen(["nice", "-n", str(nice), *argv] if nice else argv, cwd=ROOT, env=full_env,
                                text=True, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return subprocess.run(argv, cwd=ROOT, env=full_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
