"""The package's structure: data flows tool -> data -> engine -> modeling (no imports between
soco.data and soco.modeling), no import cycles between modules (imports inside functions
included), Evaluation and Modeling import nothing from Solver or Engine, the engine gets each
method's data from soco.data's registry, models are built from explicit arguments (no cfg kept),
the proposal reader stays light."""

import ast
import os
import subprocess
import sys
from collections import defaultdict

import pytest
import torch

from image_level_helpers import build_method, tiny_cfg
from soco.data.method_data import build_mapper, method_data, prepare_dataset_dicts, register_method_data
from soco.modeling.ema import MomentumSchedule, cosine_tau

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "soco")


def _soco_imports(folder):
    """(file, imported soco sub-package) for every import in ``soco/<folder>``, relative ones resolved."""
    found = []
    for root, _, files in os.walk(os.path.join(PACKAGE, folder)):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            package = os.path.relpath(root, os.path.dirname(PACKAGE)).split(os.sep)
            for node in ast.walk(ast.parse(open(path).read(), path)):
                if isinstance(node, ast.ImportFrom):
                    base = package[: len(package) - node.level + 1] if node.level else []
                    module = ".".join(base + ([node.module] if node.module else []))
                    targets = [module] + [f"{module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                else:
                    continue
                found += [(path, t.split(".")[1]) for t in targets if t.startswith("soco.") and "." in t]
    return found


@pytest.mark.parametrize("folder, forbidden", [("modeling", "data"), ("data", "modeling")])
def test_data_and_modeling_do_not_import_each_other(folder, forbidden):
    offenders = sorted({path for path, sub in _soco_imports(folder) if sub == forbidden})
    assert not offenders, f"soco/{folder} imports soco.{forbidden}: {offenders}"


def test_the_import_scan_sees_relative_imports():
    """The check above would catch a relative import: the engine's own ones are found."""
    subs = {sub for _, sub in _soco_imports("engine")}
    assert {"data", "modeling", "solver"} <= subs


def module_graph(package_dir):
    """{module: {(imported module, line, inside a function)}} over every ``.py`` file of a package
    folder, relative imports resolved, ``from pkg import name`` pointing at ``pkg.name`` when that
    is a module; imports inside functions and methods count (they hide cycles)."""
    root = os.path.dirname(package_dir)
    modules = {}
    for folder, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def known(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = defaultdict(set)
    for module, path in modules.items():
        package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
        tree = ast.parse(open(path).read(), path)
        nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                source = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in filter(None, map(known, targets)):
                if target != module:
                    graph[module].add((target, node.lineno, id(node) in nested))
    return graph


def import_cycles(graph):
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _, _ in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in list(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    graph = module_graph(PACKAGE)
    assert not import_cycles(graph), f"import cycles (imports inside functions included): {import_cycles(graph)}"


@pytest.mark.parametrize("room", ["evaluation", "modeling"])
def test_evaluation_and_modeling_do_not_import_solver_or_engine(room):
    offenders = sorted(
        f"{module}:{line} -> {target}"
        for module, edges in module_graph(PACKAGE).items() if module.startswith(f"soco.{room}")
        for target, line, _ in edges if target.split(".")[:2] in (["soco", "solver"], ["soco", "engine"])
    )
    assert not offenders, f"soco/{room} imports Solver or Engine: {offenders}"


def test_the_graph_finds_cycles_hidden_in_functions(tmp_path):
    """A cycle closed only by an import inside a function, written relatively, is found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text("from .sub.b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n    return a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = module_graph(str(pkg))
    assert ("pkg.a", 2, True) in graph["pkg.sub.b"] and ("pkg.sub.b", 1, False) in graph["pkg.a"]
    assert import_cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_reading_proposals_does_not_import_the_generator():
    """Training reads proposal files through soco.data.proposals; the generator (soco.proposals:
    OpenCV, multiprocessing, tqdm) is a room of its own that soco/data never imports."""
    code = (
        "import sys; import soco.data.proposals as p; p.load_proposals; "
        "print(sorted(m for m in ('cv2', 'tqdm', 'multiprocessing', 'soco.proposals') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    offenders = sorted(f"{m} -> {target}" for m, edges in module_graph(PACKAGE).items() if m.startswith("soco.data")
                       for target, _, _ in edges if target.startswith("soco.proposals"))
    assert not offenders, f"soco/data imports the proposal generator: {offenders}"


def test_method_data_registry():
    cfg = tiny_cfg("CoKe")
    dicts = [{"file_name": "a.png", "image_id": "a"}, {"file_name": "b.png", "image_id": "b"}]
    assert [d["instance_index"] for d in prepare_dataset_dicts(cfg, dicts)] == [0, 1]
    assert "instance_index" not in dicts[0]  # copies, the input is left alone
    cfg.MODEL.META_ARCHITECTURE = "CLSA"
    assert prepare_dataset_dicts(cfg, dicts) is dicts
    assert set(build_mapper(cfg).view_sets) == {"views", "strong_views"}
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    with pytest.raises(KeyError, match="MODEL.META_ARCHITECTURE='GeneralizedRCNN' has no data registered"):
        method_data(cfg)
    with pytest.raises(KeyError, match="already registered"):
        register_method_data("SoCo", lambda cfg: None)


def test_momentum_schedule():
    cosine = MomentumSchedule(0.99, 1.0)
    assert [cosine(k, 100) for k in (0, 37, 100)] == [cosine_tau(k, 100, 0.99, 1.0) for k in (0, 37, 100)]
    constant = MomentumSchedule(0.999, 1.0, constant=True)
    assert constant(0, 100) == constant(99, 100) == 0.999  # MOMENTUM_END is not read
    cfg = tiny_cfg("CLSA")
    cfg.MODEL.EMA.MOMENTUM, cfg.MODEL.EMA.MOMENTUM_END = 0.9, 0.95
    assert MomentumSchedule.from_config(cfg) == MomentumSchedule(0.9, 0.95, False)


@pytest.mark.parametrize("arch", ["BYOL", "CoKe", "CLSA", "SMoG"])
def test_models_are_built_from_explicit_arguments(arch):
    cfg = tiny_cfg(arch, num_images=24)
    model = build_method(cfg)
    assert not hasattr(model, "cfg")
    cfg.MODEL.EMA.MOMENTUM, cfg.MODEL.EMA.MOMENTUM_END = 0.5, 0.6  # read once, at construction
    assert model.target_momentum(0, 10) == pytest.approx(0.99)
    if arch == "CoKe":
        assert model.labels.shape[1] == 24 and model.iters_per_epoch == 24 // cfg.SOLVER.IMS_PER_BATCH


def test_coke_cluster_assignments_pick_the_closest_centre():
    """Centres set to the normalised projections of four images: each image is assigned its own."""
    cfg = tiny_cfg("CoKe", num_images=8)
    cfg.MODEL.COKE.NUM_CLUSTERS = [4, 6]
    model = build_method(cfg).eval()
    images = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = torch.nn.functional.normalize(model.project(model.normalize(images)), dim=1)
        model.loss_centers_0.copy_(z)
        model.loss_centers_1[:4].copy_(z.flip(0))
        model.loss_centers_1[4:].copy_(-z[:2])
    first, second = model.cluster_assignments(images)
    assert first.tolist() == [0, 1, 2, 3] and second.tolist() == [3, 2, 1, 0]


def test_a_new_method_module_is_found_without_editing_a_list(tmp_path, monkeypatch):
    """What makes a new method's config and model modules take part: import_submodules finds
    every module of a package by prefix, in name order, and add_pretrain_config calls the
    add_<name>_config of each soco/config/method_<name>.py (naming the module that lacks it)."""
    from soco.config import defaults
    from soco.utils.modules import import_submodules

    pkg = tmp_path / "toypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "method_b.py").write_text("def add_b_config(cfg):\n    cfg.B = 2\n")
    (pkg / "method_a.py").write_text("def add_a_config(cfg):\n    cfg.A = 1\n")
    (pkg / "helpers.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert [m.__name__ for m in import_submodules("toypkg", prefix="method_")] == ["toypkg.method_a", "toypkg.method_b"]
    assert [m.__name__ for m in import_submodules("toypkg", exclude=("helpers",))] == ["toypkg.method_a", "toypkg.method_b"]
    monkeypatch.setattr(defaults, "__package__", "toypkg")
    assert [f.__name__ for f in defaults.method_config_adders()] == ["add_a_config", "add_b_config"]
    (pkg / "method_c.py").write_text("def add_config(cfg):\n    pass\n")
    with pytest.raises(AttributeError, match=r"method_c.py: .* must define add_c_config\(cfg\)"):
        defaults.method_config_adders()


def test_every_method_is_registered_everywhere():
    """Each method found in soco/modeling/meta_arch has its config keys and its data."""
    from detectron2.modeling import META_ARCH_REGISTRY

    from soco.config import get_pretrain_cfg
    from soco.modeling.meta_arch import METHOD_MODULES, PretrainMetaArch

    methods = sorted(n for n, c in META_ARCH_REGISTRY._obj_map.items() if isinstance(c, type) and issubclass(c, PretrainMetaArch))
    assert methods == ["BYOL", "CLSA", "CoKe", "SMoG", "SoCo"] and len(METHOD_MODULES) == 5
    cfg = get_pretrain_cfg()
    assert {"SOCO", "COKE", "CLSA", "SMOG", "BYOL"} <= set(cfg.MODEL)
    for name in methods:
        cfg.MODEL.META_ARCHITECTURE = name
        assert method_data(cfg).build_mapper is not None


def test_photometric_kernels_are_leaves():
    """The parameter layout imports nothing from soco, its kernels only the layout; the methods'
    recipes (byol_spec, mocov2_spec) sit with their methods, above them."""
    graph = module_graph(PACKAGE)
    base = "soco.data.transforms."
    assert not graph.get(base + "photometric")
    for kernel in ("photometric_cpu", "photometric_batch", "photometric_reference"):
        assert {target for target, _, _ in graph[base + kernel]} == {base + "photometric"}, kernel
    assert base + "photometric" in {target for target, _, _ in graph[base + "byol"]}
