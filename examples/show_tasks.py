"""Save a PNG grid of a few sampled Omniglot tasks: one column per label, support rows on top,
query rows below, so you can see what the sampler produces.

    python examples/show_tasks.py --data-dir ../shared/data/omniglot --ways 5 --shots 1 --queries 3 \
        --rotation per-task --out tasks.png
"""

from __future__ import annotations

import argparse

import torch

import metakit


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", help="folder with images_background.zip and images_evaluation.zip")
    parser.add_argument("--cache-dir", help="writable folder for the decoded images")
    parser.add_argument("--download", action="store_true", help="download the zips when missing")
    parser.add_argument("--split", default="train", choices=["train", "validation", "test"])
    parser.add_argument("--convention", default="background-evaluation")
    parser.add_argument("--rotation", default="none")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--task-seed", type=int, default=0, help="seed of the generator that draws the tasks")
    parser.add_argument("--out", default="tasks.png")
    args = parser.parse_args()
    try:
        sampler = metakit.create_sampler(
            "omniglot",
            ways=args.ways,
            shots=args.shots,
            queries=args.queries,
            split=args.split,
            convention=args.convention,
            rotation=args.rotation,
            seed=args.seed,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            download=args.download,
        )
        batch = sampler.sample(args.tasks, torch.Generator().manual_seed(args.task_seed))
        path = metakit.save_task_grid(batch, args.out, max_tasks=args.tasks, max_query_rows=args.queries)
    except metakit.MetakitError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"saved {args.tasks} tasks of {sampler.fingerprint()['num_classes']} classes to {path}")


if __name__ == "__main__":
    main()
