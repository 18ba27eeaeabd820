"""Omniglot data speed: first decode of all 32,460 images, cached load, tasks per second, and
sampling time as a fraction of one second-order MAML meta-iteration (conv4, one inner step)
on the same batch. The target is under 2%.

    python benchmarks/sampling.py --data-dir ../shared/data/omniglot [--device cpu]

The first decode uses a fresh temporary cache folder, so it always decodes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

import metakit
from metakit.errors import MetakitError

SHAPES = [(5, 1, 15, 32), (20, 1, 5, 16)]  # ways, shots, queries, tasks per batch


def timed(call: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def maml_iteration(sampler, batch) -> Callable[[], None]:
    backbone = metakit.create_backbone("conv4", input_shape=sampler.input_shape, num_outputs=sampler.ways)
    maml = metakit.create_algorithm(
        "maml", backbone=backbone, problem="classification", inner_lr=0.4, inner_steps=1
    ).to(sampler.device)

    def step() -> None:
        maml.zero_grad()
        loss, _ = maml.meta_loss(batch)
        loss.backward()
        if sampler.device.type == "cuda":
            torch.cuda.synchronize()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", help="folder with the two Omniglot zips")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sample-repeats", type=int, default=50)
    parser.add_argument("--maml-repeats", type=int, default=1)
    args = parser.parse_args()
    for option in ("sample_repeats", "maml_repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, load {load:.1f}"
    )

    def open_sampler(cache: str, **kwargs):
        return metakit.create_sampler(
            "omniglot", data_dir=args.data_dir, cache_dir=cache, device=args.device, **kwargs
        )

    try:
        measure(open_sampler, args.sample_repeats, args.maml_repeats)
    except MetakitError as error:
        parser.error(str(error))


def measure(open_sampler: Callable[..., metakit.TaskSampler], sample_repeats: int, maml_repeats: int) -> None:
    """Print the first decode and the cached load, then each shape's sampling and
    meta-iteration times; ``open_sampler(cache, **task_shape)`` opens Omniglot."""
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        open_sampler(cache)
        print(f"first decode of 32,460 images (both zips, 28x28): {time.perf_counter() - start:.2f} s")
        print(f"cached load: {timed(lambda: open_sampler(cache), 3) * 1e3:.0f} ms (median of 3)")
        for ways, shots, queries, tasks in SHAPES:
            sampler = open_sampler(cache, ways=ways, shots=shots, queries=queries)
            generator = torch.Generator().manual_seed(0)

            def sample(sampler=sampler, generator=generator, tasks=tasks):
                batch = sampler.sample(tasks, generator)
                if sampler.device.type == "cuda":
                    torch.cuda.synchronize()
                return batch

            sampling = timed(sample, sample_repeats)
            iteration = timed(maml_iteration(sampler, sample()), maml_repeats)
            print(
                f"{ways}-way {shots}-shot {queries}-query, {tasks} tasks: sampling {sampling * 1e3:.2f} ms "
                f"({tasks / sampling:,.0f} tasks/s); MAML meta-iteration {iteration * 1e3:.0f} ms "
                f"(median of {maml_repeats}); "
                f"sampling = {100 * sampling / iteration:.2f}% of it"
            )


if __name__ == "__main__":
    main()
