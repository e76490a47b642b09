"""tools/check_install.py finds every Detectron2 import of the project and reports a broken one with
what to do; tools/install.sh does not call a broken environment "up to date"."""

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_install  # noqa: E402

# Makes `import detectron2.model_zoo` fail as with setuptools >= 82 under the official Detectron2
# (its model_zoo.py imports pkg_resources), whichever Detectron2 is installed.
BREAK_MODEL_ZOO = textwrap.dedent(
    """
    import sys

    class _NoPkgResources:
        def find_spec(self, name, path=None, target=None):
            if name in ("pkg_resources", "detectron2.model_zoo.model_zoo"):
                raise ModuleNotFoundError("No module named 'pkg_resources'", name="pkg_resources")
            return None

    sys.meta_path.insert(0, _NoPkgResources())
    """
)


def test_detectron2_imports_reads_every_form(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(
        "import detectron2.utils.comm as comm\n"
        "from detectron2 import model_zoo\n"
        "from detectron2.modeling import (\n    build_model,\n    META_ARCH_REGISTRY,\n)\n"
        "def f():\n    from detectron2.modeling import build_backbone\n"
        "from .detectron2 import x\nimport detectron2x\n"
    )
    (tmp_path / "b.py").write_text("from detectron2.config import get_cfg\n")
    assert check_install.detectron2_imports([tmp_path / "pkg", tmp_path / "b.py"]) == {
        "detectron2.utils.comm": set(),
        "detectron2": {"model_zoo"},
        "detectron2.modeling": {"build_model", "META_ARCH_REGISTRY", "build_backbone"},
        "detectron2.config": {"get_cfg"},
    }


def test_the_project_scan_covers_model_zoo_and_the_engine():
    uses = check_install.detectron2_imports(ROOT / d for d in check_install.SCANNED)
    assert "model_zoo" in uses["detectron2"]
    assert {"DefaultTrainer", "launch"} <= uses["detectron2.engine"]
    assert "ROIPooler" in uses["detectron2.modeling.poolers"]


def test_this_environment_passes(capsys):
    assert check_install.main([]) == 0
    assert capsys.readouterr().out.startswith("check_install: ok | torch ")


def test_a_missing_name_is_reported_with_what_to_do():
    problems = check_install.check_detectron2({"detectron2.modeling": {"build_model", "no_such_builder"}})
    assert len(problems) == 1
    assert problems[0].startswith("cannot import no_such_builder from detectron2.modeling (")
    assert "rerun tools/install.sh" in problems[0]


def _run(cmd, env, cwd=ROOT):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def breaker(tmp_path):
    folder = tmp_path / "break"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BREAK_MODEL_ZOO)
    return folder


def test_missing_pkg_resources_fails_the_check_with_the_setuptools_hint(breaker):
    env = dict(os.environ, PYTHONPATH=f"{breaker}{os.pathsep}{ROOT}")
    result = _run([sys.executable, "tools/check_install.py"], env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is not a working soco environment" in result.stderr
    assert "cannot import model_zoo from detectron2 (ModuleNotFoundError: No module named 'pkg_resources')" in result.stderr
    assert "pip install -c constraints.txt setuptools" in result.stderr


def test_install_rerun_repairs_a_broken_environment_instead_of_up_to_date(tmp_path, breaker):
    """install.sh on a venv whose python is this one (pip calls only logged): installs, is then up
    to date, and once model_zoo breaks, says so, repairs, and fails with the check's message."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    pip_log = tmp_path / "pip.log"
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -m ] && [ "$2" = pip ]; then echo "$*" >> "{pip_log}"; exit 0; fi\n'
        f'[ -n "$BREAK" ] && export PYTHONPATH="$BREAK:$PYTHONPATH"\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    # Whichever Detectron2 this python has is kept (a registry build as if this script built it).
    build_script = (ROOT / "tools" / "build_detectron2.py").read_bytes()
    (venv / ".soco-detectron2-registry").write_text(hashlib.sha256(build_script).hexdigest()[:16] + "\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), SOCO_FASHION_MNIST=str(tmp_path), BREAK="")
    env.pop("DETECTRON2_SRC", None)
    install = ["bash", "tools/install.sh", "--venv", str(venv)]

    first = _run(install, env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[install] ok | torch" in first.stdout and "[install] done in" in first.stdout
    assert "already importable: kept" in first.stdout
    assert "-m pip install -q setuptools wheel" in pip_log.read_text().splitlines()
    assert _run(install, env).stdout.strip() == f"[install] up to date ({venv})"

    broken = _run(install, dict(env, BREAK=str(breaker)))
    assert broken.returncode == 1
    assert "up to date" not in broken.stdout
    assert "[install] the existing install is broken; repairing it" in broken.stdout
    assert "No module named 'pkg_resources'" in broken.stdout  # the check's diagnosis, relayed
    assert "does not work (see above); the next run retries" in broken.stderr
    assert not (venv / ".soco-install-stamp").exists()
