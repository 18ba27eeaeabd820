"""Named, seeded class splits that are the same on every machine.

A split is derived from the *sorted* class names and metakit's own permutation (a
Fisher-Yates shuffle driven by SplitMix64, written out here), never from file-system
order or the random generators of Python, numpy or torch, whose streams may change
between versions. Every split's class list is returned sorted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from metakit.errors import MetakitError

_MASK64 = (1 << 64) - 1


class SplitMix64:
    """Vigna's SplitMix64 generator: 64-bit state ``s``, ``s += 0x9E3779B97F4A7C15`` per draw,
    output = the state through two xor-shift-multiply rounds. Small, fast, fully specified."""

    def __init__(self, seed: int):
        self.state = seed & _MASK64

    def next(self) -> int:
        """The next uniform integer in ``[0, 2**64)``."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def below(self, bound: int) -> int:
        """A uniform integer in ``[0, bound)``, unbiased: draws in the incomplete last block of
        ``2**64 mod bound`` values are rejected."""
        limit = (1 << 64) - (1 << 64) % bound
        while (draw := self.next()) >= limit:
            pass
        return draw % bound


def seeded_permutation(n: int, seed: int) -> list[int]:
    """A uniformly random permutation of ``range(n)`` determined by ``seed`` alone
    (Fisher-Yates: for ``i = n-1 .. 1`` swap ``i`` with a uniform ``j`` in ``[0, i]``)."""
    rng = SplitMix64(seed)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def shuffled(names: Sequence[str], seed: int) -> list[str]:
    """``names`` sorted, then put in seeded random order."""
    ordered = sorted(names)
    return [ordered[i] for i in seeded_permutation(len(ordered), seed)]


def split_by_counts(names: Sequence[str], counts: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Consecutive runs of ``shuffled(names, seed)``, of ``counts[split]`` classes each, in
    the order of ``counts``; the counts must add up to ``len(names)``."""
    if sum(counts.values()) != len(names) or min(counts.values()) < 0:
        raise MetakitError(f"split sizes {counts} do not add up to the {len(names)} classes")
    order, splits, start = shuffled(names, seed), {}, 0
    for split, count in counts.items():
        splits[split] = sorted(order[start : start + count])
        start += count
    return splits


def split_by_ratios(names: Sequence[str], ratios: dict[str, float], seed: int) -> dict[str, list[str]]:
    """``split_by_counts`` with ``round(ratio * classes)`` classes per split, the first split
    taking the rounding remainder. Ratios are non-negative and add up to 1."""
    if min(ratios.values()) < 0 or abs(sum(ratios.values()) - 1) > 1e-6:
        raise MetakitError(f"split ratios {ratios} must be non-negative and add up to 1")
    first, *rest = ratios
    counts = {split: round(ratios[split] * len(names)) for split in rest}
    if sum(counts.values()) > len(names):
        raise MetakitError(f"split ratios {ratios} round to more than the {len(names)} classes")
    return split_by_counts(names, {first: len(names) - sum(counts.values()), **counts}, seed)


def split_from_files(names: Sequence[str], files: dict[str, str | os.PathLike]) -> dict[str, list[str]]:
    """Splits listed in text files, one class name (``class`` or ``group/class``) per line;
    blank lines and lines starting with ``#`` are skipped. Splits must be disjoint."""
    known, splits, owner = set(names), {}, {}
    for split, file in files.items():
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise MetakitError(f"cannot read the split file {file} ({error.strerror or error})") from error
        chosen = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        for name in chosen:
            if name not in known:
                raise MetakitError(f"split file {file} names class '{name}', which is not in the dataset")
            if owner.setdefault(name, split) != split:
                raise MetakitError(f"class '{name}' is in both split '{owner[name]}' and split '{split}'")
        splits[split] = sorted(set(chosen))
    return splits
