"""Image-level methods (CoKe, CLSA, SMoG) train on Fashion-MNIST end to end, and learn."""

import math

import pytest
import torch

from image_level_helpers import LEARNING_CHECK_STEPS, fashion_mnist_run

METHODS = ["CoKe", "CLSA", "SMoG"]


@pytest.mark.parametrize("method", METHODS)
def test_fashion_mnist_pipeline_runs(method):
    """Fast variant of the learning check: the in-memory Fashion-MNIST run trains and evaluates.

    Chance is 0.1 (10 classes); the random-init ResNet-18's kNN reads 0.50 here and 0.54-0.58
    after two steps, so both must stay well above chance: broken images, labels, normalisation
    or features (e.g. constant ones) fall to about 0.1."""
    before, after, run, stem = fashion_mnist_run(method, steps=2, crop=16, batch=16, train=200, test=100)
    assert len(run["losses"]) == 2 and all(math.isfinite(x) for x in run["losses"])
    assert before > 0.3 and after > 0.3, (before, after)
    assert not torch.equal(run["model"].backbone.stem.conv1.weight, stem)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("method", METHODS)
def test_fashion_mnist_knn_beats_random_init(method):
    """Learning signal: 600 steps (batch 64, 32 px, 5000 training images; about 12 minutes a
    method on 2 CPU cores) raise kNN top-1 above the same network at random init by 2 points.

    Measured (random init 72.7%): CLSA 75.1%, CoKe 75.1%, SMoG 75.2%. Random-init ResNet-18
    features are already strong on Fashion-MNIST, and every method first lowers the accuracy (a
    higher lr, a deeper drop) before it recovers; the settings in ``LEARNING_CHECK`` are the ones
    that recover within the budget.
    """
    before, after, _, _ = fashion_mnist_run(method, steps=LEARNING_CHECK_STEPS)
    print(f"{method}: kNN top-1 {before:.3f} at random init, {after:.3f} after {LEARNING_CHECK_STEPS} steps")
    assert after > before + 0.02, (before, after)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("method", METHODS)
def test_unpaired_views_control_does_not_pass(method):
    """Control for the check above: the same run with each image's later views taken from
    another image (``unpaired_views``) must not clear the margin, so passing it is due to what
    the method learns from its view pairs, not to training the network's statistics."""
    before, after, _, _ = fashion_mnist_run(method, steps=LEARNING_CHECK_STEPS, unpaired_views=True)
    print(f"{method} (unpaired views): kNN top-1 {before:.3f} at random init, {after:.3f} after {LEARNING_CHECK_STEPS} steps")
    assert after <= before + 0.02, (before, after)
