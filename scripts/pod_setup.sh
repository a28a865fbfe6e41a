#!/usr/bin/env bash
# Set up STF-Mamba on a fresh GPU pod, from a clone of the repository:
#   1. detect the GPU and pick the profile (A100 -> a100, RTX 4090 -> rtx4090; override with $1),
#   2. create .venv and install stfmamba with the GPU extras (mamba-ssm + causal-conv1d kernels)
#      and the DVC remote plugins,
#   3. apply the profile to params.yaml (python -m stfmamba.profiles apply <profile>),
#   4. dvc pull (crops, landmarks, checkpoints) if a remote is configured,
#   5. run the verify stage (fails loudly if the data is unusable),
#   6. print the cost estimate from a few measured training steps.
#
#   scripts/pod_setup.sh            # auto-detect
#   scripts/pod_setup.sh rtx4090    # force a profile
# Environment: STF_VENV (default .venv), PYTHON (default python3), SKIP_PULL=1 to skip dvc pull.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-auto}"
if [ "$profile" = "auto" ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "pod_setup: no nvidia-smi: no NVIDIA GPU found. Pass a profile (a100 | rtx4090 | demo) to force one." >&2
    exit 2
  fi
  gpu="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -n1)"
  ngpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)"
  echo "pod_setup: found ${ngpu} x ${gpu}"
  case "$gpu" in
    *A100*|*H100*|*H200*) profile=a100 ;;
    *4090*|*3090*|*A10*|*L4*) profile=rtx4090 ;;
    *) echo "pod_setup: no profile for '${gpu}'; pass one explicitly (a100 | rtx4090)" >&2; exit 2 ;;
  esac
fi
echo "pod_setup: profile ${profile}"

venv="${STF_VENV:-.venv}"
py="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q -U pip wheel
# torch first (CUDA wheel), then the kernels, which compile against it (no build isolation)
"$venv/bin/python" -m pip install -q -e ".[remote]"
if [ "$profile" != "demo" ]; then
  "$venv/bin/python" -m pip install -q --no-build-isolation -e ".[gpu]" || {
    echo "pod_setup: mamba-ssm / causal-conv1d did not install; training falls back to the PyTorch SSM" \
         "kernels (slower). Check the CUDA toolkit version (nvcc --version) against torch's." >&2; }
fi
"$venv/bin/python" - <<'PY'
import torch
print(f"pod_setup: torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}",
      f"({torch.cuda.device_count()} GPU)" if torch.cuda.is_available() else "")
try:
    import mamba_ssm  # noqa: F401
    print("pod_setup: mamba-ssm kernels importable")
except ImportError:
    print("pod_setup: mamba-ssm kernels NOT importable (PyTorch fallback)")
PY

"$venv/bin/python" -m stfmamba.profiles apply "$profile"

dvc="$venv/bin/dvc"
if [ -z "${SKIP_PULL:-}" ] && [ -n "$("$dvc" remote list)" ]; then
  "$dvc" pull || echo "pod_setup: dvc pull incomplete (outputs not pushed yet are rebuilt by dvc repro)" >&2
else
  echo "pod_setup: no DVC remote configured (or SKIP_PULL set): skipping dvc pull"
fi

# verify needs the preprocessed data: pulled above, or built here (demo -> preprocess -> verify)
"$dvc" repro verify

"$venv/bin/python" -m stfmamba.profiles estimate
echo "pod_setup: done. Train and evaluate with: $dvc repro   (or: $dvc exp run -S features.use_wss=true)"
