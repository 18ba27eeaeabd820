"""The rows of the speed table: metakit's mappings and orders, and the peers."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from metakit.backbones.backbone import Backbone
from metakit.bench import peers
from metakit.bench.configs import SpeedConfig
from metakit.bench.peers import MetaStep
from metakit.precision import autocast
from metakit.registry import create_algorithm
from metakit.task_batch import TaskBatch


@dataclass(frozen=True)
class Row:
    """One implementation: ``build(backbone, config) -> step``; ``step(batch)`` adds the
    meta-gradient of ``batch`` to the backbone's ``.grad``. ``requires`` names a package
    that must be importable (peers from optional extras). ``role``: ``metakit``, ``peer``
    (a peer as its users run it, on the textbook conv4), or ``diagnostic`` (a peer on
    metakit's conv4, which separates the network's share of a difference from the
    algorithm's; not counted as a peer). ``precision``: ``bf16`` rows run the meta-loss
    under bfloat16 autocast, which leaves the float64 gate's tensors alone: the gate checks
    their algorithm, the accuracy suite (``--precision bf16``) what the precision costs.
    The loop rows (the gate's reference) and ``metakit-threads-1`` run one task per forward
    (``tasks_per_forward=1``), ``metakit-vmap-8`` vmaps chunks of 8 tasks; the other rows group
    tasks as ``tasks_per_forward=0`` chooses (vmap: all tasks at once)."""

    name: str
    second_order: bool
    build: Callable[[Backbone, SpeedConfig], MetaStep]
    requires: str | None = None
    role: str = "peer"
    precision: str = "fp32"

    def installed(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


def metakit_maml(
    mapping: str, first_order: bool, precision: str = "fp32", tasks_per_forward: int = 0
) -> Callable[[Backbone, SpeedConfig], MetaStep]:
    """metakit's MAML with ``task_mapping=mapping``: ``loss, _ = meta_loss(batch); loss.backward()``,
    the meta-loss computed in ``precision`` as the engine does."""

    def build(backbone: Backbone, config: SpeedConfig) -> MetaStep:
        algorithm = create_algorithm(
            "maml",
            backbone=backbone,
            problem="classification",
            inner_lr=config.inner_lr,
            inner_steps=config.inner_steps,
            first_order=first_order,
            task_mapping=mapping,
            tasks_per_forward=tasks_per_forward,
        )

        def step(batch: TaskBatch) -> None:
            with autocast(precision, batch.support_x.device):
                loss, _ = algorithm.meta_loss(batch)
            loss.backward()

        return step

    return build


def metakit_row(
    name: str, mapping: str, second_order: bool = True, precision: str = "fp32", tasks_per_forward: int = 0
) -> Row:
    build = metakit_maml(mapping, not second_order, precision, tasks_per_forward)
    return Row(name, second_order, build, role="metakit", precision=precision)


ROWS = {
    row.name: row
    for row in (
        metakit_row("metakit-loop", "loop", tasks_per_forward=1),
        metakit_row("metakit-threads", "threads"),
        metakit_row("metakit-threads-1", "threads", tasks_per_forward=1),
        metakit_row("metakit-processes", "processes"),
        metakit_row("metakit-vmap", "vmap"),
        metakit_row("metakit-vmap-8", "vmap", tasks_per_forward=8),
        metakit_row("metakit-loop-1st", "loop", second_order=False, tasks_per_forward=1),
        metakit_row("metakit-threads-1st", "threads", second_order=False),
        metakit_row("metakit-vmap-1st", "vmap", second_order=False),
        metakit_row("metakit-bf16", "auto", precision="bf16"),
        Row("plain-loop", True, peers.on_textbook_conv4(peers.plain_loop)),
        Row("higher", True, peers.on_textbook_conv4(peers.higher_loop), requires="higher"),
        Row("learn2learn", True, peers.on_textbook_conv4(peers.learn2learn_maml), requires="learn2learn"),
        Row("plain-loop-metakit-conv4", True, peers.plain_loop, role="diagnostic"),
    )
}
