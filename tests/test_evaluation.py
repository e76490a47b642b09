"""Evaluation: weighted kNN, linear probe and clustering metrics on hand-checkable inputs, and
the eval_representation CLI end to end on a tiny ImageFolder."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import load_tool
from soco.evaluation import clustering_accuracy, clustering_metrics, knn_accuracy, knn_predict, linear_probe_accuracy



def test_knn_weights_are_exp_cosine_over_temperature():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    scores = knn_predict(torch.tensor([[2.0, 0.0]]), bank, labels, num_classes=2, k=2, temperature=0.5)
    # top-2 neighbours: bank 0 (cos 1) and bank 2 (cos 1/sqrt 2)
    expected = torch.tensor([[math.exp(1 / 0.5), math.exp(2 ** -0.5 / 0.5)]])
    assert torch.allclose(scores, expected)
    # k larger than the bank is clipped; a weighted vote can beat a majority
    scores = knn_predict(torch.tensor([[1.0, 0.0]]), bank, labels, num_classes=2, k=200, temperature=0.07)
    assert scores.argmax().item() == 0
    with pytest.raises(ValueError):
        knn_predict(torch.zeros(1, 3), bank, labels, 2)


def test_knn_and_linear_probe_separate_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=gen) * 3
    def sample(n):
        y = torch.arange(n) % 3
        return centres[y] + torch.randn(n, 8, generator=gen), y
    (xa, ya), (xb, yb) = sample(90), sample(30)
    assert knn_accuracy(xa, ya, xb, yb, k=10) > 0.9
    assert linear_probe_accuracy(xa, ya, xb, yb) > 0.9
    assert knn_accuracy(xa, ya[torch.randperm(90, generator=gen)], xb, yb, k=10) < 0.7


def test_clustering_accuracy_uses_best_matching():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert clustering_accuracy(labels, np.array([2, 2, 0, 0, 1, 1])) == 1.0
    assert clustering_accuracy(labels, np.array([5, 5, 5, 5, 7, 7])) == pytest.approx(4 / 6)
    m = clustering_metrics(labels, np.array([1, 1, 0, 0, 2, 2]))
    assert m == {"acc": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    with pytest.raises(ValueError):
        clustering_accuracy(labels, labels[:3])


def _image_folder(root, per_class=6):
    rng = np.random.RandomState(0)
    for c, colour in enumerate([(220, 30, 30), (30, 30, 220)]):
        for split in ("train", "val"):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(np.array(colour) + rng.randint(-20, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_eval_cli_on_image_folder(tmp_path, capsys):
    """Random init already separates the two colours (kNN > 0.9); a checkpoint whose res5 is
    zeroed gives constant features, so its kNN falls to chance (0.5): the numbers come from the
    checkpoint's weights, read through soco.checkpoint, and not from a fresh network."""
    import json

    from soco.config import load_pretrain_config
    from soco.modeling.meta_arch import build_pretrain_model

    _image_folder(tmp_path)
    eval_representation = load_tool("eval_representation")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "MODEL:\n  META_ARCHITECTURE: CLSA\n  RESNETS: {DEPTH: 18, RES2_OUT_CHANNELS: 64}\n"
        "  CLSA: {QUEUE_SIZE: 16, CROP_SIZE: 16}\n"
    )
    out = tmp_path / "res.json"
    code = eval_representation.main(
        ["--config-file", str(cfg), "--dataset", str(tmp_path / "train"), "--knn-k", "3", "--output", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "knn top1 (k=3, T=0.07)" in printed and "linear probe top1" in printed
    results = json.loads(out.read_text())
    assert results["train/test images"] == "12/12" and results["weights"] == "random init"
    assert results["knn top1 (k=3, T=0.07)"] > 0.9  # colours separate even at random init

    full_cfg = load_pretrain_config(str(cfg))
    full_cfg.MODEL.DEVICE = "cpu"
    model = build_pretrain_model(full_cfg, 1)
    state = {k: (torch.zeros_like(v) if k.startswith("backbone.res5.") and v.is_floating_point() else v)
             for k, v in model.state_dict().items()}
    weights = tmp_path / "zeroed.pth"
    torch.save({"model": state, "cfg": full_cfg.dump(), "iteration": 0}, weights)
    args = ["--config-file", str(cfg), "--dataset", str(tmp_path / "train"), "--knn-k", "3", "--weights", str(weights)]
    assert eval_representation.main(args + ["--output", str(out)]) == 0
    zeroed = json.loads(out.read_text())
    assert zeroed["weights"] == str(weights)
    assert zeroed["knn top1 (k=3, T=0.07)"] == 0.5  # constant features: every test image gets one class
    assert eval_representation.main(["--config-file", str(cfg), "--dataset", str(tmp_path / "train"), "--weights",
                                      "nope.pth"]) == 2
    assert capsys.readouterr().err == "error: nope.pth: no such file\n"


def test_unpair_views_takes_later_views_from_the_next_image():
    """The learning check's broken-pairing control: view 0 stays, every other view (CLSA's strong
    views too) comes from image b+1."""
    from soco.engine.in_memory import unpair_views

    batch = [{"views": [f"v0_{b}", f"v1_{b}", f"v2_{b}"], "strong_views": [f"s_{b}"], "instance_index": b}
             for b in range(3)]
    out = unpair_views(batch)
    assert [item["views"] for item in out] == [["v0_0", "v1_1", "v2_1"], ["v0_1", "v1_2", "v2_2"],
                                               ["v0_2", "v1_0", "v2_0"]]
    assert [item["strong_views"] for item in out] == [["s_1"], ["s_2"], ["s_0"]]
    assert [item["instance_index"] for item in out] == [0, 1, 2]
    assert batch[0]["views"] == ["v0_0", "v1_0", "v2_0"]  # the input is left alone
