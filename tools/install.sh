#!/usr/bin/env bash
# Install everything soco needs into a virtual environment (or a given Python). Idempotent: a
# second run checks and returns in seconds.
#
#   tools/install.sh [--venv DIR | --python PY] [--detectron2-src PATH]
#                    [--use-system-torch] [--wheelhouse DIR]
#
#   --venv DIR             the virtual environment (default: $SOCO_VENV or .venv in the repo)
#   --python PY            install into this Python itself (e.g. a cluster module's python3 or a
#                          conda env) instead of a virtual environment
#   --use-system-torch     keep the PyTorch and torchvision the Python already has: never install
#                          or replace them; stop if they are missing or unsupported (torch >= 2.5
#                          with its own torchvision release). A new venv is created with
#                          --system-site-packages so that it sees them.
#   --wheelhouse DIR       install offline: soco, Detectron2 and their dependencies come only from
#                          DIR (made by tools/make_wheelhouse.py; pip --no-index), soco from its
#                          wheel, not editable. Implies --use-system-torch; before installing,
#                          checks that the Python has what the wheelhouse leaves to the node.
#   --detectron2-src PATH  install Detectron2 from a source checkout (the official build, with its
#                          C++/CUDA ops; needs a compiler). It is rebuilt only when the checkout's
#                          commit changed or has uncommitted edits. Without it an importable
#                          Detectron2 is kept; otherwise tools/build_detectron2.py builds the Python
#                          parts of Detectron2 v0.6 from its registry sdist (see docs/INSTALL.md).
#
# Steps: venv -> setuptools/wheel, PyTorch/torchvision (pinned; or checked, --use-system-torch) ->
# soco and its pinned dependencies (editable; or from the wheelhouse) -> Detectron2 -> Fashion-MNIST
# (Debian package dataset-fashion-mnist, when run as root and online) -> tools/check_install.py
# (imports everything soco uses from Detectron2; a failure exits 1 and says what to do). An
# existing venv is "up to date" only if the same files installed it and that check passes; a
# broken one is repaired.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SOCO_VENV:-$ROOT/.venv}
D2_SRC=${DETECTRON2_SRC:-}
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
TARGET_PY=""
SYSTEM_TORCH=""
WHEELHOUSE=""

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV=$2; shift 2 ;;
    --detectron2-src) D2_SRC=$2; shift 2 ;;
    --python) TARGET_PY=$2; shift 2 ;;
    --use-system-torch) SYSTEM_TORCH=1; shift ;;
    --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "[install] $*"; }
start=$(date +%s)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

if [ -n "$WHEELHOUSE" ]; then
  [ -f "$WHEELHOUSE/wheelhouse.json" ] || { echo "install.sh: --wheelhouse $WHEELHOUSE has no wheelhouse.json (make one with tools/make_wheelhouse.py)" >&2; exit 2; }
  [ -z "$D2_SRC" ] || { echo "install.sh: --wheelhouse installs the wheelhouse's Detectron2; drop --detectron2-src" >&2; exit 2; }
  WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
  SYSTEM_TORCH=1
fi

if [ -n "$TARGET_PY" ]; then
  command -v "$TARGET_PY" >/dev/null || { echo "install.sh: --python $TARGET_PY: no such Python" >&2; exit 2; }
  PY=$TARGET_PY
elif [ ! -x "$VENV/bin/python" ]; then
  if [ -n "$SYSTEM_TORCH" ]; then
    log "creating virtual environment $VENV (with python3's packages visible: its torch)"
    python3 -m venv --system-site-packages "$VENV"
  else
    log "creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  [ -n "$WHEELHOUSE" ] || "$VENV/bin/python" -m pip install -q --upgrade pip
fi
# Every pip call below (build_detectron2.py's too) installs within the verified versions, except
# from a wheelhouse: its wheels were chosen under them, and the node's own packages stay.
export PIP_CONSTRAINT="$ROOT/constraints.txt"
[ -z "$WHEELHOUSE" ] || unset PIP_CONSTRAINT
PY=${TARGET_PY:-$VENV/bin/python}
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

# What this script records about an install lives in the venv; with --python it goes to a scratch
# folder, so nothing is recorded (pip finds what is already there quickly).
state_file() { if [ -n "$TARGET_PY" ]; then echo "$SCRATCH/$1"; else echo "$VENV/$1"; fi; }

# The stamp records what was installed; a matching stamp plus a passing check means nothing to do.
stamp_file=$(state_file .soco-install-stamp)
stamp=$(cat "$ROOT/setup.py" "$ROOT/constraints.txt" "$ROOT/tools/install.sh" "$ROOT/tools/build_detectron2.py" | sha256sum | cut -c1-16)
stamp="$stamp d2src=$D2_SRC@$d2_src_id"
[ -z "$SYSTEM_TORCH" ] || stamp="$stamp system-torch wheelhouse=$WHEELHOUSE@$(cat "$WHEELHOUSE/wheelhouse.json" 2>/dev/null | sha256sum | cut -c1-16)"
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
if [ -z "$WHEELHOUSE" ]; then  # offline, soco comes as a wheel: nothing is built
  log "installing setuptools and wheel ($(grep -E '^(setuptools|wheel)==' "$ROOT/constraints.txt" | paste -sd' ' -))"
  "${PIP[@]}" setuptools wheel
fi

if [ -n "$SYSTEM_TORCH" ]; then
  log "keeping this Python's torch and torchvision (--use-system-torch); checking them"
  "${CHECK[@]}" --before-install ${WHEELHOUSE:+--wheelhouse "$WHEELHOUSE"} | sed 's/^check_install: /[install] /' \
    || { echo "install.sh: $PY cannot take soco as it is (see above); nothing was installed" >&2; exit 1; }
elif "$PY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('$TORCH_VERSION') and torchvision.__version__.startswith('$TORCHVISION_VERSION')))" 2>/dev/null; then
  log "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION present"
else
  log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
  "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

if [ -n "$WHEELHOUSE" ]; then
  log "installing soco, Detectron2 and their dependencies from the wheelhouse $WHEELHOUSE (no network)"
  pip_err="$SCRATCH/pip-stderr"
  # soco's wheel always replaces an installed soco (a rebuilt wheelhouse keeps version 0.1.0);
  # an importable Detectron2 is kept, as below.
  if ! { "${PIP[@]}" --no-index --find-links "$WHEELHOUSE" "soco[test]" detectron2 \
         && "${PIP[@]}" --no-index --find-links "$WHEELHOUSE" --force-reinstall --no-deps soco; } 2>"$pip_err"; then
    cat "$pip_err" >&2
    missing=$(sed -n 's/.*No matching distribution found for \([A-Za-z0-9._-]*\).*/\1/p' "$pip_err" | head -1)
    [ -z "$missing" ] || echo "install.sh: the wheelhouse $WHEELHOUSE has no wheel of $missing for this Python" \
      "($("$PY" -V 2>&1)), and this Python does not have it: make the wheelhouse again for this Python and platform" \
      "(tools/make_wheelhouse.py --python X.Y --platform TAG)" >&2
    exit 1
  fi
else
  log "installing soco (editable) and its pinned dependencies"
  "${PIP[@]}" -e "$ROOT[test]"
fi

d2_built_file=$(state_file .soco-detectron2-src)
if [ -n "$WHEELHOUSE" ]; then
  log "Detectron2 $("$PY" -c "import detectron2; print(detectron2.__version__)" 2>/dev/null)"
elif [ -n "$D2_SRC" ] && [ "$d2_src_id" != unknown ] && [ "${d2_src_id%+edits}" = "$d2_src_id" ] \
   && [ "$(cat "$d2_built_file" 2>/dev/null)" = "$D2_SRC@$d2_src_id" ] && "$PY" -c "import detectron2._C" 2>/dev/null; then
  log "Detectron2 from $D2_SRC at ${d2_src_id:0:12} already built: kept"
elif [ -n "$D2_SRC" ]; then
  log "installing Detectron2 from the source checkout $D2_SRC at ${d2_src_id:0:12} (official build; compiling its C++ ops takes minutes)"
  rm -f "$d2_built_file"
  "${PIP[@]}" --no-build-isolation "$D2_SRC"
  echo "$D2_SRC@$d2_src_id" > "$d2_built_file"
else
  # A registry build (+nocsrc) is ours: rebuilt when tools/build_detectron2.py changed since.
  registry_file=$(state_file .soco-detectron2-registry)
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
elif [ -z "$WHEELHOUSE" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
else
  log "WARNING: Fashion-MNIST not found. As root: apt-get install dataset-fashion-mnist;" \
      "or set SOCO_FASHION_MNIST to a folder with its four IDX .gz files."
fi

if ! "${CHECK[@]}" | sed 's/^check_install: /[install] /'; then
  echo "install.sh: the environment $PY is installed but does not work (see above); the next run retries" >&2
  exit 1
fi
echo "$stamp" > "$stamp_file"
log "done in $(( $(date +%s) - start )) s"
