"""Forward + backward of a LeNet-style CNN in Kiln and in PyTorch (CPU), side by side.

    python bench/engine_cnn.py          (needs torch: pip install torch==2.13.0)

Conv 1→16 k5 relu, MaxPool 2, Conv 16→32 k5 relu, MaxPool 2, Flatten, Dense 512→10 on a
batch of 64 28×28 images with logit cross-entropy; gradients only, no optimiser. Both run
interleaved in one process with 2 threads; target: Kiln / PyTorch <= 1.5.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved, machine, ratio_line
from kiln_engine import Chain, Conv, Dense, Flatten, MaxPool, gradient, losses, relu

TARGET = 1.5


def lenet() -> Chain:
    return Chain(Conv(5, 1, 16, relu), MaxPool(2), Conv(5, 16, 32, relu), MaxPool(2), Flatten(),
                 Dense(512, 10))


def copy_to_torch(model: Chain) -> torch.nn.Sequential:
    """The same network in torch, with Kiln's weights."""
    c1, _, c2, _, _, d = model.layers
    tmodel = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(512, 10))
    with torch.no_grad():
        for mod, layer in zip((tmodel[0], tmodel[3], tmodel[7]), (c1, c2, d)):
            mod.weight.copy_(torch.from_numpy(layer.weight))
            mod.bias.copy_(torch.from_numpy(layer.bias))
    return tmodel


def main() -> None:
    torch.set_num_threads(2)
    print(machine())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rng = np.random.default_rng(0)
    model = lenet()
    tmodel = copy_to_torch(model)
    x = rng.standard_normal((64, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def kiln() -> float:
        return gradient(lambda m: losses.logitcrossentropy(m(x), y), model)

    def peer() -> None:
        tmodel.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()

    (gk,) = kiln()
    peer()
    err = np.abs(gk.layers[0].weight - tmodel[0].weight.grad.numpy()).max()
    assert err < 1e-4, f"Kiln and torch disagree on the first conv's gradient by {err:.2e}"
    t = interleaved({"kiln": kiln, "torch": peer}, rounds=21, calls=10, warmup=10)
    print(ratio_line("LeNet CNN batch 64, fwd + bwd", t["kiln"], t["torch"], "torch", TARGET))


if __name__ == "__main__":
    main()
