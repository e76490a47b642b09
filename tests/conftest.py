"""Shared test set-up: deterministic CPU runs with a fixed intra-op thread count, and
``load_tool`` for the command-line scripts of tools/ and benchmarks/ (scripts, not a package)."""

import importlib.util
import os

import pytest
import torch
from detectron2.utils.env import seed_all_rng

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name: str, folder: str = "tools"):
    """``<folder>/<name>.py`` (tools/ or benchmarks/) imported as a fresh module (its ``main`` is
    not run)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="session")
def _intra_op_threads():
    # Test models are tiny: on a 2-core machine (loaded by data-loader workers or other jobs),
    # spinning two OpenMP threads ran small convolutions up to 10x slower than one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("SOCO_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic():
    # Denormals make CPU convolutions of freshly initialised nets very slow.
    torch.set_flush_denormal(True)
    seed_all_rng(0)
    yield
