"""What a full-budget cell of the accuracy suite costs on this machine, per network: the
median seconds of a meta-iteration of each cell's own training run (``metakit bench
omniglot``'s configuration, validation off), and the hours that 60,000 of them take.

    python benchmarks/cell_cost.py --data-dir ../shared/data/omniglot [--device cpu]
        [-a maml] [-s 5w5s] [--network conv4-strided] [--iterations 5]

The first iteration of each run is not counted (warm-up). Validation and meta-testing
come on top of the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import torch

from metakit import MetakitError, train
from metakit.bench.accuracy import ALGORITHMS, FULL_BUDGET, SETTINGS, AccuracySettings, Cell, select_cells
from metakit.engine.run_dir import RunDirectory


def seconds_per_iteration(cell: Cell, network: str, iterations: int, args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as root:
        settings = AccuracySettings(
            cells=(cell,),
            budget=iterations + 1,
            root=Path(root),
            data_dir=args.data_dir,
            device=args.device,
            backbone=network,
            output=None,
        )
        settings.validate()
        config = dataclasses.replace(settings.config(cell), eval_every=0, log_every=1)
        run = train(config, progress=False)
        lines = RunDirectory(run.directory).metrics()[1:]
        return statistics.median(run.config.meta_batch / line["tasks_per_second"] for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, help="folder with the two Omniglot zips")
    parser.add_argument("--device", default="auto")
    parser.add_argument("-a", "--algorithm", action="append", help="maml or fomaml (default: both)")
    parser.add_argument("-s", "--setting", action="append", help="e.g. 5w5s (default: all four)")
    parser.add_argument("--network", action="append", help="default: conv4-strided and conv4, side by side")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per run")
    args = parser.parse_args()
    if args.iterations < 1:
        parser.error(f"--iterations must be at least 1, got {args.iterations}")
    networks = args.network or ["conv4-strided", "conv4"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print("| cell | network | s / meta-iteration | hours for 60,000 |")
    print("|---|---|---|---|")
    try:
        cells = select_cells(args.algorithm or ALGORITHMS, args.setting or SETTINGS, ["paper"])
        for cell in cells:
            for network in networks:
                seconds = seconds_per_iteration(cell, network, args.iterations, args)
                hours = seconds * FULL_BUDGET / 3600
                name = f"{cell.algorithm}-{cell.setting}"
                print(f"| {name} | {network} | {seconds:.3f} | {hours:.2f} |", flush=True)
    except MetakitError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
