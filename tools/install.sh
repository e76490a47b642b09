#!/usr/bin/env bash
# Install everything soco needs into a virtual environment. Idempotent: a second run checks and
# returns in seconds.
#
#   tools/install.sh [--venv DIR] [--detectron2-src PATH]
#
#   --venv DIR             the virtual environment (default: $SOCO_VENV or .venv in the repo)
#   --detectron2-src PATH  install Detectron2 from a source checkout (the official build, with its
#                          C++/CUDA ops; needs a compiler). Without it an importable Detectron2 is
#                          kept; otherwise tools/build_detectron2.py builds the Python parts of
#                          Detectron2 v0.6 from its registry sdist (see README, "Detectron2").
#
# Steps: venv -> PyTorch/torchvision (pinned) -> soco and its pinned dependencies (editable) ->
# Detectron2 -> Fashion-MNIST (Debian package dataset-fashion-mnist, when run as root).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SOCO_VENV:-$ROOT/.venv}
D2_SRC=${DETECTRON2_SRC:-}
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV=$2; shift 2 ;;
    --detectron2-src) D2_SRC=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "[install] $*"; }
start=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 'setuptools>=70.1' wheel
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q)
# Every pip call below (build_detectron2.py's too) installs within the verified versions.
export PIP_CONSTRAINT="$ROOT/constraints.txt"

# The stamp records what was installed; a matching stamp plus working imports means nothing to do.
stamp_file="$VENV/.soco-install-stamp"
stamp=$(cat "$ROOT/setup.py" "$ROOT/constraints.txt" "$ROOT/tools/install.sh" "$ROOT/tools/build_detectron2.py" | sha256sum | cut -c1-16)
stamp="$stamp d2src=$D2_SRC"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] \
   && "$PY" -c "import torch, torchvision, detectron2, soco" 2>/dev/null; then
  log "up to date ($VENV)"
  exit 0
fi

if "$PY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('$TORCH_VERSION') and torchvision.__version__.startswith('$TORCHVISION_VERSION')))" 2>/dev/null; then
  log "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION present"
else
  log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
  "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

log "installing soco (editable) and its pinned dependencies"
"${PIP[@]}" -e "$ROOT[test]"

if [ -n "$D2_SRC" ]; then
  log "installing Detectron2 from the source checkout $D2_SRC (official build)"
  "${PIP[@]}" --no-build-isolation "$D2_SRC"
elif "$PY" -c "import detectron2" 2>/dev/null; then
  log "Detectron2 $("$PY" -c 'import detectron2; print(detectron2.__version__)') already importable: kept"
else
  log "building Detectron2 0.6 (Python parts) from its registry sdist"
  "$PY" "$ROOT/tools/build_detectron2.py"
fi

if [ -d /usr/share/datasets/fashion-mnist ] || [ -n "${SOCO_FASHION_MNIST:-}" ]; then
  log "Fashion-MNIST found"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
else
  log "WARNING: Fashion-MNIST not found. As root: apt-get install dataset-fashion-mnist;" \
      "or set SOCO_FASHION_MNIST to a folder with its four IDX .gz files."
fi

"$PY" -c "import torch, torchvision, detectron2, soco; print('[install] torch', torch.__version__, '| torchvision', torchvision.__version__, '| detectron2', detectron2.__version__, '| soco', soco.__version__)"
echo "$stamp" > "$stamp_file"
log "done in $(( $(date +%s) - start )) s"
