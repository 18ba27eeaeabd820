"""Build the sampler and the algorithm (on its backbone) that a TrainConfig names.

Samplers differ in what they take (Omniglot has ways and a split, sinusoid has
neither), so the engine passes each sampler the task options its factory
declares (``TASK_OPTIONS``) and the user's ``sampler_options`` as they are;
an option a factory does not take is an error naming the ones it does.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metakit.algorithms.algorithm import Algorithm
from metakit.data.sampler import TaskSampler
from metakit.engine.config import TrainConfig
from metakit.errors import MetakitError
from metakit.hyperparameters import Hyperparameters, json_value
from metakit.registry import Registry, algorithms, backbones, samplers

TASK_OPTIONS = ("ways", "shots", "queries", "split", "device")
BACKBONE_SHAPE_OPTIONS = ("input_shape", "num_outputs")


def factory_options(factory: Callable[..., Any]) -> dict[str, Any] | None:
    """Keyword options of a factory with their defaults (``inspect.Parameter.empty`` if
    required); ``None`` if it takes ``**kwargs`` (anything goes)."""
    options = {}
    for parameter in inspect.signature(factory).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            options[parameter.name] = parameter.default
    return options


def hyperparameter_class(factory: Callable[..., Any]) -> type[Hyperparameters] | None:
    """The ``Hyperparameters`` dataclass of an algorithm class, or of the class a factory
    function is annotated to return (``def fomaml(...) -> MAML``)."""
    found = getattr(factory, "Hyperparameters", None)
    if found is None and not isinstance(factory, type):
        returned = typing.get_type_hints(factory).get("return")
        found = getattr(returned, "Hyperparameters", None)
    return found


def hyperparameter_names(algorithm: str) -> list[str]:
    found = hyperparameter_class(algorithms.get(algorithm))
    return [field.name for field in dataclasses.fields(found)] if found else []


def resolve(config: TrainConfig) -> TrainConfig:
    """``config.resolved()`` with the sampler's and backbone's default options written out,
    so that the saved config says everything the run used."""
    config = config.resolved(hyperparameter_names(config.algorithm))
    sampler_options = _defaults(samplers, config.sampler, TASK_OPTIONS) | config.sampler_options
    for folder in ("data_dir", "cache_dir"):  # absolute: the run can be evaluated from any folder
        if sampler_options.get(folder) is not None:
            sampler_options[folder] = str(Path(sampler_options[folder]).expanduser().resolve())
    return dataclasses.replace(
        config,
        sampler_options=sampler_options,
        backbone_options=_defaults(backbones, config.backbone, BACKBONE_SHAPE_OPTIONS)
        | config.backbone_options,
    )


def build_sampler(config: TrainConfig, split: str, queries: int, device: torch.device) -> TaskSampler:
    """The sampler of a resolved ``config`` for ``split`` with ``queries`` per class."""
    factory = samplers.get(config.sampler)
    task = {"ways": config.ways, "shots": config.shots, "queries": queries, "split": split}
    task["device"] = str(device)
    _check_options(samplers, config.sampler, config.sampler_options, TASK_OPTIONS)
    accepted = factory_options(factory)
    task = {name: value for name, value in task.items() if accepted is None or name in accepted}
    return factory(**task, **config.sampler_options)


def build_algorithm(config: TrainConfig, sampler: TaskSampler, **overrides: Any) -> Algorithm:
    """The algorithm of a resolved ``config`` on a fresh backbone shaped for ``sampler``'s tasks;
    ``overrides`` replace hyperparameters. Initialised from the global torch RNG."""
    _check_options(backbones, config.backbone, config.backbone_options, BACKBONE_SHAPE_OPTIONS)
    backbone = backbones.create(
        config.backbone,
        input_shape=sampler.input_shape,
        num_outputs=sampler.num_outputs,
        **config.backbone_options,
    )
    return algorithms.create(
        config.algorithm, backbone=backbone, problem=sampler.problem, **(config.hyperparameters | overrides)
    )


def _defaults(registry: Registry, name: str, engine_options: tuple[str, ...]) -> dict[str, Any]:
    options = factory_options(registry.get(name)) or {}
    return {
        option: json.loads(json.dumps(default, default=str))
        for option, default in options.items()
        if option not in engine_options and default is not inspect.Parameter.empty
    }


def _check_options(registry: Registry, name: str, given: dict[str, Any], engine_options: tuple[str, ...]):
    taken = sorted(set(given) & set(engine_options))
    if taken:
        raise MetakitError(
            f"{registry.kind} option {', '.join(taken)} is set by the engine; "
            f"use the top-level option ({', '.join(taken)}) instead"
        )
    accepted = factory_options(registry.get(name))
    unknown = sorted(set(given) - set(accepted)) if accepted is not None else []
    if unknown:
        known = [option for option in accepted if option not in engine_options]
        raise MetakitError(
            f"{registry.kind} '{name}' has no option {', '.join(unknown)}; its options: {', '.join(known)}"
        )
    _check_values(registry, name, given)
    required = [option for option, default in (accepted or {}).items() if default is inspect.Parameter.empty]
    missing = [option for option in required if option not in given and option not in engine_options]
    if missing:
        raise MetakitError(
            f"{registry.kind} '{name}' needs option {', '.join(missing)}: "
            f"set it in the [{registry.kind}_options] table of a --config file"
        )


def _check_values(registry: Registry, name: str, given: dict[str, Any]) -> None:
    """Each given option's value against the type its factory declares, where it declares
    one that this module can resolve (a plugin's may not be). A factory's own default, as
    ``resolve`` writes it out, always passes."""
    factory = registry.get(name)
    try:
        hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    except (NameError, TypeError):
        return
    defaults = _defaults(registry, name, ())
    for option, value in given.items():
        if option in hints and not (option in defaults and value == defaults[option]):
            try:
                json_value(option, value, hints[option])
            except MetakitError as error:
                raise MetakitError(f"{registry.kind} '{name}': {error}") from None


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise MetakitError(f"unknown device '{name}'; use auto, cpu or cuda") from error
    if device.type not in ("cpu", "cuda", "mps"):
        raise MetakitError(f"metakit does not run on device '{name}'; use auto, cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MetakitError("device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise MetakitError(
            f"device {name} was asked for but torch sees {torch.cuda.device_count()} CUDA GPU(s), "
            "numbered from 0; use cuda or auto"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise MetakitError(
            "device mps was asked for but torch sees no MPS (Apple) GPU; use --device cpu or auto"
        )
    return device


def load_algorithm_state(algorithm: Algorithm, state: dict[str, Any], source: str) -> None:
    """Load meta-parameters, refusing a checkpoint made for another network."""
    own = algorithm.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise MetakitError(
            f"checkpoint {source} does not fit this algorithm and backbone; it is another run's"
        )
    algorithm.load_state_dict(state)
