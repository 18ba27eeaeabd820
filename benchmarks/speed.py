"""Speed and memory of one MAML meta-iteration, metakit against its peers: the same suite as
``metakit bench speed`` (run ``python benchmarks/speed.py --help`` for the options)."""

import typer

from metakit.bench.cli import speed

if __name__ == "__main__":
    typer.run(speed)
