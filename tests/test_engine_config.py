"""TrainConfig: the paper's defaults per number of ways, config files, overrides, checked options."""

from pathlib import Path

import pytest

from metakit import MetakitError, TrainConfig, load_config
from metakit.engine.components import hyperparameter_names, resolve

MAML = ["inner_lr", "inner_steps", "eval_inner_steps", "first_order", "task_mapping", "tasks_per_forward"]


@pytest.mark.parametrize(
    ("ways", "meta_batch", "steps", "lr", "eval_steps"),
    [(5, 32, 1, 0.4, 3), (20, 16, 5, 0.1, 5)],
)
def test_omniglot_defaults_are_the_maml_papers(ways, meta_batch, steps, lr, eval_steps):
    config = TrainConfig(ways=ways, shots=5).resolved(MAML)
    assert config.meta_batch == meta_batch and config.queries == 5 and config.meta_lr == 0.001
    assert config.hyperparameters == {"inner_steps": steps, "inner_lr": lr, "eval_inner_steps": eval_steps}


def test_explicit_settings_win_and_only_the_algorithms_own_hyperparameters_are_filled():
    config = TrainConfig(ways=20, meta_batch=8, queries=3, hyperparameters={"inner_lr": 0.2}).resolved(
        ["inner_lr", "temperature"]
    )
    assert (config.meta_batch, config.queries, config.hyperparameters) == (8, 3, {"inner_lr": 0.2})


def test_fomaml_gets_the_hyperparameters_of_maml_through_its_return_annotation():
    assert hyperparameter_names("fomaml") == MAML


def test_resolve_writes_out_the_samplers_and_backbones_defaults():
    config = resolve(TrainConfig(sampler="sinusoid", backbone="mlp", shots=10))
    assert config.sampler_options == {
        "amplitude": [0.1, 5.0],
        "phase": [0.0, 3.141592653589793],
        "x_range": [-5.0, 5.0],
    }
    assert config.backbone_options == {"hidden": [40, 40], "batch_norm": False}
    assert config.meta_batch == 25 and config.hyperparameters["inner_lr"] == 0.01


def test_a_toml_file_with_command_line_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('algorithm = "fomaml"\nways = 20\niterations = 100\n[hyperparameters]\ninner_lr = 0.3\n')
    config = load_config(path).merged({"iterations": 7, "hyperparameters": {"inner_steps": 2}, "seed": None})
    assert (config.algorithm, config.ways, config.iterations, config.seed) == ("fomaml", 20, 7, 0)
    assert config.hyperparameters == {"inner_lr": 0.3, "inner_steps": 2}
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("file", "ways", "meta_batch"),
    [("fomaml_reproduction.toml", 5, 32), ("fomaml_reproduction_20w1s.toml", 20, 8)],
)
def test_the_reproduction_examples_keep_their_settings_over_the_papers_defaults(file, ways, meta_batch):
    config = resolve(load_config(Path(__file__).parents[1] / "examples" / file))
    assert (config.algorithm, config.ways, config.shots, config.queries) == ("fomaml", ways, 1, 15)
    assert (config.meta_batch, config.meta_lr) == (meta_batch, 1e-3)
    assert config.hyperparameters == {"inner_steps": 5, "inner_lr": 0.1, "eval_inner_steps": 10}
    assert (config.sampler_options["convention"], config.sampler_options["rotation"]) == (
        "background-evaluation",
        "none",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wayz = 5\n", "run.toml: unknown option wayz; known: algorithm, backbone"),
        ('ways = "five"\n', "run.toml: option ways must be int, got 'five'"),
        ("meta_lr = true\n", "run.toml: option meta_lr must be float, got True"),
        ("shots = 0\n", "option shots must be at least 1, got 0"),
        ("ways = \n", "config file {path} is not valid TOML: "),
        ("meta_lr = nan\n", "option meta_lr must be a positive number, got nan"),
        ("meta_lr = inf\n", "option meta_lr must be a positive number, got inf"),
        ("minutes = nan\n", "option minutes must be 0 (no limit) or more, got nan"),
        (
            "seed = 9223372036854775808\n",
            "the seed must be between -2**63 and 2**63 - 1, got 9223372036854775808",
        ),
        (b"\xff\xfe\x00\x01", "config file {path} is not text ("),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "run.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(MetakitError) as error:
        load_config(path)
    assert str(error.value).replace(str(tmp_path) + "/", "").startswith(message.format(path="run.toml"))
    assert "\n" not in str(error.value)
