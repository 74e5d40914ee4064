#!/usr/bin/env bash
# The GPU check: install the GPU builds (requirements-gpu.txt) into a virtual environment of
# their own, run the tests that exercise CUDA and FAISS on the GPU, then time DESOM-1 training
# and inference and a FAISS search over 1 000 000 histo-vectors (benchmarks/bench_gpu.py), which
# writes benchmarks/results/gpu.json. The tests and the benchmark are bounded to about 9 minutes
# together (the install before them depends on the network: torch's CUDA wheels are a few GB).
#
#   benchmarks/gpu_check.sh                        # .venv-gpu, created and installed if needed
#   GPU_VENV=/path/to/venv benchmarks/gpu_check.sh # another venv
#   PYTHON=python3 SKIP_INSTALL=1 benchmarks/gpu_check.sh   # a Python that has everything already
#   TORCH_INDEX_URL=<PyTorch CUDA index> benchmarks/gpu_check.sh   # torch from that index
#   BENCH_ARGS="--faiss-vectors 200000" benchmarks/gpu_check.sh    # extra bench_gpu.py options
#
# Exits non-zero when torch sees no CUDA device or faiss is not a GPU build: on a machine
# without a GPU there is nothing to check (the same tests run, skipped, in `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${GPU_VENV:-.venv-gpu}
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
else
  PY=$VENV/bin/python
fi

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  if [ -z "${PYTHON:-}" ] && [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  stamp="$VENV/.gpu-installed"
  if [ -n "${PYTHON:-}" ] || [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-gpu.txt -nt "$stamp" ]; then
    base=$(mktemp)
    grep -vE '^(torch|faiss-cpu)==' requirements.txt > "$base"
    "$PY" -m pip install --quiet --upgrade pip
    # faiss-cpu must not shadow the GPU build's `faiss` module
    "$PY" -m pip uninstall --quiet -y faiss-cpu >/dev/null 2>&1 || true
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      "$PY" -m pip install --quiet --index-url "$TORCH_INDEX_URL" torch==2.13.0
    fi
    "$PY" -m pip install --quiet -r "$base" -r requirements-gpu.txt
    rm -f "$base"
    [ -n "${PYTHON:-}" ] || touch "$stamp"
  fi
fi

command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$PY" - <<'PYEOF'
import sys
import torch
import faiss
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), cuda available: {torch.cuda.is_available()}")
gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
print(f"faiss {getattr(faiss, '__version__', '?')}, GPUs: {gpus}")
if torch.version.cuda is None:
    sys.exit("gpu_check: this torch is a CPU build (a local CPU wheel was picked?): set TORCH_INDEX_URL "
             "to a PyTorch CUDA index, or install a CUDA torch 2.13.0 by hand")
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (no NVIDIA GPU or driver here)")
if gpus < 1:
    sys.exit("gpu_check: faiss is not a GPU build, or it sees no GPU (is faiss-cpu still installed?)")
PYEOF

export PYTHONUNBUFFERED=1
echo "== tests (CUDA and FAISS GPU paths)"
timeout 240 "$PY" -m pytest -q -p no:cacheprovider -rs \
  tests/desom/test_gpu.py tests/recommender/test_faiss_gpu.py tests/desom/test_inference.py
echo "== benchmark -> benchmarks/results/gpu.json"
# shellcheck disable=SC2086
timeout 330 "$PY" -m benchmarks.bench_gpu --device cuda ${BENCH_ARGS:-}
