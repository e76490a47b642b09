"""docs/ARCHITECTURE.md's worked example holds: a method added in the four places it names (the
code blocks marked ``# file: PATH`` or ``# append: PATH``), in a copy of the package, is loaded
from its config, built by the engine, mapped by its data and trained for a step, with no other
file touched."""

import os
import re
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = re.compile(r"^```\w*\n# (file|append): (\S+)\n(.*?)^```", re.M | re.S)

TRAIN_A_STEP = """
import torch
from soco.config import load_pretrain_config
from soco.data.method_data import build_mapper
from soco.engine import build_training_model, training_step
cfg = load_pretrain_config("configs/SimSiam/simsiam_R50_100ep.yaml", [
    "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.PROJECTOR.HIDDEN_DIM", "32", "MODEL.PROJECTOR.OUT_DIM", "16", "MODEL.PREDICTOR.HIDDEN_DIM", "8",
    "MODEL.SIMSIAM.CROP_SIZE", "32", "SOLVER.IMS_PER_BATCH", "4"])
model = build_training_model(cfg, 8)
mapper = build_mapper(cfg)
images = torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
batch = [mapper.map_image(images[i], str(i), i) for i in range(4)]
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
metrics, _ = training_step(model, lambda: batch, optimizer, 0, 10)
assert not hasattr(model, "target") or not model.target, "SimSiam has no target network"
print(type(model).__name__, sorted(metrics), float(metrics["loss_simsiam"]))
"""


def test_the_worked_example_adds_a_method_in_four_places(tmp_path):
    with open(os.path.join(REPO, "docs", "ARCHITECTURE.md"), encoding="utf-8") as f:
        blocks = BLOCK.findall(f.read())
    assert len(blocks) == 4 and {p.split("/")[0] for _, p, _ in blocks} == {"soco", "configs"}
    shutil.copytree(os.path.join(REPO, "soco"), tmp_path / "soco", ignore=shutil.ignore_patterns("__pycache__", "configs"))
    shutil.copytree(os.path.join(REPO, "configs"), tmp_path / "configs")
    for kind, path, code in blocks:
        target = tmp_path / path
        assert target.exists() == (kind == "append"), path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a" if kind == "append" else "w") as f:
            f.write(("\n\n" if kind == "append" else "") + code)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", TRAIN_A_STEP], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, _, loss = proc.stdout.strip().splitlines()[-1].partition(" ")
    assert name == "SimSiam" and "'loss_simsiam'" in loss
