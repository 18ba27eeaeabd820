"""Backbones: the architectures they claim, in the shapes they claim."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import metakit


def test_conv4_equals_the_textbook_block_order():
    """conv4 pools before its ReLU for speed; the output must be that of
    [Conv, BatchNorm, ReLU, MaxPool] x 4 -> Linear with the same weights."""
    torch.manual_seed(0)
    model = metakit.create_backbone("conv4", num_outputs=5).double()
    x = torch.randn(10, 1, 28, 28, dtype=torch.float64)
    h = x
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for conv, norm in zip(convs, norms):
        h = F.max_pool2d(F.relu(norm(conv(h))), 2)
    assert torch.equal(model(x), model.head(h.flatten(1)))


@pytest.mark.parametrize(
    ("name", "kwargs", "x_shape", "feature_dim"),
    [
        ("conv4", {"input_shape": (1, 28, 28), "num_outputs": 5}, (7, 1, 28, 28), 64),
        ("conv4", {"input_shape": (3, 84, 84), "num_outputs": 5, "hidden": 32}, (2, 3, 84, 84), 32 * 5 * 5),
        ("conv4-strided", {"input_shape": (1, 28, 28), "num_outputs": 20}, (7, 1, 28, 28), 64),
        (
            "mlp",
            {"input_shape": (1, 28, 28), "num_outputs": 5, "hidden": (256, 128, 64, 64), "batch_norm": True},
            (7, 1, 28, 28),
            64,
        ),
        ("mlp", {}, (7, 1), 40),
    ],
)
def test_shapes(name, kwargs, x_shape, feature_dim):
    model = metakit.create_backbone(name, **kwargs)
    x = torch.randn(*x_shape)
    assert model.features(x).shape == (x_shape[0], feature_dim)
    assert model(x).shape == (x_shape[0], model.num_outputs)


def test_normalisation_uses_batch_statistics_in_train_and_eval_mode():
    model = metakit.create_backbone("conv4")
    assert dict(model.named_buffers()) == {}
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        in_train_mode = model(x)
        model.eval()
        assert torch.equal(model(x), in_train_mode)


def test_strided_variant_has_no_pooling():
    model = metakit.create_backbone("conv4-strided")
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert all(m.stride == (2, 2) for m in model.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("name", ["conv4", "conv4-strided"])
def test_conv4_forward_tasks_equals_each_task_on_its_own(name):
    """Each task with its own weights, BatchNorm statistics of its own images only."""
    generator = torch.Generator().manual_seed(0)
    backbone = metakit.create_backbone(name, num_outputs=3, hidden=8).double()
    tasks = 3
    params = {
        n: p.detach() + torch.randn(tasks, *p.shape, generator=generator, dtype=torch.float64)
        for n, p in backbone.named_parameters()
    }
    x = torch.randn(tasks, 4, 1, 28, 28, generator=generator, dtype=torch.float64)
    alone = [functional_call(backbone, {n: p[t] for n, p in params.items()}, (x[t],)) for t in range(tasks)]
    torch.testing.assert_close(backbone.forward_tasks(params, x), torch.stack(alone), rtol=1e-12, atol=1e-12)
    assert backbone.batches_tasks and not metakit.create_backbone("mlp").batches_tasks
