"""Image-level methods (CoKe, CLSA, SMoG) train on Fashion-MNIST end to end, and learn."""

import math

import pytest
import torch

from image_level_helpers import fashion_mnist_run

METHODS = ["CoKe", "CLSA", "SMoG"]


@pytest.mark.parametrize("method", METHODS)
def test_fashion_mnist_pipeline_runs(method):
    """Fast variant of the learning check: the in-memory Fashion-MNIST run trains and evaluates."""
    before, after, run, stem = fashion_mnist_run(method, steps=2, crop=16, batch=16, train=200, test=100)
    assert all(math.isfinite(x) for x in run["losses"]) and 0.0 <= before <= 1.0 and 0.0 <= after <= 1.0
    assert not torch.equal(run["model"].backbone.stem.conv1.weight, stem)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_fashion_mnist_knn_beats_random_init(method):
    """Learning signal: 300 steps (batch 64, 32 px, 5000 training images) raise kNN top-1 above
    the same network at random init by 2 points.

    Status (2 CPU cores, about 10 minutes a method): not met yet. Random-init ResNet-18 features
    already give 72.7%; CLSA reaches 73.0% after 300 steps, SMoG (online predictor) 71.4% and CoKe
    70.6% after 100-300 steps. Every method first lowers the accuracy (higher lr: deeper drop) and
    recovers slowly."""
    before, after, _, _ = fashion_mnist_run(method, steps=300)
    print(f"{method}: kNN top-1 {before:.3f} at random init, {after:.3f} after 300 steps")
    assert after > before + 0.02, (before, after)
