"""`make run` until the server exists: train an MLP on scikit-learn's digits with the engine.

    python -m kiln_engine.demo [--epochs N] [--seed S]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import Chain, Dense, gradient, losses, relu
from .random import seed as seed_rng


def load_digits_split(seed: int) -> tuple[np.ndarray, ...]:
    """Digits scaled to [0, 1], shuffled and split 80/20 into train and validation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def main(argv: list[str] | None = None) -> int:
    """Train, printing one line per epoch; stop at 95% validation accuracy."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args(argv)
    seed_rng(args.seed)
    xtr, ytr, xva, yva = load_digits_split(args.seed)
    model = Chain(enc=Chain(Dense(64, 128, relu)), dec=Chain(Dense(128, 10)))
    order_rng = np.random.default_rng(args.seed)
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        order = order_rng.permutation(len(xtr))
        total = 0.0
        for start in range(0, len(xtr), 32):
            idx = order[start:start + 32]
            x, y = xtr[idx], ytr[idx]
            (g,) = gradient(lambda m: losses.logitcrossentropy(m(x), y), model)
            for layer, lg in ((model.layers.enc.layers[0], g.layers.enc.layers[0]),
                              (model.layers.dec.layers[0], g.layers.dec.layers[0])):
                layer.weight -= args.lr * lg.weight
                layer.bias -= args.lr * lg.bias
            total += float(losses.logitcrossentropy(model(x), y)) * len(idx)
        acc = float(np.mean(model(xva).argmax(axis=1) == yva))
        print(f"epoch {epoch:3d}  train loss {total / len(xtr):.4f}  val acc {acc:.3f}  "
              f"({time.perf_counter() - t0:.2f} s)")
        if acc >= 0.95:
            print(f"reached {acc:.3f} validation accuracy after {epoch} epochs")
            return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
