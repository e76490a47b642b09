#!/usr/bin/env bash
# Install everything soco needs into a virtual environment. Idempotent: a second run checks and
# returns in seconds.
#
#   tools/install.sh [--venv DIR] [--detectron2-src PATH]
#
#   --venv DIR             the virtual environment (default: $SOCO_VENV or .venv in the repo)
#   --detectron2-src PATH  install Detectron2 from a source checkout (the official build, with its
#                          C++/CUDA ops; needs a compiler). It is rebuilt only when the checkout's
#                          commit changed or has uncommitted edits. Without it an importable
#                          Detectron2 is kept; otherwise tools/build_detectron2.py builds the Python
#                          parts of Detectron2 v0.6 from its registry sdist (see docs/INSTALL.md).
#
# Steps: venv -> setuptools/wheel, PyTorch/torchvision (pinned) -> soco and its pinned dependencies
# (editable) -> Detectron2 -> Fashion-MNIST (Debian package dataset-fashion-mnist, when run as
# root) -> tools/check_install.py (imports everything soco uses from Detectron2; a failure exits 1
# and says what to do). An existing venv is "up to date" only if the same files installed it and
# that check passes; a broken one is repaired.
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
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "[install] $*"; }
start=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# Every pip call below (build_detectron2.py's too) installs within the verified versions.
export PIP_CONSTRAINT="$ROOT/constraints.txt"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q)
CHECK=("$PY" "$ROOT/tools/check_install.py")

# The source checkout's identity: its commit, "+edits" when it has uncommitted changes to tracked
# files ("unknown" outside git, which always rebuilds).
d2_src_id=""
if [ -n "$D2_SRC" ]; then
  [ -f "$D2_SRC/setup.py" ] || { echo "install.sh: --detectron2-src $D2_SRC has no setup.py (not a Detectron2 checkout)" >&2; exit 2; }
  D2_SRC=$(cd "$D2_SRC" && pwd)
  if d2_src_id=$(git -C "$D2_SRC" rev-parse HEAD 2>/dev/null); then
    git -C "$D2_SRC" diff --quiet HEAD 2>/dev/null || d2_src_id="$d2_src_id+edits"
  else
    d2_src_id=unknown
  fi
fi

# The stamp records what was installed; a matching stamp plus a passing check means nothing to do.
stamp_file="$VENV/.soco-install-stamp"
stamp=$(cat "$ROOT/setup.py" "$ROOT/constraints.txt" "$ROOT/tools/install.sh" "$ROOT/tools/build_detectron2.py" | sha256sum | cut -c1-16)
stamp="$stamp d2src=$D2_SRC@$d2_src_id"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
  if problems=$("${CHECK[@]}" --quiet 2>&1); then
    log "up to date ($VENV)"
    exit 0
  fi
  log "the existing install is broken; repairing it. tools/check_install.py says:"
  echo "$problems" | sed 's/^/[install]   /'
  rm -f "$stamp_file"
fi

# setuptools < 82 (constraints.txt): the official Detectron2 imports pkg_resources at run time and
# builds with these; --no-build-isolation below uses the venv's own.
log "installing setuptools and wheel ($(grep -E '^(setuptools|wheel)==' "$ROOT/constraints.txt" | paste -sd' ' -))"
"${PIP[@]}" setuptools wheel

if "$PY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('$TORCH_VERSION') and torchvision.__version__.startswith('$TORCHVISION_VERSION')))" 2>/dev/null; then
  log "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION present"
else
  log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
  "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

log "installing soco (editable) and its pinned dependencies"
"${PIP[@]}" -e "$ROOT[test]"

d2_built_file="$VENV/.soco-detectron2-src"
if [ -n "$D2_SRC" ] && [ "$d2_src_id" != unknown ] && [ "${d2_src_id%+edits}" = "$d2_src_id" ] \
   && [ "$(cat "$d2_built_file" 2>/dev/null)" = "$D2_SRC@$d2_src_id" ] && "$PY" -c "import detectron2._C" 2>/dev/null; then
  log "Detectron2 from $D2_SRC at ${d2_src_id:0:12} already built: kept"
elif [ -n "$D2_SRC" ]; then
  log "installing Detectron2 from the source checkout $D2_SRC at ${d2_src_id:0:12} (official build; compiling its C++ ops takes minutes)"
  rm -f "$d2_built_file"
  "${PIP[@]}" --no-build-isolation "$D2_SRC"
  echo "$D2_SRC@$d2_src_id" > "$d2_built_file"
else
  # A registry build (+nocsrc) is ours: rebuilt when tools/build_detectron2.py changed since.
  registry_file="$VENV/.soco-detectron2-registry"
  registry_id=$(sha256sum "$ROOT/tools/build_detectron2.py" | cut -c1-16)
  d2_version=$("$PY" -c "import detectron2; print(detectron2.__version__)" 2>/dev/null || true)
  if [ -n "$d2_version" ] && { [ "${d2_version%+nocsrc}" = "$d2_version" ] || [ "$(cat "$registry_file" 2>/dev/null)" = "$registry_id" ]; }; then
    log "Detectron2 $d2_version already importable: kept"
  else
    [ -n "$d2_version" ] && log "Detectron2 $d2_version was built by another version of tools/build_detectron2.py"
    log "building Detectron2 0.6 (Python parts) from its registry sdist"
    rm -f "$registry_file"
    "$PY" "$ROOT/tools/build_detectron2.py"
    echo "$registry_id" > "$registry_file"
  fi
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

if ! "${CHECK[@]}" | sed 's/^check_install: /[install] /'; then
  echo "install.sh: the environment $VENV is installed but does not work (see above); the next run retries" >&2
  exit 1
fi
echo "$stamp" > "$stamp_file"
log "done in $(( $(date +%s) - start )) s"
