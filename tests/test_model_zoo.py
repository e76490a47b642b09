"""soco.model_zoo finds the project's configs by name, from the package's copy when it has one
(an installed wheel) and from the checkout's configs/ otherwise; setup.py ships that copy."""

import os
import shutil
import subprocess
import sys

import pytest

from soco import model_zoo
from soco.config import load_pretrain_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checkout_configs():
    root = os.path.join(REPO, "configs")
    return sorted(
        os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/")
        for folder, _, files in os.walk(root) for f in files if f.endswith(".yaml")
    )


def test_every_config_is_found_by_its_name():
    names = _checkout_configs()
    assert model_zoo.list_configs() == names and "SoCo/official/SoCo_R50_FPN_100ep.yaml" in names
    for name in names:
        with open(model_zoo.get_config_file(name), "rb") as found, open(os.path.join(REPO, "configs", name), "rb") as f:
            assert found.read() == f.read()


def test_a_found_config_loads_with_its_bases():
    cfg = load_pretrain_config(model_zoo.get_config_file("SoCo/SoCo_R50_FPN_100ep.yaml"))
    assert cfg.MODEL.META_ARCHITECTURE == "SoCo" and cfg.PRETRAIN.EPOCHS == 100


@pytest.mark.parametrize("name", ["SoCo/nothing.yaml", "../setup.py", "/etc/hostname", "SoCo"])
def test_unknown_names_are_refused_with_the_name(name):
    with pytest.raises(FileNotFoundError, match="is not one of soco's configs"):
        model_zoo.get_config_file(name)


def test_the_packaged_copy_comes_first(tmp_path, monkeypatch):
    shutil.copytree(os.path.join(REPO, "configs"), tmp_path / "configs")
    (tmp_path / "configs" / "BYOL" / "only_packaged.yaml").write_text("_BASE_: byol_R50_300ep.yaml\n")
    monkeypatch.setattr(model_zoo, "_PACKAGED", str(tmp_path / "configs"))
    assert model_zoo.get_config_file("BYOL/only_packaged.yaml") == str(tmp_path / "configs" / "BYOL" / "only_packaged.yaml")
    monkeypatch.setattr(model_zoo, "_CHECKOUT", str(tmp_path / "none"))
    monkeypatch.setattr(model_zoo, "_PACKAGED", str(tmp_path / "none either"))
    with pytest.raises(FileNotFoundError, match="reinstall soco"):
        model_zoo.get_config_file("BYOL/byol_R50_300ep.yaml")


def test_setup_ships_the_configs_inside_the_package(tmp_path):
    """setup.py links configs/ into soco/model_zoo/ (replacing a stale copy) and lists every YAML
    as package data of soco.model_zoo."""
    shutil.copy(os.path.join(REPO, "setup.py"), tmp_path)
    shutil.copytree(os.path.join(REPO, "configs"), tmp_path / "configs")
    stale = tmp_path / "soco" / "model_zoo" / "configs"
    stale.mkdir(parents=True)
    (stale / "old.yaml").write_text("")
    code = (
        "import runpy, setuptools; seen = {}; setuptools.setup = lambda **kw: seen.update(kw); "
        "runpy.run_path('setup.py'); print(len(seen['package_data']['soco.model_zoo']))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert int(out) == len(_checkout_configs())
    assert os.path.islink(stale) and os.path.realpath(stale) == os.path.realpath(tmp_path / "configs")
