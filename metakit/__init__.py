"""metakit: pluggable meta-learning for PyTorch, with all tasks of a batch mapped through torch.func."""

from metakit.algorithms.algorithm import Algorithm
from metakit.algorithms.maml import MAML, MAMLHyperparameters
from metakit.backbones.backbone import Backbone
from metakit.backbones.conv4 import Conv4
from metakit.backbones.mlp import MLP
from metakit.data.image_folder import ImageFolderSampler
from metakit.data.omniglot import omniglot  # noqa: F401  (imported to register the "omniglot" sampler)
from metakit.data.sampler import TaskSampler
from metakit.data.sinusoid import SinusoidSampler
from metakit.data.task_grid import save_task_grid
from metakit.engine import EvalResult, Run, TrainConfig, evaluate, load_config, train
from metakit.errors import MetakitError
from metakit.hyperparameters import Hyperparameters
from metakit.inner_loop import adapt
from metakit.registry import (
    create_algorithm,
    create_backbone,
    create_sampler,
    list_algorithms,
    list_backbones,
    list_samplers,
    register_algorithm,
    register_backbone,
    register_sampler,
)
from metakit.task_batch import TaskBatch
from metakit.task_mapping import mapped_meta_loss

__version__ = "0.1.0"

__all__ = [
    "Algorithm",
    "Backbone",
    "Conv4",
    "Hyperparameters",
    "ImageFolderSampler",
    "MAML",
    "MAMLHyperparameters",
    "MLP",
    "MetakitError",
    "EvalResult",
    "SinusoidSampler",
    "Run",
    "TaskBatch",
    "TaskSampler",
    "TrainConfig",
    "adapt",
    "create_algorithm",
    "create_backbone",
    "create_sampler",
    "evaluate",
    "list_algorithms",
    "list_backbones",
    "list_samplers",
    "load_config",
    "mapped_meta_loss",
    "register_algorithm",
    "register_backbone",
    "register_sampler",
    "train",
    "save_task_grid",
]
