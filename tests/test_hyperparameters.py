"""Hyperparameter dataclasses round-trip through JSON and reject bad values."""

import pytest

from metakit import MAMLHyperparameters, MetakitError


def test_round_trip_through_json():
    hparams = MAMLHyperparameters(inner_lr=0.1, inner_steps=5, first_order=True)
    assert MAMLHyperparameters.from_json(hparams.to_json()) == hparams


def test_int_is_accepted_for_a_float():
    assert MAMLHyperparameters.from_dict({"inner_lr": 1}).inner_lr == 1.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"inner_lrr": 0.1}, "has no option inner_lrr"),
        ({"inner_steps": "5"}, "option inner_steps must be int"),
        ({"inner_steps": True}, "option inner_steps must be int"),
    ],
)
def test_bad_values_are_one_line_errors(values, message):
    with pytest.raises(MetakitError, match=message):
        MAMLHyperparameters.from_dict(values)
