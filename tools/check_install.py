#!/usr/bin/env python
"""Check that this Python environment has everything soco uses, Detectron2 above all.

Imports torch, torchvision, every module of the soco package, and every Detectron2 module and
name that soco's package, tools, tests and benchmarks import. Those are found by reading their
import statements, so a new use of Detectron2 is checked without editing this file. Then it uses
the Detectron2 model zoo's packaged configs, and, for a Detectron2 that claims C++ ops (any build
but the registry's ``+nocsrc``), loads its compiled extension.

Prints one summary line (backend, versions) and exits 0, or prints one line per problem, each
saying what to do, and exits 1. ``tools/install.sh`` runs it after installing and before
declaring an existing environment up to date.

usage: python tools/check_install.py [--quiet]
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import sys
import traceback
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Set

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("soco", "tools", "tests", "benchmarks")
# A packaged config every model-zoo lookup of the project relies on (tests, sanity checks).
ZOO_CONFIG = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"
REINSTALL = "rerun tools/install.sh with the same options; if that does not help, delete the venv and rerun it"


def detectron2_imports(paths: Iterable[Path]) -> Dict[str, Set[str]]:
    """``{module: {names imported from it}}`` for every ``import detectron2...`` and
    ``from detectron2... import ...`` statement in the Python files under ``paths``
    (``import x`` statements contribute the module with no names)."""
    found: Dict[str, Set[str]] = {}
    for path in paths:
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            tree = ast.parse(file.read_text(), filename=str(file))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.split(".")[0] == "detectron2":
                            found.setdefault(alias.name, set())
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    if node.module.split(".")[0] == "detectron2":
                        found.setdefault(node.module, set()).update(a.name for a in node.names)
    return found


def _hint(error: BaseException) -> str:
    """What to do about an import error, with the one known cause spelled out."""
    if isinstance(error, ModuleNotFoundError) and error.name == "pkg_resources":
        return ("setuptools >= 82 removed pkg_resources, which this Detectron2 imports: install "
                "setuptools from constraints.txt (pip install -c constraints.txt setuptools), or " + REINSTALL)
    return REINSTALL


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def check_detectron2(uses: Dict[str, Set[str]]) -> List[str]:
    """Problems importing ``uses`` (see :func:`detectron2_imports`) and using the model zoo."""
    problems = []
    for module_name in sorted(uses):
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # any import-time failure is a broken install
            problems.append(f"cannot import {module_name} ({_describe(e)}): {_hint(e)}")
            continue
        for name in sorted(uses[module_name]):
            if not hasattr(module, name):
                try:  # a submodule imported by name: from detectron2 import model_zoo
                    importlib.import_module(f"{module_name}.{name}")
                except Exception as e:
                    problems.append(f"cannot import {name} from {module_name} ({_describe(e)}): {_hint(e)}")
    if problems:  # the model zoo check below would repeat an import error
        return problems
    try:
        from detectron2 import model_zoo

        config = Path(model_zoo.get_config_file(ZOO_CONFIG))
        if not config.is_file():
            problems.append(f"the model zoo's config {ZOO_CONFIG} is missing ({config}): {REINSTALL}")
    except Exception as e:
        problems.append(f"detectron2.model_zoo cannot find its config {ZOO_CONFIG} ({_describe(e)}): {_hint(e)}")
    return problems


def check_cpp_ops() -> List[str]:
    """An official build must load its compiled ops (a torch upgrade after compiling breaks them)."""
    import detectron2

    if detectron2.__version__.endswith("+nocsrc"):
        return []
    try:
        from detectron2 import _C  # noqa: F401
    except Exception as e:
        return [f"Detectron2 {detectron2.__version__} cannot load its C++ ops ({_describe(e)}): rebuild it "
                "against the installed torch with tools/install.sh --detectron2-src PATH_TO_CHECKOUT"]
    return []


def check_soco() -> List[str]:
    """Problems importing torch, torchvision and every module of the soco package."""
    problems = []
    for name in ("torch", "torchvision", "soco"):
        try:
            importlib.import_module(name)
        except Exception as e:
            return [f"cannot import {name} ({_describe(e)}): {_hint(e)}"]
    import soco

    for info in pkgutil.walk_packages(soco.__path__, "soco."):
        try:
            importlib.import_module(info.name)
        except Exception as e:
            problems.append(f"cannot import {info.name} ({_describe(e)}): {_hint(e)}")
    return problems


def summary() -> str:
    import detectron2
    import torch
    import torchvision

    import soco

    backend = "registry build, no C++ ops" if detectron2.__version__.endswith("+nocsrc") else "official build, C++ ops"
    return (f"torch {torch.__version__} | torchvision {torchvision.__version__} | "
            f"detectron2 {detectron2.__version__} ({backend}) | soco {soco.__version__}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quiet", action="store_true", help="print problems only")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # import-time deprecation notices are not problems here

    problems = check_soco()
    if not problems:
        try:
            import detectron2  # noqa: F401
        except Exception as e:
            problems = [f"cannot import detectron2 ({_describe(e)}): {REINSTALL}"]
    if not problems:
        problems = check_detectron2(detectron2_imports(ROOT / d for d in SCANNED)) + check_cpp_ops()
    if problems:
        print(f"check_install: {sys.executable} is not a working soco environment:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"check_install: ok | {summary()}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # a crash of the check itself still says where it happened
        traceback.print_exc()
        sys.exit(1)
