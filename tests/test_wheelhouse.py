"""The offline install: tools/make_wheelhouse.py's selection and errors (fast), and, marked slow,
a wheelhouse for this Python installed with ``--no-index`` into a fresh venv that only sees an
existing torch installation, as on a GPU node that brings its own PyTorch."""

import json
import os
import shutil
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_install  # noqa: E402
import make_wheelhouse as mw  # noqa: E402

ENV = {"python_version": "3.12", "sys_platform": "linux", "platform_machine": "x86_64"}


def dist(name, requires=(), url=None, extras=()):
    return mw.Dist(name, "1.0", url or f"https://x/{name}-1.0-py3-none-any.whl", tuple(requires), tuple(extras))


def test_exclude_patterns_match_normalised_names():
    patterns = mw.DEFAULT_EXCLUDE
    for name in ("numpy", "Pillow", "opencv-contrib-python-headless", "opencv_python", "scikit_image", "SciPy"):
        assert mw.is_excluded(name, patterns), name
    for name in ("scikit-learn", "fvcore", "pycocotools", "opencv", "torch"):
        assert not mw.is_excluded(name, patterns), name


def test_select_keeps_what_is_reachable_without_excluded_packages():
    dists = {d.name: d for d in [
        dist("soco", ["numpy>=1.26", "fvcore", "matplotlib>=3.8", "pytest; extra == 'test'"], extras=["test"]),
        dist("detectron2", ["matplotlib", "yacs", "dataclasses; python_version < '3.7'", "shapely; extra == 'all'"]),
        dist("fvcore", ["numpy", "yacs", "pillow"]),
        dist("yacs"), dist("pytest"), dist("numpy"), dist("pillow"),
        dist("matplotlib", ["contourpy", "pillow"]), dist("contourpy", ["numpy"]),
        dist("torch"), dist("sympy"),
    ]}
    kept, provided = mw.select(dists, ["soco", "detectron2"], mw.DEFAULT_EXCLUDE, ENV)
    assert [d.name for d in kept] == ["detectron2", "fvcore", "pytest", "soco", "yacs"]
    # contourpy comes only through matplotlib, which the node provides: left out with it.
    assert provided == {
        "matplotlib": {"matplotlib": ["detectron2"], "matplotlib>=3.8": ["soco"]},
        "numpy": {"numpy": ["fvcore"], "numpy>=1.26": ["soco"]},
        "pillow": {"pillow": ["fvcore"]},
    }
    # An overridden list ships matplotlib and what it needs; torch stays out whatever the list.
    dists["yacs"] = dist("yacs", ["torch"])
    kept, provided = mw.select(dists, ["soco", "detectron2"], ["numpy"], ENV)
    assert {"matplotlib", "contourpy", "pillow"} <= {d.name for d in kept}
    assert "torch" not in {d.name for d in kept} and set(provided) == {"numpy", "torch"}


def test_select_names_a_requirement_the_resolution_lacks():
    dists = {"soco": dist("soco", ["fvcore"])}
    with pytest.raises(mw.WheelhouseError, match="soco requires 'fvcore'"):
        mw.select(dists, ["soco"], [], ENV)


def test_an_sdist_that_builds_a_binary_wheel_is_named(tmp_path):
    sdist = dist("grpcio", url="https://x/grpcio-1.0.tar.gz")
    assert not sdist.is_wheel
    mw.check_pure(tmp_path / "fvcore-1.0-py3-none-any.whl", sdist)
    with pytest.raises(mw.WheelhouseError, match="grpcio 1.0 has no wheel for the target.*--exclude"):
        mw.check_pure(tmp_path / "grpcio-1.0-cp312-cp312-linux_x86_64.whl", sdist)


def test_target_options_and_marker_environment():
    assert mw.target_options(None, None) == []
    options = mw.target_options("3.12", "manylinux_2_28_aarch64")
    assert options[:6] == ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312"]
    # Older manylinux tags run there too (numpy 2.2.6 for 3.12 is manylinux_2_17 only).
    platforms = options[7::2]
    assert platforms[0] == "manylinux_2_28_aarch64" and platforms[-4:] == [
        "manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux2010_aarch64", "manylinux1_aarch64"]
    assert len(platforms) == 12 + 3 and mw.target_options(None, "win_amd64") == ["--platform", "win_amd64"]
    env = mw.target_environment({"python_version": "3.11", "platform_machine": "x86_64"}, "3.12", "manylinux_2_28_aarch64")
    assert env["python_version"] == "3.12" and env["platform_machine"] == "aarch64"


def test_a_non_empty_output_folder_is_refused(tmp_path):
    (tmp_path / "old.whl").write_text("")
    with pytest.raises(mw.WheelhouseError, match="not empty"):
        mw.make(tmp_path, None, None, mw.DEFAULT_EXCLUDE)


@pytest.mark.parametrize("torch_version, vision, problem", [
    ("2.14.1+cu130", "0.29.1+cu130", None),
    ("2.13.0+cpu", "0.28.0+cpu", None),
    ("2.11.0", "0.26.0", None),
    ("2.11.0", "0.29.1", "torchvision 0.29.1 is not the release built for torch 2.11.0 .*torchvision 0.26"),
    ("2.4.1", "0.19.1", "torch 2.4.1 is older than 2.5"),
])
def test_torch_pairs(torch_version, vision, problem):
    problems = check_install.torch_problems(torch_version, vision)
    assert (problems == []) if problem is None else (len(problems) == 1 and __import__("re").search(problem, problems[0]))


def test_a_torchvision_built_for_another_torch_is_explained():
    # What importing PyPI's CUDA torchvision 0.28.0 next to torch 2.13.0+cpu raises.
    hint = check_install._hint(RuntimeError("operator torchvision::nms does not exist"))
    assert hint.startswith("torchvision's C++ ops do not load: it was built for another torch")
    assert check_install._hint(RuntimeError("other")) == check_install.REINSTALL


def test_what_the_node_must_provide_is_checked_by_version():
    provides = {"scipy": {"scipy>=1.11": ["soco"]}, "numpy": {"numpy<3,>=1.26": ["soco"], "numpy": ["fvcore"]}}
    versions = {"scipy": "1.10.1", "numpy": "2.2.6"}
    (problem,) = check_install.provided_problems(provides, versions.get)
    assert problem.startswith("this Python has scipy 1.10.1, and the wheelhouse leaves scipy to the node: "
                              "needed scipy>=1.11 (for soco)")
    (problem,) = check_install.provided_problems(provides, {"scipy": "1.17.1"}.get)
    assert "has no numpy" in problem and "numpy<3,>=1.26 (for soco); numpy (for fvcore)" in problem


# --- slow: a real wheelhouse, installed offline into a venv that sees an existing torch ---------

def expose_installed(names, site_packages: Path, dest: Path) -> None:
    """Symlink into ``dest`` the distributions ``names`` of ``site_packages`` and everything they
    require (their top-level modules and metadata folders): a stand-in for a node's own packages,
    with nothing else of that environment visible."""
    dists = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions(path=[str(site_packages)])}
    todo, seen = [canonicalize_name(n) for n in names], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found = dists[name]
        for line in found.requires or ():
            req = Requirement(line)
            if not req.marker or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
        for top in {Path(f).parts[0] for f in found.files} - {"..", "__pycache__"}:
            if (site_packages / top).exists() and not (dest / top).exists():
                (dest / top).symlink_to(site_packages / top)


def node_python(tmp_path: Path, provides) -> Path:
    """A fresh venv whose only packages are this environment's torch, torchvision and
    ``provides`` (through a .pth file), as a GPU node's Python with its own PyTorch."""
    site_packages = Path(torch.__file__).resolve().parents[1]
    system = tmp_path / "system-site"
    system.mkdir()
    expose_installed(["torch", "torchvision", *provides], site_packages, system)
    node = tmp_path / "node"
    venv.EnvBuilder(with_pip=True).create(node)
    (next(node.glob("lib/python*/site-packages")) / "node_system.pth").write_text(f"{system}\n")
    return node / "bin" / "python"


def run(cmd, cwd=ROOT):
    """``cmd`` without this checkout on the path (``python -c`` probes run elsewhere: the current
    folder comes first on their path)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_CONSTRAINT", "VIRTUAL_ENV")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)


# pytest with the node's Python, from outside the checkout, so that soco is the installed one
# (the tests folder still comes first on the path, for its helpers).
PYTEST_INSTALLED = (
    "import sys, pytest, soco; print('soco from', soco.__file__, flush=True); "
    f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--rootdir', {str(ROOT)!r}, "
    f"'-c', {str(ROOT / 'pytest.ini')!r}, *sys.argv[1:]]))"
)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    out = tmp_path_factory.mktemp("wh") / "wheelhouse"
    made = run([sys.executable, ROOT / "tools" / "make_wheelhouse.py", out])
    if made.returncode != 0 and "Could not find a version" in made.stderr + made.stdout:
        pytest.skip("the package registry is not reachable: " + made.stderr[-300:])
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]
    assert "MiB" in made.stdout
    return out


@pytest.mark.slow
def test_wheelhouse_installs_offline_next_to_an_existing_torch(wheelhouse, tmp_path):
    manifest = json.loads((wheelhouse / "wheelhouse.json").read_text())
    names = {canonicalize_name(w.split("-")[0]) for w in manifest["wheels"]}
    assert {"soco", "detectron2", "fvcore", "iopath", "yacs", "pycocotools", "omegaconf", "hydra-core"} <= names
    assert not [n for n in names if mw.is_excluded(n, mw.DEFAULT_EXCLUDE + mw.ALWAYS_EXCLUDED)]
    assert sorted(p.name for p in wheelhouse.glob("*.whl")) == manifest["wheels"]

    python = node_python(tmp_path, manifest["node_provides"])
    probe_torch = [python, "-c", "import torch; print(torch.__file__, torch.__version__)"]
    torch_before = run(probe_torch, cwd=tmp_path).stdout
    installed = run(["bash", "tools/install.sh", "--wheelhouse", wheelhouse, "--use-system-torch", "--python", python])
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert "check_install: ok" in installed.stdout or "[install] ok" in installed.stdout
    # The node's torch is the one in use, untouched; soco is the wheel's, not this checkout.
    assert run(probe_torch, cwd=tmp_path).stdout == torch_before and "system-site/torch" in torch_before
    where = run([python, "-c", "import soco, detectron2; print(soco.__file__); print(detectron2.__version__)"], cwd=tmp_path)
    assert str(tmp_path / "node") in where.stdout.splitlines()[0] and where.stdout.split()[-1] == "0.6+nocsrc"
    again = run([python, ROOT / "tools" / "check_install.py"])
    assert again.returncode == 0, again.stderr

    # The installed package stands alone, away from this checkout: its configs by name, and the
    # official-checkpoint import (whose tests read the official configs through that lookup).
    lookup = run([python, "-c", "from soco.model_zoo import get_config_file as f; "
                  "print(f('SoCo/official/SoCo_R50_FPN_100ep.yaml'))"], cwd=tmp_path)
    assert lookup.returncode == 0 and lookup.stdout.startswith(str(tmp_path / "node")), lookup.stderr
    tests = run([python, "-c", PYTEST_INSTALLED, ROOT / "tests" / "test_official_import.py"], cwd=tmp_path)
    assert tests.returncode == 0 and tests.stdout.startswith(f"soco from {tmp_path / 'node'}"), tests.stdout[-3000:]


@pytest.mark.slow
def test_missing_wheel_and_missing_node_package_are_named(wheelhouse, tmp_path):
    manifest = json.loads((wheelhouse / "wheelhouse.json").read_text())
    partial = tmp_path / "partial"
    partial.mkdir()
    for entry in wheelhouse.iterdir():
        if not entry.name.startswith("yacs-"):
            (partial / entry.name).symlink_to(entry)
    provides = dict(manifest["node_provides"])
    python = node_python(tmp_path, provides)
    failed = run(["bash", "tools/install.sh", "--wheelhouse", partial, "--use-system-torch", "--python", python])
    assert failed.returncode == 1
    assert f"the wheelhouse {partial} has no wheel of yacs for this Python" in failed.stderr

    # A node without scipy: refused before anything is installed, naming scipy.
    bare = tmp_path / "bare"
    bare.mkdir()
    del provides["scipy"], provides["scikit-image"]  # scikit-image would bring scipy along
    python = node_python(bare, provides)
    failed = run(["bash", "tools/install.sh", "--wheelhouse", wheelhouse, "--use-system-torch", "--python", python])
    assert failed.returncode == 1
    assert "has no scipy, and the wheelhouse leaves scipy to the node" in failed.stderr + failed.stdout
    assert "nothing was installed" in failed.stderr
    assert run([python, "-c", "import fvcore"], cwd=tmp_path).returncode != 0
