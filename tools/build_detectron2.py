#!/usr/bin/env python
"""Build and install Detectron2 v0.6 (Python parts only) from its registry sdist.

Detectron2 is not on PyPI under its own name. ``pb1-detectron2==0.6`` is an sdist whose Python
code is upstream Detectron2 v0.6 without the C++ sources. This script downloads it, checks its
sha256, applies the small set of compatibility edits listed in ``PATCHES`` to the *unpacked
source* (never to an installed package), and installs the result as ``detectron2==0.6+nocsrc``,
or, with ``--wheel-dir``, writes it as a pure-Python wheel there instead (for
``tools/make_wheelhouse.py``; the wheel installs on any Python >= 3.10 and platform).

Every edit must match the source exactly (with the expected count); if the sdist ever changes,
the script stops with the file and the text that no longer matches.

Users with internet access and a compiler should prefer the official build:
``pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'``
or ``tools/install.sh --detectron2-src PATH`` with a checkout.

usage: python tools/build_detectron2.py [--workdir DIR] [--keep] [--wheel-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
LOCAL_VERSION = "0.6+nocsrc"
# pip >= 25 refuses to download this sdist (its "all" extra names a direct URL); an older pip,
# installed into a temporary folder only for the download, still fetches it by name.
DOWNLOAD_PIP = "pip==24.3.1"


@dataclass(frozen=True)
class Patch:
    """Replace ``old`` by ``new`` in ``path`` (relative to the sdist root); ``old`` must occur
    exactly ``count`` times. ``regex`` makes ``old`` a regular expression."""

    path: str
    old: str
    new: str
    count: int = 1
    regex: bool = False
    why: str = ""


NP_ALIAS = r"\bnp\.(bool|int|float|str|object)\b(?![_\w])"

PATCHES = [
    Patch("setup.py", 'name="pb1-detectron2"', 'name="detectron2"', why="install under its own name"),
    Patch(
        "setup.py",
        '    ext_modules=get_extensions(),\n    cmdclass={"build_ext": torch.utils.cpp_extension.BuildExtension},\n',
        "",
        why="the sdist has no C++ sources",
    ),
    Patch(
        "setup.py",
        'package_data={"detectron2.model_zoo": get_model_zoo_configs()},',
        'package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},',
        why="ship the model-zoo configs (they live inside the package in this sdist)",
    ),
    Patch(
        "setup.py",
        'exclude=("configs", "tests*")',
        'exclude=("configs", "tests*", "tools", "tools.*")',
        why="do not install a stray top-level 'tools' package",
    ),
    Patch("setup.py", '        "future",  # used by caffe2\n', "", why="caffe2 export only"),
    Patch("setup.py", '        "pydot",  # used to save caffe2 SVGs\n', "", why="caffe2 export only"),
    Patch("setup.py", '        "black==21.4b2",\n', "", why="formatter pin conflicts with today's stack"),
    Patch("detectron2/__init__.py", '__version__ = "0.6"', f'__version__ = "{LOCAL_VERSION}"', why="tell this build apart"),
    Patch(
        "detectron2/data/transforms/transform.py",
        "interp=Image.LINEAR",
        "interp=Image.BILINEAR",
        why="Pillow >= 10 removed Image.LINEAR (same filter)",
    ),
    Patch(
        "detectron2/model_zoo/model_zoo.py",
        "import pkg_resources\n",
        "import importlib.resources\n",
        why="pkg_resources is gone in setuptools >= 82",
    ),
    Patch(
        "detectron2/model_zoo/model_zoo.py",
        'cfg_file = pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
        'cfg_file = str(importlib.resources.files("detectron2.model_zoo").joinpath("configs", config_path))',
    ),
    Patch(
        "detectron2/evaluation/coco_evaluation.py",
        "from detectron2.evaluation.fast_eval_api import COCOeval_opt\n",
        "COCOeval_opt = COCOeval  # no C++ ops in this build: pycocotools' COCOeval gives the same AP\n",
        why="COCOeval_opt needs the C++ extension",
    ),
    Patch(
        "detectron2/layers/nms.py",
        "torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)",
        "_C.nms_rotated(boxes, scores, iou_threshold)",
        why="torch.ops.detectron2 is empty without C++ ops: go through the stand-in's clear error",
    ),
    Patch(
        "detectron2/layers/nms.py",
        "from torchvision.ops import nms  # BC-compat\n",
        "from torchvision.ops import nms  # BC-compat\n\nfrom detectron2 import _C\n",
    ),
    Patch(
        "detectron2/modeling/anchor_generator.py",
        "torch.meshgrid(shifts_y, shifts_x)",
        'torch.meshgrid(shifts_y, shifts_x, indexing="ij")',
        why="silence the indexing deprecation with the same behaviour",
    ),
] + [
    Patch(path, NP_ALIAS, r"\1", count=n, regex=True, why="NumPy >= 1.24 removed np.bool/int/float/str/object")
    for path, n in [
        ("detectron2/evaluation/pascal_voc_evaluation.py", 2),
        ("detectron2/evaluation/sem_seg_evaluation.py", 7),
        ("detectron2/structures/masks.py", 3),
        ("detectron2/data/build.py", 2),  # class histogram: its np.int error was silently swallowed
        ("detectron2/data/datasets/pascal_voc.py", 1),
        ("detectron2/utils/visualizer.py", 3),
        ("detectron2/utils/video_visualizer.py", 1),
    ]
]

C_STUB = f'''"""Stand-in for Detectron2's C++/CUDA extension, which this build ({LOCAL_VERSION}) lacks.

Detectron2's pure-Python paths (ResNet, FPN, RPN, ROIAlign via torchvision, ROI heads, trainers,
checkpointer, COCO evaluation) do not need it. Ops that do (rotated-box IoU and NMS,
ROIAlignRotated, deformable convolution on GPU) raise a clear error when called.
"""


def get_compiler_version():
    return "none (detectron2 {LOCAL_VERSION} has no C++ ops)"


def get_cuda_version():
    return "none (detectron2 {LOCAL_VERSION} has no C++ ops)"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise RuntimeError(
        f"detectron2._C.{{name}} is a C++ op, and this Detectron2 ({LOCAL_VERSION}) was installed "
        "without C++ ops (rotated-box IoU and NMS, ROIAlignRotated and deformable convolution on GPU "
        "need them). "
        "Build Detectron2 from source to use it: tools/install.sh --detectron2-src PATH_TO_CHECKOUT"
    )
'''


def apply_patch(root: Path, patch: Patch) -> None:
    file = root / patch.path
    text = file.read_text()
    found = len(re.findall(patch.old, text)) if patch.regex else text.count(patch.old)
    if found != patch.count:
        raise SystemExit(
            f"build_detectron2: {patch.path}: expected {patch.count} occurrence(s) of {patch.old!r}, "
            f"found {found}; the sdist changed, so this build script needs updating"
        )
    text = re.sub(patch.old, patch.new, text) if patch.regex else text.replace(patch.old, patch.new)
    file.write_text(text)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_sdist(workdir: Path) -> Path:
    pip_dir = workdir / "download-pip"
    run([sys.executable, "-m", "pip", "install", "-q", "--target", str(pip_dir), DOWNLOAD_PIP])
    env_pythonpath = {"PYTHONPATH": str(pip_dir)}
    run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-build-isolation",
         "-d", str(workdir), f"{SDIST_NAME}=={SDIST_VERSION}"],
        extra_env=env_pythonpath,
    )
    (archive,) = workdir.glob(f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz")
    digest = sha256(archive)
    if digest != SDIST_SHA256:
        raise SystemExit(f"build_detectron2: {archive.name} has sha256 {digest}, expected {SDIST_SHA256}")
    return archive


def run(cmd: list[str], extra_env: dict[str, str] | None = None) -> None:
    import os

    env = dict(os.environ, **(extra_env or {}))
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def prepare_source(workdir: Path) -> Path:
    """Download, check, unpack and patch the sdist under ``workdir``; returns the source root."""
    archive = download_sdist(workdir)
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    root = workdir / f"{SDIST_NAME}-{SDIST_VERSION}"
    for patch in PATCHES:
        apply_patch(root, patch)
    (root / "detectron2" / "_C.py").write_text(C_STUB)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="build folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the build folder")
    parser.add_argument("--wheel-dir", type=Path, help="write the wheel into this folder instead of installing it")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="detectron2-build-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        root = prepare_source(workdir)
        if args.wheel_dir:
            run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                 "-w", str(args.wheel_dir), str(root)])
        else:
            run([sys.executable, "-m", "pip", "install", "--no-build-isolation", str(root)])
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    done = f"wrote its wheel to {args.wheel_dir}" if args.wheel_dir else "installed"
    print(f"build_detectron2: {done}: detectron2 {LOCAL_VERSION}")


if __name__ == "__main__":
    main()
