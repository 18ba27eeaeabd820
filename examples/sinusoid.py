"""Meta-train MAML on sinusoid regression from Python (Finn et al. 2017, section 5.1).

    python examples/sinusoid.py --iterations 3000

Prints the query MSE of unseen tasks before and after one adaptation step.
"""

import argparse

import torch
import torch.nn.functional as F

import metakit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    sampler = metakit.create_sampler("sinusoid", shots=args.shots)
    backbone = metakit.create_backbone("mlp", hidden=(40, 40))
    maml = metakit.create_algorithm(
        "maml", backbone=backbone, problem=sampler.problem, inner_lr=0.01, inner_steps=1, eval_inner_steps=1
    )
    optimizer = torch.optim.Adam(maml.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    for iteration, batch in zip(range(1, args.iterations + 1), sampler.batches(25, generator)):
        loss, _ = maml.meta_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if iteration % 500 == 0:
            print(f"iteration {iteration}: meta-train query MSE {loss.item():.3f}")

    before, after = [], []
    for tasks in sampler.fixed_tasks(600, seed=args.seed + 1):
        for i in range(tasks.num_tasks):
            adapted = maml.adapt(tasks.support_x[i], tasks.support_y[i])
            after.append(F.mse_loss(maml.predict(adapted, tasks.query_x[i]), tasks.query_y[i]))
            before.append(F.mse_loss(backbone(tasks.query_x[i]), tasks.query_y[i]))
    print(
        f"600 unseen tasks, {args.shots}-shot: query MSE {torch.stack(before).mean():.3f} before adaptation, "
        f"{torch.stack(after).mean():.3f} after one step"
    )


if __name__ == "__main__":
    main()
