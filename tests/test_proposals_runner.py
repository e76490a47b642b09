"""gen_proposals at scale: bad inputs never stop a run, resume after interruption, shards + merge."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from soco.data.proposals import load_proposals
from soco.proposals import generate, merge
from soco.proposals.chunks import ShardError
from soco.proposals.runner import output_paths
from test_image_io import write_test_images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _photos(folder, count):
    """``count`` small real photos (scikit-image samples, cropped differently) in class folders."""
    import skimage.data

    sources = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    for i in range(count):
        source = sources[i % len(sources)]
        crop = source[(i * 7) % 40:, (i * 11) % 60:][:240, :320]
        path = os.path.join(folder, f"class{i % 3}", f"img{i:03d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(path, quality=90)


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("photos"))
    _photos(root, 10)
    return root


@pytest.fixture(scope="module")
def reference(photo_root, tmp_path_factory):
    """An uninterrupted single-process run: (output path, its bytes)."""
    output = str(tmp_path_factory.mktemp("ref") / "p.pkl")
    summary = generate(photo_root, output, num_workers=0, chunk_size=3, progress=False)
    assert summary["images"] == 10 and summary["failures"] == 0
    with open(output, "rb") as f:
        return output, f.read()


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_summary_and_compact_output(reference):
    output, data = reference
    with open(output_paths(output)["summary"]) as f:
        summary = json.load(f)
    assert summary["bytes_per_image"] < 2048
    assert summary["boxes_per_image"]["min"] >= 1
    assert sum(summary["fallbacks"].values()) == summary["images"] == 10
    proposals = load_proposals(output)
    assert sorted(proposals) == list(proposals) and list(proposals)[0] == "class0/img000.jpg"


def test_resume_after_interruption_gives_identical_file(photo_root, reference, tmp_path):
    output = str(tmp_path / "p.pkl")
    assert generate(photo_root, output, num_workers=0, chunk_size=3, progress=False, max_chunks=2) is None
    assert not os.path.exists(output)
    # A temporary file left by a killed writer must not count as a finished chunk.
    with open(os.path.join(output_paths(output)["shards"], ".tmp-x-chunk_000002.pkl"), "wb") as f:
        f.write(b"partial")
    summary = generate(photo_root, output, num_workers=0, chunk_size=3, progress=False)
    assert summary["images_this_run"] == 4  # chunks 2 and 3 only
    assert _bytes(output) == reference[1]


def test_shards_then_merge_equal_a_single_run(photo_root, reference, tmp_path):
    output = str(tmp_path / "p.pkl")
    assert generate(photo_root, output, num_workers=0, chunk_size=3, shard="1/2", progress=False) is None
    with pytest.raises(ShardError, match=r"2 of 4 chunks missing .*chunk_000000.store\); rerun tools/gen_proposals.py "
                                         r"with --shard 0/2 \(the same"):
        merge(output)
    with pytest.raises(ShardError, match=r"--shard 1/3: .* was started with 2 shards \(--shard i/2\)"):
        generate(photo_root, output, num_workers=0, chunk_size=3, shard="1/3", progress=False)
    summary = generate(photo_root, output, num_workers=0, chunk_size=3, shard="0/2", progress=False)
    assert summary is not None and _bytes(output) == reference[1]  # the last shard merges
    os.unlink(output)
    merge(output)
    assert _bytes(output) == reference[1]


def test_changed_settings_are_refused(photo_root, tmp_path):
    output = str(tmp_path / "p.pkl")
    generate(photo_root, output, num_workers=0, chunk_size=3, progress=False, max_chunks=1)
    with pytest.raises(RuntimeError, match="other settings"):
        generate(photo_root, output, num_workers=0, chunk_size=3, max_size=200, progress=False)


def test_box_filter_settings(photo_root, reference, tmp_path):
    """A lowered scale range keeps smaller boxes (all within it), is recorded, and a resume with
    another filter is refused; an empty range is a clear error."""
    output = str(tmp_path / "p.pkl")
    summary = generate(photo_root, output, num_workers=0, chunk_size=3, progress=False, scale_range=(0.05, 0.3),
                       min_side=8)
    assert summary["filter"] == {"scale_range": [0.05, 0.3], "min_side": 8.0}
    small, paper = load_proposals(output), load_proposals(reference[0])
    for image_id, boxes in small.items():
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        scale = np.sqrt(w * h) / np.sqrt(240 * 320)
        assert ((scale >= 0.05 - 1e-6) & (scale <= 0.3 + 1e-6) & (w >= 8) & (h >= 8)).all(), image_id
        assert np.median(scale) < np.median(np.sqrt(np.prod(paper[image_id][:, 2:] - paper[image_id][:, :2], 1))
                                            / np.sqrt(240 * 320))
    with pytest.raises(RuntimeError, match="filter"):
        generate(photo_root, output, num_workers=0, chunk_size=3, progress=False)
    with pytest.raises(ValueError, match="scale_range"):
        generate(photo_root, str(tmp_path / "q.pkl"), num_workers=0, progress=False, scale_range=(0.5, 0.2))
    assert not os.path.exists(output_paths(str(tmp_path / "q.pkl"))["shards"])  # nothing written


def test_bad_inputs_never_stop_the_run(tmp_path):
    root = str(tmp_path / "images")
    expected = write_test_images(root, huge=True)
    output = str(tmp_path / "p.pkl")
    summary = generate(root, output, num_workers=0, chunk_size=4, progress=False)
    bad = sorted(name for name, size in expected.items() if size is None)
    with open(output_paths(output)["failures"]) as f:
        failures = json.load(f)
    assert sorted(f["id"] for f in failures) == bad and all(f["reason"] for f in failures)
    assert summary["failures"] == len(bad) and summary["images"] == len(expected) - len(bad)
    proposals = load_proposals(output)
    for name, size in expected.items():
        if size is None:
            continue
        height, width = size
        boxes = proposals[name]
        assert len(boxes) >= 1, name
        assert (boxes[:, [0, 1]] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all(), name
    # Images too small for a 32 px box get the whole image.
    np.testing.assert_array_equal(proposals["one_pixel.png"], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(proposals["ten_pixels.png"], [[0, 0, 10, 10]])
    assert summary["fallbacks"]["whole_image"] >= 2


def _cli(args):
    return [sys.executable, os.path.join(REPO, "tools", "gen_proposals.py"), "--no-progress", *args]


def test_kill_9_then_rerun_gives_identical_file(tmp_path, reference):
    root = str(tmp_path / "photos")
    _photos(root, 10)
    output = str(tmp_path / "p.pkl")
    args = ["--image-root", root, "--output", output, "--num-workers", "1", "--chunk-size", "1"]
    process = subprocess.Popen(_cli(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard_dir = output_paths(output)["shards"]
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        if os.path.isdir(shard_dir) and any(n.startswith("chunk_") for n in os.listdir(shard_dir)):
            break
        time.sleep(0.05)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = sum(n.startswith("chunk_") for n in os.listdir(shard_dir))
    assert 1 <= done < 10  # really interrupted mid-run
    result = subprocess.run(_cli(args), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images"] == 10
    # chunk size differs from the reference run, the merged file does not
    assert _bytes(output) == reference[1]


def test_visualize_proposals_grid(photo_root, reference, tmp_path):
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        import visualize_proposals
    finally:
        sys.path.pop(0)
    out = str(tmp_path / "grid.png")
    assert visualize_proposals.main(["--image-root", photo_root, "--proposals", reference[0], "--output", out,
                                     "--num-images", "5", "--columns", "3", "--tile-size", "64"]) == 0
    assert Image.open(out).size == (3 * 64, 2 * 64)


def test_image_list_selects_images_and_missing_ones_are_failures(photo_root, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("class1/img001.jpg 1\nclass0/img000.jpg 0\nclass0/missing.jpg 0\n")
    output = str(tmp_path / "p.pkl")
    summary = generate(photo_root, output, image_list=str(listing), num_workers=0, progress=False)
    assert list(load_proposals(output)) == ["class0/img000.jpg", "class1/img001.jpg"]
    with open(output_paths(output)["failures"]) as f:
        failures = json.load(f)
    assert failures == [{"id": "class0/missing.jpg", "reason": "file not found"}] and summary["failures"] == 1
