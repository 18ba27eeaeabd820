"""MAML and FOMAML accuracy on Omniglot beside the published numbers: the same suite as
``metakit bench omniglot`` (run ``python benchmarks/omniglot_accuracy.py --help`` for the options)."""

import typer

from metakit.bench.cli import omniglot

if __name__ == "__main__":
    typer.run(omniglot)
