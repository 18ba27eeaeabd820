"""Hyperparameter dataclasses round-trip through JSON and reject bad values."""

import enum
import os
from pathlib import Path
from typing import Literal, Protocol

import pytest

from metakit import MAMLHyperparameters, MetakitError
from metakit.hyperparameters import json_value


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


class _Mode(str, enum.Enum):
    A = "a"


class _Sized(Protocol):
    def __len__(self) -> int: ...


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        ([1, 2], tuple[float, float], (1.0, 2.0)),
        ([1, "a"], tuple[int, str], (1, "a")),
        ([], tuple[int, ...], ()),
        ("b", Literal["a", "b"], "b"),
        ("data", str | os.PathLike | None, "data"),
        ("data", Path, "data"),  # a path option takes a string
        ([8, "a"], tuple, (8, "a")),
        ([1, None], tuple[int | None, ...], (1, None)),
        ("a", _Mode, "a"),  # JSON holds no Enum: not checked
        (3, _Sized, 3),  # isinstance cannot test a Protocol that is not runtime-checkable: not checked
    ],
)
def test_option_values_that_fit_their_annotation(value, hint, expected):
    assert json_value("o", value, hint) == expected


@pytest.mark.parametrize(
    ("value", "hint", "message"),
    [
        ([1, 2, 3], tuple[float, float], "option o must be a list of 2, got [1, 2, 3]"),
        (["1"], tuple[int, ...], "option o must be a list, got ['1']"),
        ("c", Literal["a", "b"], "option o must be one of 'a', 'b', got 'c'"),
        (5, str | os.PathLike | None, "option o must be str or PathLike or null, got 5"),
        ([1, "x"], tuple[int | None, ...], "option o must be a list, got [1, 'x']"),
        (None, int, "option o must be int, got None"),
    ],
)
def test_option_values_that_do_not_fit_are_one_line_errors(value, hint, message):
    with pytest.raises(MetakitError) as raised:
        json_value("o", value, hint)
    assert str(raised.value) == message
