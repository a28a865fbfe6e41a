#!/usr/bin/env bash
# One entry point for the two things a new user does:
#   ./run.sh demo   create .venv, install stfmamba, run the whole DVC pipeline on the embedded demo
#   ./run.sh test   create .venv, install stfmamba with its test extras, run the test suite
# Set STF_VENV to use another environment folder (default: .venv in the project).
# pip runs only when the install is missing or its inputs changed: a stamp in the environment
# ($venv/.stfmamba-install) holds a hash of pyproject.toml, requirements.txt, the project folder and
# the Python version, and the extras installed with it (dev includes what demo needs); the package
# must also still be installed in the environment. A call that finds it current
# says "install up to date" and needs no package index.
# STF_PIP_ARGS: extra `pip install` arguments (e.g. "--no-index --find-links /wheels" offline).
set -euo pipefail
cd "$(dirname "$0")"
venv="${STF_VENV:-.venv}"
py="${PYTHON:-python3}"
case "${1:-}" in
  demo) extra="" ;;
  test) extra="dev" ;;
  *)
    echo "usage: ./run.sh demo|test [extra args for dvc repro / pytest]" >&2
    exit 2
    ;;
esac
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q -U pip
fi
# DVC stages run `python stages/...`: that python must be the environment's
export VIRTUAL_ENV="$(cd "$venv" && pwd)"
export PATH="$VIRTUAL_ENV/bin:$PATH"
stamp="$VIRTUAL_ENV/.stfmamba-install"
# "<hash of the inputs> <installed|missing>" (-I: the project folder itself is not on sys.path)
probe="$(python -I - <<'EOF'
import hashlib, importlib.metadata, os, re, sys
h = hashlib.sha256(os.getcwd().encode() + b"\0" + sys.version.encode())
for name in ("pyproject.toml", "requirements.txt"):
    h.update(b"\0" + name.encode() + b"\0")
    if os.path.exists(name):
        with open(name, "rb") as f:
            h.update(f.read())
m = re.search(r'^name\s*=\s*"([^"]+)"', open("pyproject.toml").read(), re.M)
try:
    importlib.metadata.distribution(m.group(1))
    state = "installed"
except (AttributeError, importlib.metadata.PackageNotFoundError):
    state = "missing"
print(h.hexdigest(), state)
EOF
)"
inputs="${probe% *}"
# installed extras for these inputs: the stamp's lines after the hash ("base", "dev")
have=""
if [ "${probe##* }" = installed ] && [ -f "$stamp" ] && [ "$(head -n 1 "$stamp")" = "$inputs" ]; then
  have="$(tail -n +2 "$stamp")"
fi
need="${extra:-base}"
if grep -qx -e "$need" -e dev <<<"$have"; then   # dev installs everything base does
  echo "run.sh: install up to date (${extra:+.[$extra] }in $venv)" >&2
else
  target="."
  [ -n "$extra" ] && target=".[$extra]"
  echo "run.sh: installing $target into $venv (pyproject.toml / requirements.txt / extras changed, or first run)" >&2
  rm -f "$stamp"
  # shellcheck disable=SC2086  # STF_PIP_ARGS is a list of arguments
  python -m pip install -q ${STF_PIP_ARGS:-} -e "$target"
  { echo "$inputs"; if [ -n "$have" ]; then echo "$have"; fi; echo "$need"; } >"$stamp"
fi
case "$1" in
  demo) dvc repro "${@:2}" ;;
  test) python -m pytest "${@:2}" ;;
esac
