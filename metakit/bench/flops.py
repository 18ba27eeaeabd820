"""FLOPs of one MAML meta-iteration on conv4, counted from the layer shapes.

Only convolutions and the linear head are counted (BatchNorm, ReLU, pooling
and the loss are elementwise and cheap in FLOPs); a multiply-add is 2 FLOPs.
Write ``F_l(n)`` for the forward cost of layer ``l`` on ``n`` images:
``2 n C_out H W C_in 9`` for a 3x3 convolution whose output is ``H x W``,
``2 n d_in d_out`` for the head. Layer ``l`` computes ``a_l = W_l h_{l-1}``.

- A backward pass costs ``2 F_l`` per layer: ``dW_l = delta_l h_{l-1}^T`` and
  ``dh_{l-1} = W_l^T delta_l``; the first layer skips ``dh_0`` (the images need
  no gradient), so it costs ``F_1``.
- An inner step costs a forward and a backward on the support set:
  ``3 F_l(n_s)`` (``2 F_1``). The query loss costs the same on the query set.
- First order stops at that: the meta-gradient is the query gradient at the
  adapted weights.
- Second order also differentiates each inner step. Both products of its
  backward are bilinear, so each has two derivatives of cost ``F_l``
  (``4 F_l``), and the activations they read depend on the weights, so the
  forward is differentiated again (``2 F_l``): ``6 F_l`` more per layer and
  step, ``2 F_1`` for the first layer (its ``dh_0`` and ``d/dh_0`` are not needed).
  An inner step then costs ``9 F_l(n_s)`` (``4 F_1``).

Per meta-iteration, ``tasks * [steps * sum_l k_l F_l(n_s) + sum_l q_l F_l(n_q)]``
with ``k = (2, 3, 3, ...)`` first order, ``(4, 9, 9, ...)`` second order and
``q = (2, 3, 3, ...)``. This is the work the algorithm needs, and what metakit's
convolution computes. torch's own convolution double-backward, which the peers
run, also computes one product the first layer does not need (``F_1(n_s)`` more
per task and inner step, seen with ``torch.utils.flop_counter.FlopCounterMode``);
it is not counted.
"""

from __future__ import annotations

from metakit.bench.configs import SpeedConfig


def layer_flops(config: SpeedConfig, images: int) -> list[int]:
    """Forward FLOPs ``[F_1, ..., F_4, F_head]`` of conv4 (3x3 convolutions, padding 1,
    each followed by a 2x2 max-pool) on ``images`` inputs."""
    flops = []
    size, channels = config.image_size, 1
    for _ in range(4):
        flops.append(2 * images * config.hidden * size * size * channels * 9)
        size, channels = size // 2, config.hidden
    flops.append(2 * images * config.hidden * size * size * config.ways)
    return flops


def meta_iteration_flops(config: SpeedConfig, second_order: bool) -> int:
    """FLOPs of one meta-gradient of a batch (derivation in the module docstring)."""
    support = layer_flops(config, config.ways * config.shots)
    query = layer_flops(config, config.ways * config.queries)
    pass_costs = [2] + [3] * (len(support) - 1)
    step_costs = [4] + [9] * (len(support) - 1) if second_order else pass_costs
    inner = config.inner_steps * sum(k * f for k, f in zip(step_costs, support))
    outer = sum(k * f for k, f in zip(pass_costs, query))
    return config.tasks * (inner + outer)
