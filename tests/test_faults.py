"""The faults a real run meets: nothing lost, nothing hung, every error names its file.

One test per case: a bad image, a dead proposal worker, two runs in one folder, weights of the
wrong layout, proposals for other image sizes, a symlink loop, converter output = input, a full
disk, metrics.json after resume, damaged files, an all-bad image folder, SIGTERM, and embedded
data caches of two option sets.
"""
import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from detectron2.engine import HookBase
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.env import seed_all_rng
from PIL import Image

import soco.modeling.meta_arch  # noqa: F401  (registers the methods)
from soco.data.image_folder import list_images
from soco.data.proposals import load_proposals, read_proposal_file
from soco.proposals import generate, merge, runner
from soco.data.soco_mapper import attach_proposals
from soco.engine import PretrainCheckpointer, run_pretraining
from soco.engine.pretrain import build_pretrain_trainer
from soco.engine.run_guard import OutputDirInUseError, claim_output_dir, truncate_metrics
from soco.utils.files import DiskFullError, atomic_write
from test_engine import tiny_byol_cfg
from test_proposals_runner import _photos
from test_soco_model import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(tool, *args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), *args],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def smooth_images(tmp_path_factory):
    """8 small smooth images (test_engine's) for the BYOL runs."""
    from test_engine import write_smooth_images

    root = tmp_path_factory.mktemp("images")
    write_smooth_images(root)
    return str(root)


# ------------------------------------------------------------------ 1. a bad image
def test_unreadable_image_is_skipped_by_training(tmp_path, caplog):
    root = str(tmp_path / "images")
    _photos(root, 3)
    open(os.path.join(root, "zero.jpg"), "wb").close()
    props = str(tmp_path / "props.pkl")
    summary = generate(root, props, num_workers=0, progress=False)
    assert summary["failures"] == 1
    assert list(read_proposal_file(props).failed) == ["zero.jpg"]

    cfg = tiny_cfg(PROPOSALS=props)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "PRETRAIN.IMAGE_ROOT", root, "DATASETS.TRAIN", "()",
                         "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 1, "DATALOADER.NUM_WORKERS", 0,
                         "OUTPUT_DIR", str(tmp_path / "out"), "SEED", 0])
    cfg.freeze()
    with caplog.at_level("WARNING"):
        run_pretraining(cfg)
    assert os.path.exists(tmp_path / "out" / "model_final.pth")
    skips = [r.getMessage() for r in caplog.records if "skipping 1 of the 4 images" in r.getMessage()]
    assert len(skips) == 1 and "zero.jpg" in skips[0]


def test_images_missing_from_the_proposal_file_give_the_command_to_fix_it(tmp_path):
    props = str(tmp_path / "props.pkl")
    from soco.data.proposals import save_proposals

    save_proposals(props, ["a.jpg"], [np.zeros((1, 4), np.float32)])
    dicts = [{"file_name": "/data/imgs/a.jpg", "image_id": "a.jpg"}, {"file_name": "/data/imgs/b.jpg", "image_id": "b.jpg"}]
    with pytest.raises(ValueError, match=r"lacks 1 of the 2 .*gen_proposals.py --image-root /data/imgs --output"):
        attach_proposals(dicts, props)


# ------------------------------------------------------------------ 2. a dead or hung worker
# Run in a fresh interpreter: the workers are forked there (so they inherit the patched
# function; spawn would re-import the module), which is only safe in a process that has not
# started torch's or OpenCV's threads, as this test process has.
PATCHED_WORKER_SCRIPT = """
import os, signal, sys, time
from soco.proposals import generate, runner
real = runner.propose_file_with_size
def patched(path, *args, **kwargs):
    if os.path.basename(path) == sys.argv[3]:
        {action}
    return real(path, *args, **kwargs)
runner.START_METHOD = "fork"
runner.propose_file_with_size = patched
summary = generate(sys.argv[1], sys.argv[2], num_workers=2, chunk_size=3, progress=False, image_timeout={timeout})
print(summary["images"], summary["failures"], summary["images_this_run"])
"""


def _generate_with_a_bad_worker(tmp_path, name: str, action: str, timeout: float = 600):
    """6 photos plus ``name``, on which a worker runs ``action``; returns a function that runs the
    generation in a fresh interpreter (2 workers, ``timeout`` s per image at most) and its output path."""
    root = str(tmp_path / "images")
    if not os.path.isdir(root):
        _photos(root, 6)
        shutil.copy(os.path.join(root, "class0", "img000.jpg"), os.path.join(root, name))
    output = str(tmp_path / "p.pkl")
    script = PATCHED_WORKER_SCRIPT.format(action=action, timeout=timeout)

    def run():
        result = subprocess.run([sys.executable, "-c", script, root, output, name], capture_output=True,
                                text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    return run, output


def test_killed_worker_is_named_and_the_run_finishes(tmp_path):
    # SIGKILL: as the out-of-memory killer would.
    run, output = _generate_with_a_bad_worker(tmp_path, "boom.jpg", "os.kill(os.getpid(), signal.SIGKILL)")
    first = run()
    assert first.stdout.split() == ["6", "1", "7"]
    assert "boom.jpg: worker died" in first.stderr
    with open(runner.output_paths(output)["failures"]) as f:
        assert json.load(f) == [{"id": "boom.jpg", "reason": runner.WORKER_DIED}]
    assert "boom.jpg" in read_proposal_file(output).failed
    # A rerun finds every chunk done: it neither hangs nor meets the image again.
    assert run().stdout.split() == ["6", "1", "0"]


def test_hung_worker_times_out_and_the_run_finishes(tmp_path):
    # An hour's sleep: as a decoder caught in a loop would.
    run, output = _generate_with_a_bad_worker(tmp_path, "stuck.jpg", "time.sleep(3600)", timeout=4)
    start = time.monotonic()
    result = run()
    assert time.monotonic() - start < 60  # two 4 s limits (in the pool, then alone), not an hour
    assert result.stdout.split() == ["6", "1", "7"]
    assert "stuck.jpg: in flight for over 4 s" in result.stderr and "timed out" in result.stderr
    with open(runner.output_paths(output)["failures"]) as f:
        failures = json.load(f)
    assert [f["id"] for f in failures] == ["stuck.jpg"] and failures[0]["reason"].startswith("timed out")
    assert "stuck.jpg" in read_proposal_file(output).failed
    with pytest.raises(ValueError, match="image_timeout must be >= 0"):
        generate(str(tmp_path / "images"), str(tmp_path / "q.pkl"), num_workers=1, progress=False, image_timeout=-1)


# ------------------------------------------------------------------ 3. one run per folder
def test_second_run_in_a_locked_folder_is_refused(tmp_path):
    out = str(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from soco.engine.run_guard import claim_output_dir; "
         f"claim_output_dir({out!r}, False, False); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirInUseError, match=rf"in use by another run .*\"pid\": {holder.pid}"):
            claim_output_dir(out, False, False)
    finally:
        holder.kill()
        holder.wait()
    claim_output_dir(out, False, False)  # the holder died: its lock is stale and taken over



def _tool(args, tmp_path):
    """(return code, stderr lines without warnings) of ``python tools/ARGS[0] ARGS[1:]``."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    env.pop("SOCO_DEBUG", None)
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", args[0]), *args[1:]], capture_output=True,
                         text=True, env=env, timeout=300, cwd=str(tmp_path))
    return out.returncode, [l for l in out.stderr.splitlines() if "Warning" not in l and "warnings.warn" not in l]


def test_a_folder_with_an_earlier_runs_checkpoints_is_one_line_exit_2(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last_checkpoint").write_text("model_0000009.pth")
    code, lines = _tool(["pretrain_net.py", "--config-file", os.path.join(REPO, "configs", "BYOL", "byol_R18_cpu_demo.yaml"),
                         "OUTPUT_DIR", str(out)], tmp_path)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: OUTPUT_DIR {out} holds checkpoints of an earlier run (last_checkpoint)"), lines
    assert (out / "last_checkpoint").read_text() == "model_0000009.pth"  # nothing touched

CLAIM_ON_TWO_MACHINES_SCRIPT = """
import sys
from detectron2.utils import comm
from soco.engine.launch import launch
from soco.engine.run_guard import claim_output_dir_on_all_ranks
def main(out):
    claim_output_dir_on_all_ranks(out, False, False)
    comm.synchronize()  # where a rank that was not told would wait for rank 0 forever
if __name__ == "__main__":
    launch(main, 1, num_machines=2, machine_rank=int(sys.argv[2]), dist_url=sys.argv[3], args=(sys.argv[1],),
           device="cpu")
"""


def test_refused_claim_stops_the_ranks_of_every_machine(tmp_path):
    """Rank 0 refuses the folder (it holds checkpoints); the rank on the other machine stops
    with the same reason instead of waiting in its first collective."""
    from soco.engine.launch import free_local_url

    out = tmp_path / "run"
    out.mkdir()
    (out / "model_final.pth").write_bytes(b"old")
    url = free_local_url()
    script = tmp_path / "claim.py"  # a file: the spawned processes import their main function from it
    script.write_text(CLAIM_ON_TWO_MACHINES_SCRIPT)
    machines = [subprocess.Popen([sys.executable, str(script), str(out), str(rank), url],
                                 stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
                for rank in (0, 1)]
    try:
        errors = [machine.communicate(timeout=120)[1] for machine in machines]
    finally:
        for machine in machines:
            machine.kill()
    assert all(machine.returncode != 0 for machine in machines)
    assert "holds checkpoints of an earlier run" in errors[0]
    assert "rank 0 refused the run: OUTPUT_DIR" in errors[1] and "holds checkpoints" in errors[1]
    assert (out / "model_final.pth").read_bytes() == b"old"


def test_fresh_run_into_a_folder_with_checkpoints_needs_overwrite(tmp_path, smooth_images):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model_final.pth").write_bytes(b"old")
    (out / "last_checkpoint").write_text("model_final.pth")
    config = str(tmp_path / "byol.yaml")
    with open(config, "w") as f:
        f.write(tiny_byol_cfg(smooth_images, out).dump())
    refused = _cli("pretrain_net.py", "--config-file", config)  # stops before building anything
    assert refused.returncode != 0 and "holds checkpoints of an earlier run" in refused.stderr
    assert "--resume to continue it, --overwrite to delete them" in refused.stderr
    assert (out / "model_final.pth").read_bytes() == b"old" and not (out / "config.yaml").exists()
    claim_output_dir(str(out), resume=True, overwrite=False)  # --resume continues the run
    assert (out / "model_final.pth").exists()
    other = tmp_path / "other"
    shutil.copytree(out, other)
    claim_output_dir(str(other), resume=False, overwrite=True)  # --overwrite starts again
    assert sorted(os.listdir(other)) == ["run.lock"]


# ------------------------------------------------------------------ 4. weights of the wrong layout
def test_fpn_finetune_refuses_c4_converted_weights(tmp_path):
    from detectron2.engine import default_argument_parser

    from soco.checkpoint import convert
    from test_finetune import _register_subset, load_tool, write_demo_soco_checkpoint

    pth, pkl = str(tmp_path / "soco.pth"), str(tmp_path / "soco_c4.pkl")
    write_demo_soco_checkpoint(pth)
    convert(pth, pkl, verify=False, include=["none"], layout="c4")
    _register_subset("soco_demo_det_train_2", "soco_demo_det_train", 2)
    args = default_argument_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs/finetune/faster_rcnn_R18_FPN_demo_cpu.yaml"),
        "MODEL.WEIGHTS", pkl, "OUTPUT_DIR", str(tmp_path / "ft"), "DATASETS.TRAIN", "('soco_demo_det_train_2',)",
        "SOLVER.MAX_ITER", "1", "DATALOADER.NUM_WORKERS", "0",
    ])
    with pytest.raises(ValueError, match=r"leaves \d+ of the \d+ ResNet tensors .*--layout fpn"):
        load_tool("finetune_net").main(args)
    assert not os.path.exists(tmp_path / "ft" / "model_final.pth")


# ------------------------------------------------------------------ 5. proposals for other sizes
def test_proposals_for_other_image_sizes_are_refused(tmp_path):
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    _photos(full, 4)
    for name in list_images(full):
        image = Image.open(os.path.join(full, name))
        os.makedirs(os.path.dirname(os.path.join(half, name)), exist_ok=True)
        image.resize((image.width // 2, image.height // 2)).save(os.path.join(half, name))
    props = str(tmp_path / "props.pkl")
    generate(full, props, num_workers=0, progress=False)
    from soco.data.image_folder import image_folder_dicts

    assert len(attach_proposals(image_folder_dicts(full), props)) == 4
    with pytest.raises(ValueError, match=r"props.pkl was made for images of other sizes .*class0/img000.jpg is 120x160, "
                                         r"proposals made for 240x320"):
        attach_proposals(image_folder_dicts(half), props)


# ------------------------------------------------------------------ 6. symlink loops
def test_symlink_loop_lists_each_file_once(tmp_path):
    root = tmp_path / "images"
    (root / "a" / "b").mkdir(parents=True)
    for name in ("x.jpg", "a/y.jpg", "a/b/z.jpg"):
        (root / name).write_bytes(b"")
    os.symlink("../..", root / "a" / "b" / "loop")  # back to the root
    os.symlink(root / "a", root / "again")  # a second path to the same folder
    assert list_images(str(root)) == ["a/b/z.jpg", "a/y.jpg", "x.jpg"]


# ------------------------------------------------------------------ 7. converter output = input
def test_converter_refuses_output_equal_to_input_and_writes_usual_permissions(tmp_path):
    from soco.checkpoint import ConversionError, convert
    from soco.config.defaults import load_pretrain_config

    cfg = load_pretrain_config(os.path.join(REPO, "configs/BYOL/byol_R18_cpu_demo.yaml"))
    model = META_ARCH_REGISTRY.get("BYOL")(cfg)
    pth = str(tmp_path / "model_final.pth")
    torch.save({"model": model.state_dict(), "cfg": cfg.dump(), "iteration": 0}, pth)
    before = open(pth, "rb").read()
    with pytest.raises(ConversionError, match="the output is the input checkpoint"):
        convert(pth, os.path.join(str(tmp_path), ".", "model_final.pth"), verify=False)
    assert open(pth, "rb").read() == before
    umask = os.umask(0o022)
    try:
        convert(pth, str(tmp_path / "out.pkl"), verify=False)
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / "out.pkl").st_mode & 0o777 == 0o644
    (tmp_path / "random.pth").write_bytes(os.urandom(4096))
    with pytest.raises(ConversionError, match="random.pth: cannot be read.* not a torch checkpoint") as info:
        convert(str(tmp_path / "random.pth"), str(tmp_path / "r.pkl"), verify=False)
    assert "weights_only" not in str(info.value)


# ------------------------------------------------------------------ 8. a full disk
@pytest.mark.parametrize("failure", ["oserror", "torch_zip_writer"])
def test_disk_full_at_a_checkpoint_leaves_no_tmp_and_names_the_path(tmp_path, monkeypatch, failure):
    model = torch.nn.Linear(3, 2)
    ckpt = PretrainCheckpointer(model, str(tmp_path), "cfg: 1\n")
    ckpt.save("model_0000001", iteration=1)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"x" * 1000)  # part of the file made it to disk
        if failure == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, _Failing(f))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFullError, match=r"cannot write .*model_0000003.pth: no space left on device"):
        ckpt.save("model_0000003", iteration=3)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert ckpt.get_checkpoint_file().endswith("model_0000001.pth")
    assert torch.load(tmp_path / "model_0000001.pth")["iteration"] == 1


class _Failing:
    """A file object whose writes fail as a full disk makes them (torch's zip writer then
    raises "unexpected pos")."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        pass


def test_atomic_write_keeps_the_old_file_on_any_failure(tmp_path):
    path = tmp_path / "x.json"
    atomic_write(path, lambda f: f.write("old"), "w")
    with pytest.raises(ZeroDivisionError):
        atomic_write(path, lambda f: f.write("new") and 1 / 0, "w")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["x.json"]


# ------------------------------------------------------------------ 9. metrics.json after resume
def _metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_metrics_json_after_resume_equals_an_uninterrupted_run(tmp_path, smooth_images):
    a, b = tmp_path / "a", tmp_path / "b"
    run_pretraining(tiny_byol_cfg(smooth_images, a))
    straight = _metrics(a / "metrics.json")
    assert [m["iteration"] for m in straight] == [0, 1, 2, 3]
    # A job killed during iteration 3, after writing metrics up to 2; the last checkpoint is 1.
    b.mkdir()
    shutil.copy(a / "model_0000001.pth", b)
    (b / "last_checkpoint").write_text("model_0000001.pth")
    (b / "metrics.json").write_text("".join(json.dumps(m) + "\n" for m in straight[:3]) + '{"iterat')
    run_pretraining(tiny_byol_cfg(smooth_images, b), resume=True)
    resumed = _metrics(b / "metrics.json")
    assert [m["iteration"] for m in resumed] == [0, 1, 2, 3]
    for x, y in zip(straight, resumed):
        for key in ("total_loss", "loss_byol", "lr"):
            assert x[key] == y[key], (key, x["iteration"])


def test_truncate_metrics_keeps_lines_before_the_start(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"iteration": 0}\n{"iteration": 1}\n{"iteration": 2}\n')
    assert truncate_metrics(str(path), 2) == 1
    assert path.read_text() == '{"iteration": 0}\n{"iteration": 1}\n'


# ------------------------------------------------------------------ 10. bad files are named
def test_truncated_chunk_is_recomputed_and_named_at_merge(tmp_path):
    root = str(tmp_path / "images")
    _photos(root, 6)
    output = str(tmp_path / "p.pkl")
    generate(root, output, num_workers=0, chunk_size=2, progress=False)
    reference = open(output, "rb").read()
    chunk = os.path.join(runner.output_paths(output)["shards"], "chunk_000001.store")
    data = open(chunk, "rb").read()
    open(chunk, "wb").write(data[: len(data) // 2])
    with pytest.raises(runner.DamagedChunkError, match=r"chunk_000001.store: cannot be read.*with --shard 0/1 "):
        merge(output)
    code, lines = _tool(["gen_proposals.py", "--output", output, "--merge"], tmp_path)  # the tool: one line, exit 2
    assert code == 2 and len(lines) == 1 and "chunk_000001.store: cannot be read" in lines[0], lines
    summary = generate(root, output, num_workers=0, chunk_size=2, progress=False)
    assert summary["images_this_run"] == 2 and open(output, "rb").read() == reference
    assert os.path.exists(chunk + ".damaged")


def test_random_bytes_as_proposal_file_are_named(tmp_path):
    path = tmp_path / "random.pkl"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(ValueError, match="random.pkl: not a readable proposal file"):
        load_proposals(str(path))


def test_resume_falls_back_to_the_newest_valid_checkpoint(tmp_path, smooth_images, caplog):
    a = tmp_path / "a"
    run_pretraining(tiny_byol_cfg(smooth_images, a))
    data = (a / "model_final.pth").read_bytes()
    (a / "model_final.pth").write_bytes(data[: len(data) // 3])
    with caplog.at_level("WARNING"):
        trainer, start_iter, _ = build_pretrain_trainer(tiny_byol_cfg(smooth_images, a), resume=True)
    assert start_iter == 4  # from model_0000003.pth
    assert any("model_final.pth cannot be read" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ 11. an all-bad folder
def test_all_images_failing_is_a_failure(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.jpg").write_bytes(b"")
    result = _cli("gen_proposals.py", "--image-root", str(root), "--output", str(tmp_path / "p.pkl"),
                  "--num-workers", "0", "--no-progress")
    assert result.returncode == 1
    assert "no image could be read (3 failures" in result.stderr


# ------------------------------------------------------------------ 12. SIGTERM
class _SignalAt(HookBase):
    def __init__(self, iteration, signum):
        self.iteration, self.signum = iteration, signum

    def before_step(self):
        if self.trainer.iter == self.iteration:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_resume_equals_uninterrupted(tmp_path, smooth_images, signum):
    a, b = tmp_path / "a", tmp_path / "b"
    cfg = {"SOLVER.CHECKPOINT_PERIOD": 100}
    seed_all_rng(0)  # as default_setup does in tools/pretrain_net.py: the same initial weights
    straight = run_pretraining(tiny_byol_cfg(smooth_images, a, **cfg))
    seed_all_rng(0)
    trainer, start_iter, resolved = build_pretrain_trainer(tiny_byol_cfg(smooth_images, b, **cfg))
    trainer.register_hooks([_SignalAt(1, signum)])
    with pytest.raises(SystemExit) as exit_info:
        trainer.train(start_iter, resolved.SOLVER.MAX_ITER)
    assert exit_info.value.code == 128 + signum
    assert [os.path.basename(p) for p in glob.glob(str(b / "model_*.pth"))] == ["model_0000001.pth"]
    assert (b / "last_checkpoint").read_text() == "model_0000001.pth"
    assert torch.load(b / "model_0000001.pth")["iteration"] == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    resumed = run_pretraining(tiny_byol_cfg(smooth_images, b, **cfg), resume=True)
    assert resumed.storage.history("loss_byol").values() == straight.storage.history("loss_byol").values()
    final_a = torch.load(a / "model_final.pth")["model"]
    final_b = torch.load(b / "model_final.pth")["model"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert [m["iteration"] for m in _metrics(b / "metrics.json")] == [0, 1, 2, 3]


# ------------------------------------------------------------------ embedded data caches
def test_embedded_caches_of_two_option_sets_coexist(tmp_path):
    from soco import embedded

    small = embedded.EmbeddedDataConfig(root=str(tmp_path), num_photos=4)
    other = embedded.EmbeddedDataConfig(root=str(tmp_path), num_photos=5)
    try:
        embedded.register_all(small)
        first = embedded.image_root("soco_demo_photos")
        stamp = os.stat(os.path.join(first, ".manifest.json")).st_mtime_ns
        embedded.register_all(other)
        second = embedded.image_root("soco_demo_photos")
        embedded.register_all(small)
        assert embedded.image_root("soco_demo_photos") == first != second
    finally:
        embedded.register_all()
    assert os.stat(os.path.join(first, ".manifest.json")).st_mtime_ns == stamp  # not rebuilt
    assert len(glob.glob(os.path.join(first, "*", "*.jpg"))) == 4
    assert len(glob.glob(os.path.join(second, "*", "*.jpg"))) == 5
    assert embedded.dataset_folder(embedded.EmbeddedDataConfig(root=str(tmp_path)), "demo_photos") == tmp_path / "demo_photos"
