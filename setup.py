"""soco: detection-oriented self-supervised pretraining for Detectron2.

PyTorch, torchvision and Detectron2 are installed by ``tools/install.sh`` (Detectron2 is not on
PyPI under its own name; see docs/INSTALL.md), so they are checked at import time, not listed here.
"""

import glob
import os
import shutil

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

# Versions verified together on Python 3.11 with torch 2.14.1 / torchvision 0.29.1 are pinned in
# constraints.txt, which tools/install.sh installs under. The packages a GPU node usually brings
# itself (tools/make_wheelhouse.py leaves them out of the wheelhouse) are ranges here, starting at
# their first release with Python 3.12 wheels, so an offline install keeps the node's own.
INSTALL_REQUIRES = [
    "numpy>=1.26,<3",
    "fvcore==0.1.5.post20221221",
    "iopath==0.1.9",
    "pycocotools==2.0.11",
    "opencv-contrib-python-headless>=4.8",
    "selectivesearch==0.4",
    "scikit-image>=0.22",
    "scikit-learn==1.9.1",
    "scipy>=1.11",
    "matplotlib>=3.8",
    "tensorboard==2.21.0",
    "tqdm==4.70.1",
]



def packaged_configs():
    """Ship ``configs/`` (kept at the repository root, where users look) inside the package as
    ``soco/model_zoo/configs``, as Detectron2 ships its model zoo: a link to the folder (a copy
    where links fail), made anew at every build so it is never stale; returns the YAML files
    relative to ``soco/model_zoo`` for ``package_data``. Building from an sdist, which carries
    the package's copy and no root folder, keeps that copy."""
    source, target = os.path.join(HERE, "configs"), os.path.join(HERE, "soco", "model_zoo", "configs")
    if os.path.isdir(source):
        if os.path.islink(target):
            os.unlink(target)
        elif os.path.isdir(target):
            shutil.rmtree(target)
        try:
            os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
        except OSError:
            shutil.copytree(source, target)
    files = glob.glob(os.path.join(target, "**", "*.yaml"), recursive=True)
    if not files:
        raise SystemExit(f"setup.py: no configs to ship: {source} and {target} hold no YAML files")
    return sorted(os.path.relpath(f, os.path.dirname(target)) for f in files)


setup(
    name="soco",
    version="0.1.0",
    description="SoCo, CoKe, CLSA and SMoG pretraining for Detectron2",
    packages=find_packages(include=["soco", "soco.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest==9.2.0", "pytest-timeout==2.4.0"]},
    package_data={"soco.model_zoo": packaged_configs()},
    include_package_data=True,
)
