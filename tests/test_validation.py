"""Bad configs end in a named error before any model is built (or in a logged, counted note);
one check per path-choosing key, at load; the one-line error of the tools."""

import logging
import os
import subprocess
import sys

import pytest
import torch

from image_level_helpers import tiny_cfg
from soco.config import load_pretrain_config
from soco.config.validation import CHOICES, check_dataset_size
from soco.engine.setup import keep_config_dump_off_console
from soco.utils.errors import ConfigError, ConfigKeyError, InputError, run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "BYOL", "byol_R18_cpu_demo.yaml")


@pytest.mark.parametrize("key", sorted(CHOICES) + ["MODEL.SOCO.VIEWS", "MODEL.SOCO.VARIANT", "MODEL.SOCO.FPN_UPSAMPLE"])
def test_every_path_choosing_key_is_checked_at_load(key):
    opts = ["MODEL.META_ARCHITECTURE", "SoCo"] if key.startswith("MODEL.SOCO") else []
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*'bogus'"):
        load_pretrain_config(DEMO, opts + [key, "bogus"])


def test_augment_on_device_contradictions_are_named_at_load():
    with pytest.raises(ConfigError, match="AUGMENT_IMPL 'reference' runs on the CPU only"):
        load_pretrain_config(DEMO, ["PRETRAIN.AUGMENT_ON", "device", "PRETRAIN.AUGMENT_IMPL", "reference"])
    soco = os.path.join(REPO, "configs", "SoCo", "SoCo_demo_R18_FPN_cpu.yaml")
    with pytest.raises(ConfigError, match="AUGMENT_ON 'device'.*CUTOUT_PROB"):
        load_pretrain_config(soco, ["PRETRAIN.AUGMENT_ON", "device", "MODEL.SOCO.CUTOUT_PROB", "0.5"])
    assert load_pretrain_config(soco, ["MODEL.SOCO.CUTOUT_PROB", "0.5"]).PRETRAIN.AUGMENT_ON == "cpu"


def test_code_default_and_base_config_agree_on_augment_on():
    """configs/Base-Pretrain.yaml repeats the code default ("cpu"); the GPU bases opt in to "device"."""
    from soco.config import get_pretrain_cfg

    base = load_pretrain_config(os.path.join(REPO, "configs", "Base-Pretrain.yaml"))
    assert base.PRETRAIN.AUGMENT_ON == get_pretrain_cfg().PRETRAIN.AUGMENT_ON == "cpu"
    assert load_pretrain_config(os.path.join(REPO, "configs", "SoCo", "SoCo_R50_FPN_100ep.yaml")).PRETRAIN.AUGMENT_ON == "device"


def test_unknown_keys_and_bad_types_are_input_errors():
    with pytest.raises(ConfigKeyError, match="PRETRAIN.EPOCS") as info:
        load_pretrain_config(DEMO, ["PRETRAIN.EPOCS", "3"])
    assert isinstance(info.value, KeyError) and not str(info.value).startswith("'")
    with pytest.raises(ConfigError, match="does not exist"):
        load_pretrain_config("configs/none.yaml")


def test_the_validation_thresholds_are_checked_at_load():
    with pytest.raises(ConfigError, match=r"MODEL.SOCO.MAX_IMAGES_WITHOUT_BOXES is 2.0; give a fraction .* \[0, 1\]"):
        load_pretrain_config(DEMO, ["MODEL.SOCO.MAX_IMAGES_WITHOUT_BOXES", "2.0"])
    with pytest.raises(ConfigError, match="PRETRAIN.MAX_IMAGE_PIXELS is -1"):
        load_pretrain_config(DEMO, ["PRETRAIN.MAX_IMAGE_PIXELS", "-1"])


def test_max_iter_zero_is_refused_at_load():
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER is 0.*-1 for PRETRAIN.EPOCHS"):
        load_pretrain_config(DEMO, ["SOLVER.MAX_ITER", "0"])
    assert load_pretrain_config(DEMO, ["SOLVER.MAX_ITER", "-1"]).SOLVER.MAX_ITER == -1


def test_coke_without_clusters_is_refused_at_load():
    coke = os.path.join(REPO, "configs", "CoKe", "coke_R18_cpu_demo.yaml")
    with pytest.raises(ConfigError, match=r"MODEL.COKE.NUM_CLUSTERS is \[\]"):
        load_pretrain_config(coke, ["MODEL.COKE.NUM_CLUSTERS", "[]"])
    with pytest.raises(ConfigError, match="NUM_CLUSTERS"):
        load_pretrain_config(coke, ["MODEL.COKE.NUM_CLUSTERS", "[10, 0]"])


def test_smog_groups_more_than_the_features_that_regroup_them():
    smog = os.path.join(REPO, "configs", "SMoG", "smog_R18_cpu_demo.yaml")
    with pytest.raises(ConfigError, match="NUM_GROUPS=700 is more than the 640 features.*RESET_PERIOD 10"):
        load_pretrain_config(smog, ["MODEL.SMOG.NUM_GROUPS", "700", "MODEL.SMOG.RESET_PERIOD", "10"])


@pytest.mark.parametrize("arch, key, value, match", [
    ("CoKe", "MODEL.COKE.NUM_CLUSTERS", [4, 9], r"NUM_CLUSTERS \[4, 9\] asks for more clusters than the 8"),
    ("SMoG", "MODEL.SMOG.NUM_GROUPS", 9, "NUM_GROUPS=9 is more than the 8 training images"),
])
def test_more_clusters_or_groups_than_images_is_refused(arch, key, value, match):
    cfg = tiny_cfg(arch)
    cfg.merge_from_list([key, value])
    with pytest.raises(ConfigError, match=match):
        check_dataset_size(cfg, 8)
    check_dataset_size(cfg, 9)


def test_a_batch_larger_than_the_dataset_is_logged(caplog):
    cfg = tiny_cfg("BYOL", batch=16)
    with caplog.at_level(logging.WARNING, logger="soco.config.validation"):
        check_dataset_size(cfg, 8)
    assert "SOLVER.IMS_PER_BATCH=16 is more than the 8 training images" in caplog.text
    assert "2.0 times" in caplog.text


def test_the_engine_checks_the_dataset_size_before_building_the_model(tmp_path, monkeypatch):
    """CoKe with more clusters than images stops in build_pretrain_trainer before the model exists."""
    from PIL import Image

    import soco.engine.pretrain as pretrain

    for i in range(4):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    cfg = tiny_cfg("CoKe", batch=2)
    cfg.merge_from_list(["PRETRAIN.IMAGE_ROOT", str(tmp_path), "MODEL.COKE.NUM_CLUSTERS", [2, 5]])
    monkeypatch.setattr(pretrain, "build_pretrain_model", lambda *a: pytest.fail("model built"))
    with pytest.raises(ConfigError, match="than the 4 training images"):
        pretrain.build_pretrain_trainer(cfg)


def test_clsa_enqueue_is_exact_for_any_queue_and_batch():
    """A queue smaller than, or not a multiple of, the batch: the queue and its pointer end as if
    the keys were written one at a time (the keys were cut, the row indices were not)."""
    from detectron2.modeling import build_model

    for queue_size, batch in ((8, 16), (6, 4), (5, 13)):
        cfg = tiny_cfg("CLSA", batch=batch)
        cfg.MODEL.CLSA.QUEUE_SIZE = queue_size
        model = build_model(cfg)
        expected = model.queue.clone()
        ptr = 0
        for step in range(3):
            keys = torch.randn(batch, expected.shape[1])
            model.enqueue(keys)
            for k in keys:
                expected[ptr] = k
                ptr = (ptr + 1) % queue_size
        assert torch.equal(model.queue, expected) and int(model.queue_ptr) == ptr


def test_run_tool_prints_one_line_and_exits_2(capsys, monkeypatch):
    def bad():
        raise ConfigError("SOLVER.MAX_ITER is 0:\n  set -1")

    monkeypatch.delenv("SOCO_DEBUG", raising=False)
    assert run_tool(bad) == 2
    assert capsys.readouterr().err == "error: SOLVER.MAX_ITER is 0: set -1\n"
    with pytest.raises(ConfigError):
        run_tool(bad, debug=True)
    monkeypatch.setenv("SOCO_DEBUG", "1")
    with pytest.raises(ConfigError):
        run_tool(bad)
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_tool(lambda: 1 / 0)
    assert run_tool(lambda: None) == 0 and issubclass(ConfigError, InputError)


def test_the_config_dump_stays_off_the_console(tmp_path):
    from detectron2.utils.logger import setup_logger

    logger = setup_logger(str(tmp_path), name="soco_test_dump")
    keep_config_dump_off_console("soco_test_dump")
    console = [h for h in logger.handlers if h.stream is sys.stdout][0]
    dump = logging.LogRecord("soco_test_dump", logging.INFO, "", 0, "Running with full config:\nA: 1", None, None)
    note = logging.LogRecord("soco_test_dump", logging.INFO, "", 0, "Full config saved to x", None, None)
    assert not console.filter(dump) and console.filter(note)
    file_handler = [h for h in logger.handlers if h.stream is not sys.stdout][0]
    assert file_handler.filter(dump)


def test_pretrain_net_bad_config_is_one_line_exit_2(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SOCO_DEBUG", None)
    cmd = [sys.executable, os.path.join(REPO, "tools", "pretrain_net.py"), "--config-file", DEMO,
           "SOLVER.MAX_ITER", "0", "OUTPUT_DIR", str(tmp_path / "out")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr
    lines = [l for l in out.stderr.splitlines() if "Warning" not in l and "warnings.warn" not in l]
    assert lines == ["error: SOLVER.MAX_ITER is 0: set a positive number of iterations, or -1 for PRETRAIN.EPOCHS "
                     "over the dataset"], out.stderr
    assert "Traceback" in subprocess.run(cmd[:2] + ["--debug"] + cmd[2:], capture_output=True, text=True, env=env).stderr


def test_an_input_error_inside_two_processes_is_one_line_exit_2(tmp_path):
    """Found by the workers (CoKe's clusters against the images they list), not at load: rank 0
    prints one line, every worker exits 2, and so does the launcher; no traceback."""
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    env.pop("SOCO_DEBUG", None)
    cmd = [sys.executable, os.path.join(REPO, "tools", "pretrain_net.py"), "--num-gpus", "2", "--config-file",
           os.path.join(REPO, "configs", "CoKe", "coke_R18_cpu_demo.yaml"), "DATASETS.TRAIN", "()",
           "PRETRAIN.IMAGE_ROOT", str(tmp_path), "PRETRAIN.IMAGE_LIST", "", "MODEL.COKE.NUM_CLUSTERS", "[2, 5]",
           "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
           "OUTPUT_DIR", str(tmp_path / "out")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 2, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "than the 4 training images" in errors[0], out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]


def test_a_pixel_bomb_in_training_is_skipped_with_its_reason_and_never_read_again(tmp_path, caplog):
    """A 30000 x 30000 JPEG among the training images: refused from its header with both sizes
    in the log, remembered, so later epochs do not open it again."""
    from PIL import Image

    from soco.data.build import SeededMapDataset
    from soco.data.image_io import TooManyPixelsError
    from soco.data.method_data import build_mapper
    from test_image_io import jpeg_claiming_size

    for i in range(3):
        Image.new("RGB", (40, 32), (i * 60, 90, 30)).save(tmp_path / f"{i}.png")
    jpeg_claiming_size(tmp_path / "3.jpg", 30000, 30000)
    dicts = [{"file_name": str(tmp_path / n), "image_id": n} for n in ("0.png", "1.png", "2.png", "3.jpg")]
    cfg = tiny_cfg("BYOL")
    cfg.MODEL.BYOL.CROP_SIZE = 16
    mapper = build_mapper(cfg)
    calls = []
    dataset = SeededMapDataset(dicts, lambda d: calls.append(d["image_id"]) or mapper(d), seed=0)
    with caplog.at_level(logging.WARNING, logger="soco.data.build"):
        for epoch in range(3):
            ids = [dataset[(epoch * 4 + i, i)]["image_id"] for i in range(4)]
            assert ids == ["0.png", "1.png", "2.png", "0.png"]
    assert calls.count("3.jpg") == 1 and dataset.skipped == {3}
    assert "skipping image " + str(tmp_path / "3.jpg") + ": 30000 x 30000 = 900000000 pixels > limit" in caplog.text
    cfg.PRETRAIN.MAX_IMAGE_PIXELS = 1000
    with pytest.raises(TooManyPixelsError, match="40 x 32 = 1280 pixels > limit 1000"):
        build_mapper(cfg)(dicts[0])


# ------------------------------------------------------------------------------------- weights
def test_finetune_weights_of_another_depth_or_not_weights_at_all_are_named(tmp_path):
    from soco.checkpoint import ConversionError, convert
    from soco.config.finetune import build_finetune_config
    from test_finetune import load_tool, write_demo_soco_checkpoint

    finetune = load_tool("finetune_net")
    pth, pkl = str(tmp_path / "soco.pth"), str(tmp_path / "soco_d2.pkl")
    write_demo_soco_checkpoint(pth)  # R18
    convert(pth, pkl, verify=False)
    r50 = os.path.join(REPO, "configs", "finetune", "mask_rcnn_R_50_FPN_1x_soco.yaml")
    r18 = os.path.join(REPO, "configs", "finetune", "faster_rcnn_R18_FPN_demo_cpu.yaml")

    def check(config, weights):
        finetune.check_weights_file(build_finetune_config(config, ["MODEL.WEIGHTS", weights]), resume=False)

    check(r18, pkl)
    with pytest.raises(ConversionError, match=r"soco_d2.pkl: R18 weights \(RES2_OUT_CHANNELS 64\), R50 config "
                                              r"\(MODEL.RESNETS.DEPTH 50, RES2_OUT_CHANNELS 256\)\. Set MODEL.RESNETS"):
        check(r50, pkl)
    with pytest.raises(ConversionError, match="soco.pth: is a pretraining checkpoint.*convert_to_d2.py"):
        check(r18, pth)
    (tmp_path / "props.pkl").write_bytes(__import__("pickle").dumps({"ids": ["a"], "boxes": [[[0, 0, 1, 1]]]}))
    (tmp_path / "list.pkl").write_bytes(__import__("pickle").dumps([1, 2]))
    (tmp_path / "text.pkl").write_text("not weights\n")
    for name, match in (("props.pkl", "is a proposal file"), ("list.pkl", "holds a list of 2 items, not weights"),
                        ("text.pkl", "not a pickle of weights")):
        with pytest.raises(ConversionError, match=f"{name}: {match}"):
            check(r18, str(tmp_path / name))


def test_eval_representation_names_method_and_depth_mismatches(tmp_path):
    from soco.checkpoint import ConversionError, PretrainCheckpoint
    from soco.evaluation.representation import check_fits
    from soco.modeling.meta_arch import build_pretrain_model

    byol = tiny_cfg("BYOL")
    ckpt = PretrainCheckpoint("byol.pth", build_pretrain_model(byol, 8).state_dict(), byol, 0)
    check_fits(ckpt, byol)
    with pytest.raises(ConversionError, match="--weights byol.pth: BYOL weights, CoKe config"):
        check_fits(ckpt, tiny_cfg("CoKe"))
    r50 = tiny_cfg("BYOL")
    r50.MODEL.RESNETS.DEPTH, r50.MODEL.RESNETS.RES2_OUT_CHANNELS = 50, 256
    with pytest.raises(ConversionError, match=r"--weights byol.pth: R18 weights .* R50 config"):
        check_fits(ckpt, r50)


def test_every_path_quoted_in_the_tools_help_exists():
    """Files named in a tool's --help (its docstring and argument help, i.e. its source) exist."""
    import glob
    import re

    pattern = re.compile(r"\b(?:configs|tools|docs|benchmarks|soco|proposals)/[\w./-]+\.(?:yaml|py|md)\b")
    quoted = {(os.path.basename(tool), path) for tool in glob.glob(os.path.join(REPO, "tools", "*.py"))
              for path in pattern.findall(open(tool).read())}
    assert len(quoted) > 10
    missing = sorted((tool, path) for tool, path in quoted if not os.path.exists(os.path.join(REPO, path)))
    assert not missing, missing


# -------------------------------------------------------------------------------------- shards
def test_gen_proposals_bad_shard_is_one_line(tmp_path, capsys):
    from conftest import load_tool

    tool = load_tool("gen_proposals")
    assert tool.main(["--image-root", str(tmp_path), "--output", str(tmp_path / "p.pkl"), "--shard", "-1/2"]) == 2
    assert capsys.readouterr().err == "error: --shard -1/2: the shard index must satisfy 0 <= i < n\n"
