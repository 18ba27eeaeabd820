"""The training engine: configs, run directories, training, evaluation, progress and plots."""

from metakit.engine.config import TrainConfig, load_config
from metakit.engine.evaluate import EvalResult, evaluate
from metakit.engine.train import Run, train

__all__ = ["EvalResult", "Run", "TrainConfig", "evaluate", "load_config", "train"]
