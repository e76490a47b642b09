"""The single training step, metrics logged per LOG_PERIOD, the state fingerprint, chunked
k-means, SMoG under torch.compile and CLSA under CPU AMP (one process; see test_distributed.py
for world size 2)."""

import math

import torch
from detectron2.modeling import build_model

from image_level_helpers import random_batch, tiny_cfg
from soco.engine import PretrainTrainer
from soco.engine.step import training_step
from soco.modeling.distributed import global_state_tensors, tensor_fingerprint
from soco.modeling.losses.smog import nearest_centre, spherical_kmeans


def _explicit_loop(model, batch, optimizer, steps):
    """The loop every caller used to repeat, kept here as the reference for training_step."""
    for it in range(steps):
        model.on_step_start(it, 10)
        losses = model(batch)
        optimizer.zero_grad()
        sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
        optimizer.step()
        model.on_step_end(it, 10)


def test_training_step_is_the_explicit_loop():
    cfg = tiny_cfg("BYOL")
    batch = random_batch(cfg, 4)
    finals = []
    for use_step in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if use_step:
            for it in range(2):
                training_step(model, lambda: batch, opt, it, 10)
        else:
            _explicit_loop(model, batch, opt, 2)
        finals.append(model.state_dict())
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])  # incl. the EMA target


class _Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return {"loss_a": (self.w * batch[0]).sum(), "aux": self.w.detach().sum()}


def test_metrics_are_reduced_and_written_at_the_log_period_only():
    model = _Counting()
    loader = [[torch.tensor(float(i))] for i in range(7)]
    trainer = PretrainTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.0), log_period=3)
    trainer.train(0, 7)
    logged = [it for _, it in trainer.storage.history("loss_a").values()]
    assert logged == [2, 5, 6]  # (it + 1) % 3 == 0, and the last iteration
    assert [v for v, _ in trainer.storage.history("loss_a").values()] == [2.0, 5.0, 6.0]
    assert trainer.storage.history("total_loss").latest() == 6.0
    assert float(trainer.last_metrics["aux"]) == 1.0


def test_fingerprint_sees_one_bit_and_the_state_excludes_bn_statistics():
    x = torch.randn(1000)
    y = x.clone()
    assert int(tensor_fingerprint(x)) == int(tensor_fingerprint(y))
    y.view(torch.int32)[517] ^= 1  # lowest mantissa bit of one element
    assert int(tensor_fingerprint(x)) != int(tensor_fingerprint(y))
    flags = torch.zeros(5, dtype=torch.bool)
    assert int(tensor_fingerprint(flags)) != int(tensor_fingerprint(flags.logical_not()))
    state = global_state_tensors(build_model(tiny_cfg("CLSA")))
    assert {"queue", "queue_ptr", "target.backbone.stem.conv1.weight", "backbone.stem.conv1.weight"} <= set(state)
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in state)


def test_chunked_kmeans_equals_the_full_one():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(999, 16, generator=g), dim=1)
    centres = x[:37]
    for chunk in (4 * 37, 4 * 37 * 10, 4 * 37 * 500):  # 1 row, 10 rows, 500 rows per block
        assert torch.equal(nearest_centre(x, centres, chunk), nearest_centre(x, centres))
    full = spherical_kmeans(x, 37, 5, generator=torch.Generator().manual_seed(1))
    chunked = spherical_kmeans(x, 37, 5, generator=torch.Generator().manual_seed(1), chunk_bytes=4 * 37 * 64)
    assert torch.equal(full, chunked)


def test_smog_trains_under_torch_compile():
    """PRETRAIN.COMPILE used to crash on the first backward (an in-place write into the group
    buffer that the compiled graph saved); inductor's partitioner, run without its C++ code
    generation, reproduces that. The first step's loss matches eager (later steps drift apart
    by float noise that the argmax of the grouping amplifies), and the graph is compiled once
    per (first step, view order), not once per step."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cfg = tiny_cfg("SMoG")
    batch = random_batch(cfg, 4)
    runs, graphs = [], []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        step_model = torch.compile(model, backend="aot_eager_decomp_partition") if compiled else model
        losses = []
        for it in range(4):
            losses.append(float(training_step(step_model, lambda: batch, opt, it, 10)[0]["loss_smog"]))
            graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        runs.append(losses)
    torch._dynamo.reset()
    assert abs(runs[1][0] - runs[0][0]) < 1e-4 and all(map(math.isfinite, runs[1])), runs
    # Steps 0 (k-means initialisation), 1 (views swapped) and 2 compile; step 3 reuses step 1's.
    assert graphs[-1] == graphs[-2] > graphs[-3], graphs


def test_clsa_trains_under_cpu_amp_and_keeps_a_float32_queue():
    cfg = tiny_cfg("CLSA")
    model = build_model(cfg)
    model.train()
    batch = random_batch(cfg, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    metrics, _ = training_step(model, lambda: batch, opt, 0, 10, amp=True, device_type="cpu")
    assert torch.isfinite(metrics["loss_contrast"]) and model.queue.dtype == torch.float32
    for dtype in (torch.float16, torch.bfloat16):
        keys = torch.nn.functional.normalize(torch.randn(4, model.queue.shape[1]), dim=1).to(dtype)
        ptr = int(model.queue_ptr)
        model.enqueue(keys)
        assert model.queue.dtype == torch.float32 and torch.equal(model.queue[ptr : ptr + 4], keys.float())
