"""Finding a package's modules by name, so that adding a method is adding files, not editing lists."""

import importlib
import pkgutil
from types import ModuleType
from typing import List, Sequence

__all__ = ["import_submodules"]


def import_submodules(package: str, prefix: str = "", exclude: Sequence[str] = ()) -> List[ModuleType]:
    """Import every direct submodule of ``package`` whose name starts with ``prefix`` (except the
    names in ``exclude``), in name order, and return them. ``package``: a dotted name whose
    package is already importing or imported (e.g. ``__name__`` in its ``__init__``)."""
    path = importlib.import_module(package).__path__
    names = sorted(m.name for m in pkgutil.iter_modules(path) if m.name.startswith(prefix) and m.name not in exclude)
    return [importlib.import_module(f"{package}.{name}") for name in names]
