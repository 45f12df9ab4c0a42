"""A whole training step, and the optimiser update alone, in Kiln and PyTorch (CPU).

    python bench/engine_train_step.py          (needs torch: pip install torch==2.13.0)

Cases (issue 3), interleaved in one process, medians, ratios printed:
- MLP 784-512-512-10, batch 128, forward + backward + Adam: Kiln vs
  torch.optim.Adam(foreach=True) (target ratio <= 1.0) and Adam(fused=True) (<= 1.2).
- Adam update alone over 10M parameters in 1,000 arrays: Kiln vs Adam(foreach=True)
  (target <= 1.0); Adam(fused=True) shown for reference.
Kiln's update runs the fused per-leaf kernels (kiln_engine/optimisers/_fused.py, numba's
builds of kiln_engine/kernels/optimisers.py); the numpy reference path is timed too, to
show what fusion buys.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved, machine, ratio_line
from engine_mlp import copy_to_torch
from kiln_engine import Adam, Chain, Dense, losses, relu, setup, update, withgradient
from kiln_engine.kernels import optimisers as kernels
from kiln_engine.optimisers import _fused


def reference_path(fn):
    """``fn`` run with the fused kernels switched off (Kiln's numpy reference path)."""
    def run() -> None:
        _fused.enabled = False
        try:
            fn()
        finally:
            _fused.enabled = True
    return run


def train_step_case() -> dict[str, float]:
    rng = np.random.default_rng(0)
    model = Chain(Dense(784, 512, relu), Dense(512, 512, relu), Dense(512, 10))
    x = rng.standard_normal((128, 784), dtype=np.float32)
    y = rng.integers(0, 10, 128)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    opt_state = setup(Adam(1e-4), model)
    peers = {}
    for name, kw in (("foreach", {"foreach": True}), ("fused", {"fused": True})):
        tmodel = copy_to_torch(model)
        peers[name] = (tmodel, torch.optim.Adam(tmodel.parameters(), lr=1e-4, **kw))

    def kiln() -> None:
        _, (g,) = withgradient(lambda m: losses.logitcrossentropy(m(x), y), model)
        update(opt_state, model, g)

    def torch_step(name: str):
        tmodel, opt = peers[name]

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()
            opt.step()
        return step

    _, (g,) = withgradient(lambda m: losses.logitcrossentropy(m(x), y), model)
    tmodel, fused = peers["fused"]
    return interleaved({"kiln": kiln, "kiln numpy path": reference_path(kiln),
                        "foreach": torch_step("foreach"), "fused": torch_step("fused"),
                        "kiln update": lambda: update(opt_state, model, g),
                        "fused update": fused.step}, rounds=21, calls=10)


def update_case(n_arrays: int = 1000, size: int = 10_000) -> dict[str, float]:
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(size, dtype=np.float32) for _ in range(n_arrays)]
    grads = [rng.standard_normal(size, dtype=np.float32) for _ in range(n_arrays)]
    opt_state = setup(Adam(1e-6), params)
    opts = {}
    for name, kw in (("foreach", {"foreach": True}), ("fused", {"fused": True})):
        tparams = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
        for p, g in zip(tparams, grads):
            p.grad = torch.from_numpy(g)
        opts[name] = torch.optim.Adam(tparams, lr=1e-6, **kw)

    def kiln() -> None:
        update(opt_state, params, grads)

    return interleaved({"kiln": kiln, "kiln numpy path": reference_path(kiln),
                        "foreach": opts["foreach"].step, "fused": opts["fused"].step},
                       rounds=11, calls=3)


def main() -> None:
    print(machine())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fused kernels: "
          f"{'numba' if _fused.enabled and kernels.CPU else 'unavailable (numpy path)'}")
    t = train_step_case()
    print("MLP 784-512-512-10, batch 128, forward + backward + Adam:")
    print(ratio_line("  vs Adam(foreach=True)", t["kiln"], t["foreach"], "torch", 1.0))
    print(ratio_line("  vs Adam(fused=True)", t["kiln"], t["fused"], "torch", 1.2))
    print(f"  (Kiln with its numpy reference update: {t['kiln numpy path'] * 1e3:.3f} ms; the "
          f"update alone: Kiln {t['kiln update'] * 1e3:.3f} ms, torch fused "
          f"{t['fused update'] * 1e3:.3f} ms)")
    t = update_case()
    print("Adam update, 10M parameters in 1,000 arrays:")
    print(ratio_line("  vs Adam(foreach=True)", t["kiln"], t["foreach"], "torch", 1.0))
    print(f"  (torch Adam(fused=True): {t['fused'] * 1e3:.3f} ms; Kiln numpy reference path: "
          f"{t['kiln numpy path'] * 1e3:.3f} ms)")


if __name__ == "__main__":
    main()
