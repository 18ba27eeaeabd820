"""MAML's meta-gradients against references written independently of metakit."""

import subprocess
import sys

import higher
import pytest
import torch
import torch.nn.functional as F

import metakit
from metakit import TaskBatch


def _classification_batch(tasks=3, ways=3, shots=2, queries=2, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(tasks, ways * shots, 1, size, size, generator=g, dtype=torch.float64)
    qx = torch.randn(tasks, ways * queries, 1, size, size, generator=g, dtype=torch.float64)
    sy = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1).contiguous()
    qy = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1).contiguous()
    return TaskBatch(sx, sy, qx, qy)


def _regression_batch(tasks=4, shots=5):
    g = torch.Generator().manual_seed(1)
    batch = metakit.SinusoidSampler(shots=shots).sample(tasks, g)
    return TaskBatch(*(t.double() for t in batch.tensors()))


def _setups():
    conv = ("conv4", {"input_shape": (1, 28, 28), "num_outputs": 3, "hidden": 8}, "classification")
    mlp = ("mlp", {"hidden": (16, 16)}, "regression")
    mlp_bn = (
        "mlp",
        {"input_shape": (1, 28, 28), "num_outputs": 3, "hidden": (16,), "batch_norm": True},
        "classification",
    )
    return {"conv4": conv, "mlp": mlp, "mlp-bn": mlp_bn}


def _build(setup, **hparams):
    torch.manual_seed(0)
    name, kwargs, problem = _setups()[setup]
    backbone = metakit.create_backbone(name, **kwargs).double()
    algorithm = metakit.create_algorithm("maml", backbone=backbone, problem=problem, **hparams)
    batch = _classification_batch() if problem == "classification" else _regression_batch()
    return algorithm, batch


def _metakit_gradient(algorithm, batch):
    algorithm.zero_grad()
    loss, _ = algorithm.meta_loss(batch)
    loss.backward()
    return {n: p.grad.clone() for n, p in algorithm.backbone.named_parameters()}, loss.detach()


def _reference_gradient(algorithm, batch, steps, lr, first_order):
    """Plain per-task loop with torch.autograd.grad, as most published MAML code reads."""
    model = algorithm.backbone
    names = [n for n, _ in model.named_parameters()]
    theta = [p for _, p in model.named_parameters()]
    loss_fn = F.cross_entropy if algorithm.problem == "classification" else F.mse_loss
    total = 0
    for i in range(batch.num_tasks):
        fast = theta
        for _ in range(steps):
            out = torch.func.functional_call(model, dict(zip(names, fast)), (batch.support_x[i],))
            grads = torch.autograd.grad(loss_fn(out, batch.support_y[i]), fast, create_graph=not first_order)
            fast = [w - lr * g for w, g in zip(fast, grads)]
        out = torch.func.functional_call(model, dict(zip(names, fast)), (batch.query_x[i],))
        total = total + loss_fn(out, batch.query_y[i])
    loss = total / batch.num_tasks
    return dict(zip(names, torch.autograd.grad(loss, theta))), loss.detach()


def _assert_close(found, expected, rtol=1e-10):
    """Errors relative to the largest gradient entry: some entries are exactly zero
    in theory (a convolution bias before BatchNorm) and rounding noise in practice."""
    scale = max(g.abs().max() for g in expected.values())
    for name in expected:
        error = (found[name] - expected[name]).abs().max() / scale
        assert error < rtol, f"{name}: error {error:.3g} relative to the largest gradient entry"


MAPPINGS = [
    (setup, mapping)
    for setup in ("conv4", "mlp", "mlp-bn")
    for mapping in ("loop", "threads", "processes", "vmap", "vmap-grouped")
    + (("loop-grouped", "threads-grouped", "processes-grouped") if setup == "conv4" else ())
]


@pytest.mark.parametrize(("setup", "mapping"), MAPPINGS)
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_plain_autograd_reference(setup, steps, first_order, mapping, torch_threads):
    """``-grouped``: tasks in groups of 2 through conv4's task-batched forward, or vmapped
    in chunks of 2 on any backbone (3 tasks: a group of 2 and one alone). Two torch
    threads, so that threads and processes run tasks in two workers on any machine."""
    torch_threads(2)
    mapping, grouped, _ = mapping.partition("-grouped")
    per_forward = 2 if grouped else 1
    algorithm, batch = _build(
        setup,
        inner_lr=0.3,
        inner_steps=steps,
        first_order=first_order,
        task_mapping=mapping,
        tasks_per_forward=per_forward,
    )
    found, found_loss = _metakit_gradient(algorithm, batch)
    expected, expected_loss = _reference_gradient(algorithm, batch, steps, 0.3, first_order)
    assert torch.allclose(found_loss, expected_loss, rtol=1e-12)
    _assert_close(found, expected)


@pytest.mark.parametrize("mapping", ["loop", "vmap"])
def test_second_order_gradient_equals_higher(mapping):
    steps, lr = 2, 0.2
    algorithm, batch = _build("conv4", inner_lr=lr, inner_steps=steps, task_mapping=mapping)
    found, _ = _metakit_gradient(algorithm, batch)

    model = algorithm.backbone
    model.zero_grad()
    inner_opt = torch.optim.SGD(model.parameters(), lr=lr)
    for i in range(batch.num_tasks):
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fmodel(batch.support_x[i]), batch.support_y[i]))
            (F.cross_entropy(fmodel(batch.query_x[i]), batch.query_y[i]) / batch.num_tasks).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    _assert_close(found, expected)


def test_first_and_second_order_differ_on_a_multistep_problem():
    second, batch = _build("conv4", inner_lr=0.3, inner_steps=3)
    first, _ = _build("conv4", inner_lr=0.3, inner_steps=3, first_order=True)
    g2, _ = _metakit_gradient(second, batch)
    g1, _ = _metakit_gradient(first, batch)
    difference = max(((g2[n] - g1[n]).abs().max() / g2[n].abs().max()).item() for n in g2)
    assert difference > 1e-3


def test_fomaml_is_registered_as_first_order_maml():
    backbone = metakit.create_backbone("mlp")
    algorithm = metakit.create_algorithm("fomaml", backbone=backbone, problem="regression", inner_steps=2)
    assert algorithm.hparams.first_order and algorithm.hparams.inner_steps == 2


def test_per_parameter_inner_learning_rates_are_differentiable():
    """Meta-SGD's learned step sizes: the kernel takes one tensor per parameter and
    the meta-gradient reaches them (checked against finite differences)."""
    torch.manual_seed(0)
    model = metakit.create_backbone("mlp", hidden=(8,)).double()
    batch = _regression_batch(tasks=1)
    params = dict(model.named_parameters())
    rates = {n: torch.full_like(p, 0.05, requires_grad=True) for n, p in params.items()}

    def meta_objective(rates):
        fast = metakit.adapt(
            model, params, {}, batch.support_x[0], batch.support_y[0], F.mse_loss, 2, rates, first_order=False
        )
        out = torch.func.functional_call(model, fast, (batch.query_x[0],))
        return F.mse_loss(out, batch.query_y[0])

    grads = torch.autograd.grad(meta_objective(rates), list(rates.values()))
    name = "head.bias"
    eps = 1e-6
    shifted = {n: (r + eps if n == name else r).detach() for n, r in rates.items()}
    lowered = {n: (r - eps if n == name else r).detach() for n, r in rates.items()}
    numeric = (meta_objective(shifted) - meta_objective(lowered)) / (2 * eps)
    assert torch.allclose(grads[list(rates).index(name)].sum(), numeric, rtol=1e-5)


def test_loop_mapping_and_evaluation_leave_torch_dynamo_unimported():
    """The first ``torch.func.grad`` of a process imports ``torch._dynamo`` (77 MB here);
    outside a vmap the inner loop uses ``torch.autograd.grad`` and must not pay for it."""
    code = (
        "import sys, torch, metakit\n"
        "from metakit.bench.configs import CONFIGS\n"
        "config = CONFIGS['paper-5w']\n"
        "backbone = config.backbone(0, torch.float32, 'cpu')\n"
        "batch = config.batch(0, torch.float32, 'cpu')\n"
        "maml = metakit.create_algorithm(\n"
        "    'maml', backbone=backbone, problem='classification', task_mapping='loop')\n"
        "maml.meta_loss(batch)[0].backward()\n"
        "maml.predict(maml.adapt(batch.support_x[0], batch.support_y[0]), batch.query_x[0])\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_tasks_per_forward_is_chosen_from_the_task_size_and_checked():
    algorithm, batch = _build("conv4")  # 6 support + 6 query examples per task
    assert algorithm._tasks_per_forward(batch) == 64 // 12
    vmapped, _ = _build("conv4", task_mapping="vmap")
    assert vmapped._tasks_per_forward(batch) == 1
    regression, _ = _build("mlp")
    assert regression._tasks_per_forward(_regression_batch()) == 1
    with pytest.raises(metakit.MetakitError, match="backbone MLP cannot run several tasks in one forward"):
        _build("mlp", tasks_per_forward=2)
