"""``import soco.d2_plugin`` is all stock Detectron2 scripts need: the demo datasets and the C4
fine-tune head are registered, and Detectron2's own tools/train_net.py trains and evaluates a
C4 detector on the demo set with it (when Detectron2 was installed from a checkout)."""

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env():
    return dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def test_one_import_registers_datasets_and_head_in_a_fresh_process():
    code = (
        "from detectron2.data import DatasetCatalog, MetadataCatalog\n"
        "from detectron2.modeling import ROI_HEADS_REGISTRY\n"
        "names = ('soco_demo_det_train', 'soco_demo_det_val')\n"
        "assert not set(names) & set(DatasetCatalog.list())\n"
        "import soco.d2_plugin\n"
        "assert set(names) <= set(DatasetCatalog.list())\n"
        "assert {MetadataCatalog.get(n).evaluator_type for n in names} == {'coco'}\n"
        "assert ROI_HEADS_REGISTRY.get('Res5ROIHeadsExtraNorm') is soco.d2_plugin.Res5ROIHeadsExtraNorm\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def detectron2_checkout():
    """The Detectron2 checkout the installed Detectron2 was built from (``SOCO_D2_SRC``, else
    pip's record of a local-folder install), or None (the registry build, whose source is gone)."""
    if os.environ.get("SOCO_D2_SRC"):
        return Path(os.environ["SOCO_D2_SRC"])
    record = metadata.distribution("detectron2").read_text("direct_url.json")
    url = json.loads(record)["url"] if record else ""
    path = Path(unquote(urlparse(url).path)) if url.startswith("file://") else None
    return path if path and (path / "tools" / "train_net.py").is_file() else None


@pytest.mark.skipif(detectron2_checkout() is None, reason="Detectron2 was not installed from a checkout with tools/train_net.py")
def test_stock_train_net_with_the_plugin_line_trains_and_evaluates_c4_on_the_demo_set(tmp_path):
    script = tmp_path / "train_net.py"
    stock = (detectron2_checkout() / "tools" / "train_net.py").read_text()
    # The plugin line, then (test sizing only) the validation set's first 4 images as "val4":
    # COCOEvaluator scores just the images it saw.
    script.write_text(
        "import soco.d2_plugin  # noqa: F401\n"
        "from detectron2.data import DatasetCatalog, MetadataCatalog\n"
        "DatasetCatalog.register('val4', lambda: DatasetCatalog.get('soco_demo_det_val')[:4])\n"
        "MetadataCatalog.get('val4').set(**{k: v for k, v in MetadataCatalog.get('soco_demo_det_val').as_dict().items() if k != 'name'})\n"
        + stock
    )
    out = tmp_path / "out"
    small = {  # R18-C4 at 96 px, two iterations, few proposals: seconds on a CPU
        "MODEL.DEVICE": "cpu", "MODEL.WEIGHTS": "", "MODEL.RESNETS.DEPTH": "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS": "64", "MODEL.RESNETS.NORM": "BN", "MODEL.ROI_HEADS.NUM_CLASSES": "10",
        "DATASETS.TRAIN": "('soco_demo_det_train',)", "DATASETS.TEST": "('val4',)",
        "INPUT.MIN_SIZE_TRAIN": "(96,)", "INPUT.MAX_SIZE_TRAIN": "128", "INPUT.MIN_SIZE_TEST": "96",
        "INPUT.MAX_SIZE_TEST": "128", "MODEL.RPN.POST_NMS_TOPK_TRAIN": "32", "MODEL.RPN.POST_NMS_TOPK_TEST": "8",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "16", "SOLVER.IMS_PER_BATCH": "2", "SOLVER.MAX_ITER": "2",
        "SOLVER.WARMUP_ITERS": "1", "SOLVER.STEPS": "()", "TEST.PRECISE_BN.ENABLED": "False",
        "DATALOADER.NUM_WORKERS": "0", "OUTPUT_DIR": str(out),
    }
    args = [sys.executable, str(script), "--config-file", str(ROOT / "configs/finetune/faster_rcnn_R_50_C4_voc0712_soco.yaml")]
    args += [item for pair in small.items() for item in pair]
    result = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1200)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "Res5ROIHeadsExtraNorm" in log and "(norm): BatchNorm2d(512" in log  # the extra norm after res5
    assert "Start inference on 4 batches" in log and "Evaluation results for bbox" in log
    assert (out / "model_final.pth").is_file()
