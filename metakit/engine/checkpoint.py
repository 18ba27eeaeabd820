"""Checkpoints: everything needed to continue a run exactly, written atomically, loaded safely.

A checkpoint is a plain dict of tensors and JSON values::

    {"format": 1, "iteration": int, "wall_time": float, "best_score": float | None,
     "algorithm": state_dict, "optimizer": state_dict, "config": TrainConfig dict,
     "rng": {"torch": ByteTensor, "tasks": ByteTensor, "cuda": [ByteTensor, ...]}}

It is read with ``torch.load(weights_only=True)``, which refuses anything but
tensors and primitive containers, so opening a checkpoint can never run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from metakit.atomic_file import atomic_write, write_failure
from metakit.errors import MetakitError

FORMAT = 1


def capture_rng(tasks: torch.Generator) -> dict[str, Any]:
    """The state of every generator a run draws from: the global torch RNG (initialisation,
    and any randomness inside algorithms), CUDA's, and the task generator."""
    state = {"torch": torch.get_rng_state(), "tasks": tasks.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], tasks: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    tasks.set_state(state["tasks"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    try:
        atomic_write(path, lambda file: torch.save({"format": FORMAT, **checkpoint}, file))
    except RuntimeError as error:
        if "PytorchStreamWriter" not in str(error):  # how torch's zip writer reports a failed write
            raise
        raise write_failure(path, str(error).strip().splitlines()[-1]) from error


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` on the CPU; a missing, corrupt or foreign file is a MetakitError."""
    if not path.is_file():
        raise MetakitError(f"no checkpoint {path}; train the run first")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        raise MetakitError(
            f"checkpoint {path} is corrupt or not a metakit checkpoint ({type(error).__name__}); "
            "restore it from a copy or train the run again"
        ) from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise MetakitError(f"checkpoint {path} is not a metakit checkpoint of format {FORMAT}")
    fields = {"iteration": int, "wall_time": (int, float), "algorithm": dict, "config": dict}
    complete = all(isinstance(checkpoint.get(name), kind) for name, kind in fields.items())
    complete = complete and checkpoint["iteration"] >= 0 and checkpoint["wall_time"] >= 0
    complete = complete and (
        checkpoint.get("best_score", "") is None or isinstance(checkpoint["best_score"], float)
    )
    if not complete or not all(isinstance(value, torch.Tensor) for value in checkpoint["algorithm"].values()):
        raise MetakitError(f"checkpoint {path} lacks part of a metakit checkpoint; restore it from a copy")
    return checkpoint
