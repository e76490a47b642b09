"""Shared test set-up: deterministic CPU runs."""

import pytest
import torch
from detectron2.utils.env import seed_all_rng


@pytest.fixture(autouse=True)
def _deterministic():
    # Denormals make CPU convolutions of freshly initialised nets very slow.
    torch.set_flush_denormal(True)
    seed_all_rng(0)
    yield
