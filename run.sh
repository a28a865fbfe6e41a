#!/usr/bin/env bash
# One entry point for the two things a new user does:
#   ./run.sh demo   create .venv, install stfmamba, run the whole DVC pipeline on the embedded demo
#   ./run.sh test   create .venv, install stfmamba with its test extras, run the test suite
# Set STF_VENV to use another environment folder (default: .venv in the project).
set -euo pipefail
cd "$(dirname "$0")"
venv="${STF_VENV:-.venv}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q -U pip
# DVC stages run `python stages/...`: that python must be the environment's
export VIRTUAL_ENV="$(cd "$venv" && pwd)"
export PATH="$VIRTUAL_ENV/bin:$PATH"
case "${1:-}" in
  demo)
    python -m pip install -q -e .
    dvc repro "${@:2}"
    ;;
  test)
    python -m pip install -q -e ".[dev]"
    python -m pytest "${@:2}"
    ;;
  *)
    echo "usage: ./run.sh demo|test [extra args for dvc repro / pytest]" >&2
    exit 2
    ;;
esac
