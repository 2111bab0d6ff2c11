#!/usr/bin/env bash
# One target per paper table/figure, plus the CPU demo and the tests.
#   bash launch.sh demo        the whole pipeline on a laptop (fresh venv included)
#   bash launch.sh test        the test suite (fresh venv included)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PY=$VENV/bin/python

setup() {  # idempotent: creates the venv and installs the CPU-safe requirements once
  if [ ! -x "$PY" ] || [ requirements.txt -nt "$VENV/.installed" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0  # first, so nothing pulls a CUDA torch
    "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
    touch "$VENV/.installed"
  fi
}

target=${1:-help}
case "$target" in
  test)
    setup
    WANDB_MODE=${WANDB_MODE:-disabled} "$PY" -m pytest -q tests
    ;;
  *)
    sed -n '2,5p' "$0"
    ;;
esac
