"""Training precision: bf16 autocast reaches every task, whichever the task mapping, and a
CPU that would emulate it is warned about."""

import warnings

import pytest
import torch

from metakit import MetakitError, TrainConfig, precision
from metakit.bench.configs import SpeedConfig
from metakit.precision import autocast, warn_if_emulated
from metakit.registry import create_algorithm

TINY = SpeedConfig("tiny", ways=3, shots=1, queries=2, tasks=4, inner_steps=1, inner_lr=0.4, hidden=8)


def _meta_gradient(mapping: str, precision: str) -> torch.Tensor:
    backbone = TINY.backbone(0, torch.float32, "cpu")
    algorithm = create_algorithm("maml", backbone=backbone, problem="classification", task_mapping=mapping)
    with autocast(precision, "cpu"):
        loss, _ = algorithm.meta_loss(TINY.batch(1, torch.float32, "cpu"))
    loss.backward()
    return torch.cat([p.grad.flatten() for p in backbone.parameters()])


def test_worker_threads_compute_under_the_callers_autocast(torch_threads):
    """Each worker runs torch on one thread; oneDNN's bf16 convolutions round differently
    with two, so the loop they are compared with runs on one too."""
    torch_threads(1)
    looped, full = _meta_gradient("loop", "bf16"), _meta_gradient("loop", "fp32")
    torch_threads(2)
    threaded = _meta_gradient("threads", "bf16")
    torch.testing.assert_close(threaded, looped, rtol=1e-5, atol=1e-5 * looped.abs().max().item())
    assert (looped - full).norm() > 1e-3 * full.norm()


def test_an_unknown_precision_is_refused():
    with pytest.raises(MetakitError, match="unknown precision 'fp16'; use one of fp32, bf16"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_warned_about_only_on_a_cpu_that_emulates_it(monkeypatch, native):
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_emulated("bf16", "cpu")
        warn_if_emulated("fp32", "cpu")
        warn_if_emulated("bf16", "cuda")
    emulated = (
        "bf16 is emulated on this CPU (oneDNN has no native bfloat16 here) and runs several times "
        "slower than fp32; use --precision fp32"
    )
    assert [str(warning.message) for warning in caught] == ([] if native else [emulated])
