#!/usr/bin/env bash
# One command for a GPU machine: SoCo R50-FPN and BYOL R50, a few steps each with AMP on and off,
# channels_last, torch.compile and SyncBN (2+ GPUs; skipped with a note on one GPU), on every GPU
# of the machine. Prints one table (images/s per GPU, peak memory, model FLOP utilisation) and
# writes $OUTPUT (default gpu_check.json); under 8 minutes on one GPU with the defaults.
#
#   bash benchmarks/gpu_check.sh [--wheelhouse DIR] [gpu_check.py options, e.g. --steps 30 --num-gpus 1]
#
#   --wheelhouse DIR  on a node without network that has its own PyTorch: first install soco from
#                     DIR (made by tools/make_wheelhouse.py) into the venv $SOCO_VENV (default
#                     .venv-gpu-check), which sees python3's torch (tools/install.sh --wheelhouse
#                     DIR --use-system-torch; a second run finds it installed in seconds)
#
# The Python: $PYTHON if set, else that venv's, else python.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--wheelhouse" ]; then
  [ $# -ge 2 ] || { echo "gpu_check: --wheelhouse needs a folder" >&2; exit 2; }
  VENV=${SOCO_VENV:-$PWD/.venv-gpu-check}
  bash tools/install.sh --wheelhouse "$2" --use-system-torch --venv "$VENV"
  PYTHON=${PYTHON:-$VENV/bin/python}
  shift 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python}
NUM_GPUS=${NUM_GPUS:-$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")}
if [ "$NUM_GPUS" -lt 1 ]; then
  echo "gpu_check: no GPU visible to $PYTHON (torch.cuda.device_count() == 0)" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PYTHON" benchmarks/gpu_check.py --num-gpus "$NUM_GPUS" --output "${OUTPUT:-gpu_check.json}" "$@"
