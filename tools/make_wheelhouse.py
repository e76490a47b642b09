#!/usr/bin/env python
"""Write a wheelhouse: every wheel soco needs for an offline install on a node that has PyTorch.

Run it where the registries are reachable (a login node), with the Python of a soco install
(``tools/install.sh``'s venv: building Detectron2's wheel imports torch). It writes into OUT:

- soco's wheel and Detectron2 0.6+nocsrc as a pure-Python wheel (``tools/build_detectron2.py
  --wheel-dir``: the same patched source the installer uses);
- every dependency of the two, at the versions of ``constraints.txt``, as wheels for the target
  Python and platform (``pip download --only-binary=:all:``); a dependency published only as an
  sdist (fvcore, antlr4-python3-runtime, ...) is built here with ``pip wheel`` and must come out
  pure Python, else the tool stops naming it;
- ``wheelhouse.json``: the target, the wheels, and what the node must provide itself (the
  excluded packages, with the version ranges soco and its dependencies ask for).

Left out: PyTorch and torchvision always (the node's own build is used, never replaced; nothing
in the wheelhouse depends on them), and the packages such nodes usually carry: by default
``numpy pillow opencv-* scipy scikit-image matplotlib`` (``--exclude`` replaces this list;
names are matched case-insensitively as shell patterns). A dependency reached only through an
excluded package (e.g. matplotlib's contourpy) is left out with it.

Install on the node without network:

    tools/install.sh --wheelhouse OUT --use-system-torch [--venv DIR | --python PY]

usage: python tools/make_wheelhouse.py [--python 3.12] [--platform manylinux_2_28_x86_64]
                                       [--exclude PATTERN ...] OUT
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # a bare Python still has pip's copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "wheelhouse.json"
ALWAYS_EXCLUDED = ("torch", "torchvision")
DEFAULT_EXCLUDE = ("numpy", "pillow", "opencv-*", "scipy", "scikit-image", "matplotlib")
# Top-level entries of the repository that building soco's wheel reads.
MACHINES = ("x86_64", "aarch64", "ppc64le", "s390x", "i686")
SOURCE_ENTRIES = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "soco", "configs")


class WheelhouseError(Exception):
    """A problem the user can fix; printed as one line."""


@dataclass(frozen=True)
class Dist:
    """One resolved distribution of a pip ``--report``: canonical ``name``, ``version``, the
    artifact pip chose (``url``), its ``Requires-Dist`` lines and the extras asked of it."""

    name: str
    version: str
    url: str
    requires: Tuple[str, ...]
    extras: Tuple[str, ...]

    @property
    def is_wheel(self) -> bool:
        return self.url.endswith(".whl")


def read_report(path: Path) -> Tuple[Dict[str, Dist], Dict[str, str]]:
    """``({name: Dist}, marker environment)`` from a ``pip install --dry-run --report`` file."""
    report = json.loads(path.read_text())
    dists = {}
    for item in report["install"]:
        meta = item["metadata"]
        name = canonicalize_name(meta["name"])
        dists[name] = Dist(name, meta["version"], item["download_info"]["url"],
                           tuple(meta.get("requires_dist", ())), tuple(item.get("requested_extras") or ()))
    return dists, report["environment"]


def is_excluded(name: str, patterns: Iterable[str]) -> bool:
    """Whether distribution ``name`` matches one of the shell ``patterns`` (names normalised)."""
    name = canonicalize_name(name)
    return any(fnmatch.fnmatchcase(name, re.sub(r"[-_.]+", "-", p).lower()) for p in patterns)


def select(dists: Dict[str, Dist], roots: Sequence[str], exclude: Sequence[str],
           environment: Dict[str, str]) -> Tuple[List[Dist], Dict[str, Dict[str, List[str]]]]:
    """What goes into the wheelhouse: the distributions reachable from ``roots`` without passing
    through an excluded one (requirement markers evaluated in ``environment``, with each
    distribution's requested extras), and what the node must provide:
    ``{excluded name: {requirement: [names of the distributions asking for it]}}``."""
    patterns = tuple(exclude) + ALWAYS_EXCLUDED
    kept: Dict[str, Dist] = {}
    provided: Dict[str, Dict[str, List[str]]] = {}
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        dist = dists[todo.pop()]
        if dist.name in kept:
            continue
        kept[dist.name] = dist
        for line in dist.requires:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate(dict(environment, extra=e)) for e in dist.extras or ("",)):
                continue
            name = canonicalize_name(req.name)
            if is_excluded(name, patterns):
                provided.setdefault(name, {}).setdefault(f"{name}{req.specifier}", []).append(dist.name)
            elif name not in dists:
                raise WheelhouseError(f"{dist.name} requires {line!r}, which pip's resolution does not contain")
            else:
                todo.append(name)
    return sorted(kept.values(), key=lambda d: d.name), {
        name: {req: sorted(by) for req, by in sorted(reqs.items())} for name, reqs in sorted(provided.items())}


def check_pure(wheel: Path, dist: Dist) -> None:
    """A wheel built here from an sdist must run on any target: pure Python only."""
    _, _, _, tags = parse_wheel_filename(wheel.name)
    if not all(t.abi == "none" and t.platform == "any" and t.interpreter.startswith("py") for t in tags):
        raise WheelhouseError(
            f"{dist.name} {dist.version} has no wheel for the target and its sdist is not pure Python "
            f"(built {wheel.name}): add it to --exclude and install it on the node another way")


def target_options(python: Optional[str], platform: Optional[str]) -> List[str]:
    """pip's options selecting wheels for another Python and/or platform (pip allows them only
    with ``--only-binary=:all:``)."""
    opts = []
    if python:
        opts += ["--python-version", python, "--implementation", "cp", "--abi", "cp" + python.replace(".", "")]
    for tag in platform_tags(platform) if platform else ():
        opts += ["--platform", tag]
    return opts


def platform_tags(platform: str) -> List[str]:
    """``platform`` and the older tags a machine of that platform also runs: pip takes
    ``--platform`` literally, and e.g. numpy 2.2.6 ships for Python 3.12 only as manylinux_2_17."""
    match = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if not match:
        return [platform]
    glibc, machine = int(match.group(1)), match.group(2)
    return [f"manylinux_2_{minor}_{machine}" for minor in range(glibc, 16, -1)] + [
        f"manylinux{legacy}_{machine}" for legacy in ("2014", "2010", "1")]


def target_environment(environment: Dict[str, str], python: Optional[str], platform: Optional[str]) -> Dict[str, str]:
    """The marker environment of the target: ``environment`` (this Python's) with the target's
    Python version and machine."""
    env = dict(environment)
    if python:
        env.update(python_version=python, python_full_version=f"{python}.0", implementation_version=f"{python}.0")
    if platform:
        env["platform_machine"] = next((m for m in MACHINES if platform.endswith(m)), env["platform_machine"])
    return env


def pip(*args: str, step: str) -> None:
    """Run pip with this Python; a failure names the step (pip's own error is printed above)."""
    cmd = [sys.executable, "-m", "pip", *args]
    if subprocess.run(cmd).returncode != 0:
        raise WheelhouseError(f"{step} failed (pip's error above); command: {' '.join(cmd)}")


def build_local_wheels(out: Path, work: Path) -> List[str]:
    """soco's wheel (from a copy of the sources, so no stale build/ folder leaks in) and
    Detectron2's; returns pip requirements for them (soco with its ``test`` extra)."""
    src = work / "soco-src"
    src.mkdir()
    for entry in SOURCE_ENTRIES:
        if (ROOT / entry).is_dir():
            shutil.copytree(ROOT / entry, src / entry, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif (ROOT / entry).exists():
            shutil.copy2(ROOT / entry, src / entry)
    pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src), step="building soco's wheel")
    build_d2 = [sys.executable, str(ROOT / "tools" / "build_detectron2.py"), "--wheel-dir", str(out)]
    if subprocess.run(build_d2).returncode != 0:
        raise WheelhouseError("building Detectron2's wheel failed (error above): tools/build_detectron2.py --wheel-dir")
    (soco,) = out.glob("soco-*.whl")
    (d2,) = out.glob("detectron2-*.whl")
    return [f"{soco}[test]", str(d2)]


def resolve(requirements: List[str], out: Path, report: Path, options: List[str]) -> None:
    """pip's resolution of ``requirements`` under constraints.txt, written to ``report``
    (nothing is installed); ``out``'s wheels are candidates too."""
    pip("install", "--dry-run", "--ignore-installed", "-q", "--report", str(report), "-c", str(ROOT / "constraints.txt"),
        "--find-links", str(out), *options, *requirements, step="resolving soco's dependencies")


def build_sdists(dists: List[Dist], out: Path, work: Path) -> None:
    """Wheels of the chosen distributions pip would install from an sdist, checked pure."""
    for dist in dists:
        if dist.is_wheel:
            continue
        before = set(out.iterdir())
        pip("wheel", "-q", "--no-deps", "-w", str(out), f"{dist.name}=={dist.version}",
            step=f"building a wheel of {dist.name} {dist.version} (sdist only)")
        (wheel,) = set(out.iterdir()) - before
        check_pure(wheel, dist)


def make(out: Path, python: Optional[str], platform: Optional[str], exclude: Sequence[str]) -> dict:
    """Write the wheelhouse into ``out`` (built next to it, renamed at the end); returns the manifest."""
    if out.exists() and any(out.iterdir()):
        raise WheelhouseError(f"{out} exists and is not empty: give a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    work = Path(tempfile.mkdtemp(prefix="wheelhouse-work-"))
    try:
        roots = build_local_wheels(staging, work)
        # Pass 1 with this Python (sdists allowed) finds what exists only as an sdist; pass 2
        # resolves for the target, binary only, seeing the wheels built from those sdists.
        resolve(roots, staging, work / "local.json", [])
        dists, env = read_report(work / "local.json")
        kept, _ = select(dists, ["soco", "detectron2"], exclude, env)
        build_sdists(kept, staging, work)
        options = target_options(python, platform)
        if options:
            resolve(roots, staging, work / "target.json", ["--only-binary=:all:", *options])
            dists, env = read_report(work / "target.json")
        kept, provided = select(dists, ["soco", "detectron2"], exclude, target_environment(env, python, platform))
        local = {canonicalize_name(parse_wheel_filename(w.name)[0]) for w in staging.glob("*.whl")}
        to_download = [f"{d.name}=={d.version}" for d in kept if d.name not in local]
        pip("download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(staging), *options, *to_download,
            step="downloading the wheels")
        wheels = sorted(w.name for w in staging.glob("*.whl"))
        unwanted = [w for w in wheels if canonicalize_name(parse_wheel_filename(w)[0]) not in {d.name for d in kept}]
        if unwanted:
            raise WheelhouseError(f"wheels outside the selection were written: {unwanted}")
        manifest = {
            "python": python or env["python_version"], "platform": platform or "this machine's",
            "exclude": list(exclude), "always_excluded": list(ALWAYS_EXCLUDED), "wheels": wheels,
            "node_provides": provided,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def describe(out: Path) -> str:
    """The wheelhouse's size, number of wheels and largest wheels."""
    wheels = sorted(out.glob("*.whl"), key=lambda w: -w.stat().st_size)
    total = sum(w.stat().st_size for w in wheels) / 2**20
    largest = ", ".join(f"{w.name.split('-')[0]} {w.stat().st_size / 2**20:.1f}" for w in wheels[:6])
    return f"{out}: {len(wheels)} wheels, {total:.1f} MiB (largest, MiB: {largest})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the wheelhouse folder (new or empty)")
    parser.add_argument("--python", help="target Python version, e.g. 3.12 (default: this Python)")
    parser.add_argument("--platform", help="target platform tag, e.g. manylinux_2_28_x86_64 (default: this machine)")
    parser.add_argument("--exclude", nargs="*", default=list(DEFAULT_EXCLUDE), metavar="PATTERN",
                        help=f"packages the node provides itself (default: {' '.join(DEFAULT_EXCLUDE)}); "
                             f"{' and '.join(ALWAYS_EXCLUDED)} are always left out")
    args = parser.parse_args(argv)
    try:
        make(args.out.resolve(), args.python, args.platform, args.exclude)
    except WheelhouseError as e:
        print(f"make_wheelhouse: {e}", file=sys.stderr)
        return 2
    print(f"make_wheelhouse: {describe(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
