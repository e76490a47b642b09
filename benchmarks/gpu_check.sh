#!/usr/bin/env bash
# One command for a GPU machine: SoCo R50-FPN and BYOL R50, a few dozen steps each with AMP on
# and off, channels_last, torch.compile and SyncBN (2+ GPUs), on every GPU of the machine.
# Prints images/s per GPU, peak memory and model FLOP utilisation, and writes gpu_check.json.
#   bash benchmarks/gpu_check.sh [extra gpu_check.py options, e.g. --steps 50 --num-gpus 1]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python}
NUM_GPUS=${NUM_GPUS:-$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")}
if [ "$NUM_GPUS" -lt 1 ]; then
  echo "gpu_check: no GPU visible (torch.cuda.device_count() == 0)" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PYTHON" benchmarks/gpu_check.py --num-gpus "$NUM_GPUS" --output "${OUTPUT:-gpu_check.json}" "$@"
