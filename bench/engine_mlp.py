"""Forward + backward of an MLP in Kiln and in PyTorch (CPU), side by side in one process.

    python bench/engine_mlp.py          (needs torch: pip install torch==2.13.0)

Cases (issue 2): MLP 784-512-512-10 at batch 32, 128, 512 with logit cross-entropy
(targets: ratio <= 1.0 at 128 and 512), and a 2-layer MLP 10-32-1 at batch 1 with a
squared error (target: <= 0.5, the per-primitive overhead).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved, machine, ratio_line
from kiln_engine import Chain, Dense, gradient, losses, relu


def copy_to_torch(model: Chain) -> torch.nn.Sequential:
    """A torch MLP with the same weights as a Kiln Chain of Dense layers."""
    mods: list[torch.nn.Module] = []
    for i, layer in enumerate(model.layers):
        lin = torch.nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(layer.weight))
            lin.bias.copy_(torch.from_numpy(layer.bias))
        mods.append(lin)
        if i < len(model.layers) - 1:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods)


def mlp_case(batch: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    model = Chain(Dense(784, 512, relu), Dense(512, 512, relu), Dense(512, 10))
    tmodel = copy_to_torch(model)
    x = rng.standard_normal((batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def kiln() -> None:
        gradient(lambda m: losses.logitcrossentropy(m(x), y), model)

    def peer() -> None:
        tmodel.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()

    t = interleaved({"kiln": kiln, "torch": peer}, rounds=15, calls=5)
    return t["kiln"], t["torch"]


def tiny_case() -> tuple[float, float]:
    rng = np.random.default_rng(0)
    model = Chain(Dense(10, 32, relu), Dense(32, 1))
    tmodel = copy_to_torch(model)
    x = rng.standard_normal((1, 10), dtype=np.float32)
    y = rng.standard_normal((1, 1), dtype=np.float32)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def kiln() -> None:
        gradient(lambda m: losses.mse(m(x), y), model)

    def peer() -> None:
        tmodel.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(tmodel(tx), ty).backward()

    t = interleaved({"kiln": kiln, "torch": peer}, rounds=21, calls=500)
    return t["kiln"], t["torch"]


def main() -> None:
    torch.set_num_threads(2)
    print(machine())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for batch in (32, 128, 512):
        k, p = mlp_case(batch)
        target = 1.0 if batch >= 128 else float("inf")
        print(ratio_line(f"MLP 784-512-512-10 batch {batch}", k, p, "torch", target))
    k, p = tiny_case()
    print(ratio_line("MLP 10-32-1 batch 1 (overhead)", k, p, "torch", 0.5))


if __name__ == "__main__":
    main()
