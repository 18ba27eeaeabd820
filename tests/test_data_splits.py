import itertools
import random
from collections import Counter

import numpy as np
import pytest
import torch

from metakit.data.splits import (
    SplitMix64,
    seeded_permutation,
    shuffled,
    split_by_counts,
    split_by_ratios,
    split_from_files,
)
from metakit.errors import MetakitError


def test_splitmix64_matches_the_published_reference_sequence():
    # First outputs of Vigna's splitmix64.c for seed 1234567 (as listed on Rosetta Code).
    rng = SplitMix64(1234567)
    expected = [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]
    assert [rng.next() for _ in range(5)] == expected


def test_bounded_draws_are_unbiased_and_in_range():
    rng = SplitMix64(7)
    draws = [rng.below(6) for _ in range(60_000)]
    counts = Counter(draws)
    assert set(counts) == set(range(6))
    # Each face 10,000 times in expectation, standard deviation ~91: 5 sigma is a real test.
    assert all(abs(count - 10_000) < 460 for count in counts.values())


def test_permutation_is_uniform_over_all_orders():
    orders = Counter(tuple(seeded_permutation(3, seed)) for seed in range(6_000))
    assert set(orders) == set(itertools.permutations(range(3)))
    assert all(abs(count - 1_000) < 160 for count in orders.values())  # sd ~29


def test_permutation_ignores_global_random_state():
    first = seeded_permutation(50, seed=3)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    assert seeded_permutation(50, seed=3) == first
    assert sorted(first) == list(range(50))
    assert seeded_permutation(50, seed=4) != first


def test_shuffle_depends_on_the_names_not_their_input_order():
    names = [f"c{i:03d}" for i in range(40)]
    assert shuffled(names, 5) == shuffled(list(reversed(names)), 5)


def test_split_by_counts_is_disjoint_complete_and_sorted():
    names = [f"c{i:03d}" for i in range(30)]
    splits = split_by_counts(names, {"train": 20, "validation": 4, "test": 6}, seed=1)
    assert [len(s) for s in splits.values()] == [20, 4, 6]
    assert sorted(itertools.chain(*splits.values())) == names
    assert all(s == sorted(s) for s in splits.values())
    assert splits == split_by_counts(names, {"train": 20, "validation": 4, "test": 6}, seed=1)
    assert splits != split_by_counts(names, {"train": 20, "validation": 4, "test": 6}, seed=2)


def test_split_by_ratios_rounds_and_gives_the_remainder_to_the_first_split():
    names = [f"c{i:02d}" for i in range(11)]
    splits = split_by_ratios(names, {"train": 0.7, "validation": 0.15, "test": 0.15}, seed=0)
    assert [len(s) for s in splits.values()] == [7, 2, 2]


@pytest.mark.parametrize(
    "ratios, message",
    [
        (
            {"train": 0.5, "test": 0.4},
            "split ratios {'train': 0.5, 'test': 0.4} must be non-negative and add up to 1",
        ),
        (
            {"train": 1.2, "test": -0.2},
            "split ratios {'train': 1.2, 'test': -0.2} must be non-negative and add up to 1",
        ),
    ],
)
def test_bad_ratios_are_one_line_errors(ratios, message):
    with pytest.raises(MetakitError) as error:
        split_by_ratios(["a", "b"], ratios, seed=0)
    assert str(error.value) == message


def test_split_sizes_that_do_not_add_up_are_an_error():
    with pytest.raises(MetakitError, match="^split sizes .* do not add up to the 3 classes$"):
        split_by_counts(["a", "b", "c"], {"train": 2, "test": 2}, seed=0)


def test_split_files_list_classes(tmp_path):
    (tmp_path / "train.txt").write_text("# training classes\ng/b\n\ng/a\n")
    (tmp_path / "test.txt").write_text("g/c\n")
    splits = split_from_files(
        ["g/a", "g/b", "g/c"], {"train": tmp_path / "train.txt", "test": tmp_path / "test.txt"}
    )
    assert splits == {"train": ["g/a", "g/b"], "test": ["g/c"]}


def test_split_file_errors(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    (tmp_path / "b.txt").write_text("y\n")
    (tmp_path / "c.txt").write_text("x\n")
    with pytest.raises(MetakitError) as error:
        split_from_files(["x"], {"train": tmp_path / "b.txt"})
    assert str(error.value) == f"split file {tmp_path / 'b.txt'} names class 'y', which is not in the dataset"
    with pytest.raises(MetakitError) as error:
        split_from_files(["x"], {"train": tmp_path / "a.txt", "test": tmp_path / "c.txt"})
    assert str(error.value) == "class 'x' is in both split 'train' and split 'test'"
    with pytest.raises(MetakitError, match="^cannot read the split file .*missing.txt"):
        split_from_files(["x"], {"train": tmp_path / "missing.txt"})
