"""Backbones: the architectures they claim, in the shapes they claim."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import metakit


def _textbook_conv4(model, params, x):
    """[Conv, BatchNorm, ReLU, MaxPool] x 4 -> Linear from torch's functions on NCHW tensors."""
    h = x.contiguous()
    for block in range(4):
        conv, norm = f"blocks.{4 * block}", f"blocks.{4 * block + 1}"
        h = F.conv2d(h, params[f"{conv}.weight"], params[f"{conv}.bias"], padding=1)
        h = F.batch_norm(h, None, None, params[f"{norm}.weight"], params[f"{norm}.bias"], training=True)
        h = F.max_pool2d(F.relu(h), 2)
    return F.linear(h.flatten(1), params["head.weight"], params["head.bias"])


def _outputs_and_derivatives(forward, params, x, y):
    """Outputs, the gradient of a loss and a second derivative through that gradient, as
    second-order MAML takes them."""
    params = {name: p.detach().requires_grad_() for name, p in params.items()}
    outputs = forward(params, x)
    grads = torch.autograd.grad(F.cross_entropy(outputs, y), list(params.values()), create_graph=True)
    outer = sum(((g * i) ** 2).sum() for i, g in enumerate(grads, start=1))
    return (outputs, *grads, *torch.autograd.grad(outer, list(params.values())))


@pytest.mark.parametrize("images", ["gaussian", "strokes"])
def test_conv4_equals_the_textbook_network_to_second_order(images):
    """conv4 pools before its ReLU, runs channels-last on the CPU and has its own
    BatchNorm; its outputs and first and second derivatives must be those of the textbook
    network. Stroke images (mostly background, as Omniglot) make many max-pool windows tie:
    the pooled position must be the one NCHW pooling takes."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = metakit.create_backbone("conv4", num_outputs=5).double()
    x = torch.randn(10, 1, 28, 28, generator=generator, dtype=torch.float64)
    if images == "strokes":
        x = (x > 1.5).double()
    y = torch.arange(5).repeat(2)
    params = dict(model.named_parameters())
    ours = _outputs_and_derivatives(lambda p, x: functional_call(model, p, (x,)), params, x, y)
    reference = _outputs_and_derivatives(lambda p, x: _textbook_conv4(model, p, x), params, x, y)
    for mine, theirs in zip(ours, reference):  # conv biases: exact gradient zero, noise 1e-12
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)


def test_conv4_activations_are_channels_last_on_the_cpu():
    """Also for one input channel, where ``contiguous(memory_format=torch.channels_last)``
    would leave the tensor as it is and the first convolution would write NCHW."""
    model = metakit.create_backbone("conv4", num_outputs=5)
    layouts = []
    for module in model.blocks:
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_hook(
                lambda m, args, out: layouts.append(
                    out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
                )
            )
    model(torch.randn(3, 1, 28, 28))
    assert layouts[:3] == [True, True, True]  # the 3x3 map of the last block is too small to tell


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


@pytest.mark.parametrize("hidden", [0, -1])
def test_conv4_without_filters_is_refused(hidden):
    with pytest.raises(metakit.MetakitError, match=f"conv4 needs hidden >= 1 filters, got {hidden}"):
        metakit.create_backbone("conv4", hidden=hidden)


@pytest.mark.parametrize("hidden", [(0,), (40, -3)])
def test_mlp_without_units_is_refused(hidden):
    with pytest.raises(metakit.MetakitError) as error:
        metakit.create_backbone("mlp", hidden=hidden)
    assert str(error.value) == f"mlp needs hidden sizes >= 1, got {list(hidden)}"
