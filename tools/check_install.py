#!/usr/bin/env python
"""Check that this Python environment has everything soco uses, Detectron2 above all.

Imports torch, torchvision, every module of the soco package, and every Detectron2 module and
name that soco's package, tools, tests and benchmarks import. Those are found by reading their
import statements, so a new use of Detectron2 is checked without editing this file. Then it uses
the Detectron2 model zoo's packaged configs, and, for a Detectron2 that claims C++ ops (any build
but the registry's ``+nocsrc``), loads its compiled extension.

It also checks the PyTorch / torchvision pair (see ``torch_problems``): torch 2.5 or newer
(tested: 2.13 and 2.14 on CPU) with the torchvision of the same release.

``--before-install`` checks only what must be there before soco is installed with
``--use-system-torch``: that pair, and, with ``--wheelhouse DIR``, every package the wheelhouse
left out for the node to provide (its ``wheelhouse.json``), at a version soco accepts.

Prints one summary line (backend, versions) and exits 0, or prints one line per problem, each
saying what to do, and exits 1. ``tools/install.sh`` runs it after installing and before
declaring an existing environment up to date.

usage: python tools/check_install.py [--quiet] [--before-install [--wheelhouse DIR]]
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import json
import pkgutil
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("soco", "tools", "tests", "benchmarks")
# A packaged config every model-zoo lookup of the project relies on (tests, sanity checks).
ZOO_CONFIG = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"
REINSTALL = "rerun tools/install.sh with the same options; if that does not help, delete the venv and rerun it"
# The oldest torch with every API soco calls: torch.serialization.safe_globals (2.5; the official
# checkpoint import) and torch.amp.GradScaler("cuda") (2.3; AMP on GPU).
TORCH_MIN = (2, 5)
TORCH_TESTED = ((2, 13), (2, 14))  # tools/install.sh pins 2.14.1; 2.13.0 checked on CPU as well
# torchvision 0.N is built for torch 2.(N - 15) (0.29 for 2.14, 0.26 for 2.11): another pairing
# fails when torchvision loads its C++ ops.
TORCHVISION_OFFSET = 15


def release(version: str) -> Tuple[int, int]:
    """``(major, minor)`` of a version such as ``2.11.0+cu130`` or ``0.26.0a0``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise ValueError(f"not a version: {version!r}")
    return int(match.group(1)), int(match.group(2))


def torch_problems(torch_version: str, torchvision_version: str) -> List[str]:
    """Why this torch / torchvision pair cannot run soco (empty if it can)."""
    torch_release, vision_release = release(torch_version), release(torchvision_version)
    if torch_release < TORCH_MIN:
        return [f"torch {torch_version} is older than {TORCH_MIN[0]}.{TORCH_MIN[1]}, the oldest with every API soco "
                "uses (torch.serialization.safe_globals, torch.amp.GradScaler('cuda')): use a newer torch"]
    expected = (0, torch_release[1] + TORCHVISION_OFFSET)
    if torch_release[0] == 2 and vision_release != expected:
        return [f"torchvision {torchvision_version} is not the release built for torch {torch_version} (that is "
                f"torchvision {expected[0]}.{expected[1]}): install the torchvision that matches this torch"]
    return []


def provided_problems(node_provides: Dict[str, Dict[str, List[str]]],
                      installed: Callable[[str], Optional[str]]) -> List[str]:
    """Packages a wheelhouse left out (``{name: {requirement: [required by]}}``, its manifest's
    ``node_provides``) that ``installed(name)`` (a version or None) does not satisfy."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # before soco's install, packaging may be missing; pip carries a copy
        from pip._vendor.packaging.requirements import Requirement

    problems = []
    for name, requirements in node_provides.items():
        version = installed(name)
        unmet = [f"{req} (for {', '.join(by)})" for req, by in requirements.items()
                 if version is None or not Requirement(req).specifier.contains(version, prereleases=True)]
        if unmet:
            have = f"has {name} {version}" if version else f"has no {name}"
            problems.append(f"this Python {have}, and the wheelhouse leaves {name} to the node: needed {'; '.join(unmet)}. "
                            f"Install it (e.g. the cluster's module), or make the wheelhouse with an --exclude list "
                            f"that does not name {name} (tools/make_wheelhouse.py --help)")
    return problems


def installed_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_before_install(wheelhouse: Optional[Path]) -> List[str]:
    """Problems ``--before-install`` reports: the torch pair, and what ``wheelhouse`` expects."""
    for name in ("torch", "torchvision"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            return [f"cannot import {name} ({_describe(e)}): with --use-system-torch this Python must already have "
                    "PyTorch and torchvision (load the cluster's PyTorch module or activate its environment)"]
        except Exception as e:
            return [f"cannot import {name} ({_describe(e)}): {_hint(e)}"]
    import torch
    import torchvision

    problems = torch_problems(torch.__version__, torchvision.__version__)
    if wheelhouse is not None:
        manifest = wheelhouse / "wheelhouse.json"
        if not manifest.is_file():
            return problems + [f"{manifest} is missing: {wheelhouse} was not made by tools/make_wheelhouse.py"]
        problems += provided_problems(json.loads(manifest.read_text())["node_provides"], installed_version)
    return problems


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
    """What to do about an import error, with the known causes spelled out."""
    if isinstance(error, ModuleNotFoundError) and error.name == "pkg_resources":
        return ("setuptools >= 82 removed pkg_resources, which this Detectron2 imports: install "
                "setuptools from constraints.txt (pip install -c constraints.txt setuptools), or " + REINSTALL)
    if "operator torchvision::" in str(error):
        return ("torchvision's C++ ops do not load: it was built for another torch (another release, or "
                "CUDA vs CPU-only); install the torchvision built for this torch")
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


def check_environment() -> List[str]:
    """Every problem of this environment, stopping at the first stage that fails (a broken import
    would repeat in every later stage)."""
    problems = check_soco()
    if problems:
        return problems
    import torch
    import torchvision

    problems = torch_problems(torch.__version__, torchvision.__version__)
    if problems:
        return problems
    try:
        import detectron2  # noqa: F401
    except Exception as e:
        return [f"cannot import detectron2 ({_describe(e)}): {REINSTALL}"]
    return check_detectron2(detectron2_imports(ROOT / d for d in SCANNED)) + check_cpp_ops()


def summary() -> str:
    import detectron2
    import torch
    import torchvision

    import soco

    backend = "registry build, no C++ ops" if detectron2.__version__.endswith("+nocsrc") else "official build, C++ ops"
    tested = "tested" if release(torch.__version__) in TORCH_TESTED else "supported, untested"
    return (f"torch {torch.__version__} ({tested}) | torchvision {torchvision.__version__} | "
            f"detectron2 {detectron2.__version__} ({backend}) | soco {soco.__version__}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quiet", action="store_true", help="print problems only")
    parser.add_argument("--before-install", action="store_true",
                        help="check only the torch/torchvision pair (and --wheelhouse's expectations)")
    parser.add_argument("--wheelhouse", type=Path, help="with --before-install: the wheelhouse to install from")
    args = parser.parse_args(argv)
    if args.wheelhouse and not args.before_install:
        parser.error("--wheelhouse goes with --before-install")
    warnings.simplefilter("ignore")  # import-time deprecation notices are not problems here

    problems = check_before_install(args.wheelhouse) if args.before_install else check_environment()
    if problems:
        state = "is not ready for soco's install" if args.before_install else "is not a working soco environment"
        print(f"check_install: {sys.executable} {state}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    if not args.quiet:
        print("check_install: ready to install soco here" if args.before_install else f"check_install: ok | {summary()}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # a crash of the check itself still says where it happened
        traceback.print_exc()
        sys.exit(1)
