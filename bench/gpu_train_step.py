"""A whole training step on a GPU: Kiln on CuPy against PyTorch CUDA eager, one process.

    python bench/gpu_train_step.py [--rounds 15] [--calls 20]   (needs cupy and torch with CUDA)

Cases (issue 12; the models and sizes of engine_train_step.py and engine_cnn.py), each a
forward, backward and Adam step, float32, targets Kiln / PyTorch <= 1.2:
- MLP 784-512-512-10, batch 128, logit cross-entropy;
- LeNet (Conv 1→16 k5 relu, MaxPool 2, Conv 16→32 k5 relu, MaxPool 2, Dense 512→10),
  batch 64.
PyTorch runs eager with ``Adam(fused=True)`` (its fastest eager update) and, shown beside
it, ``Adam(foreach=True)``. Both sides start from the same weights and data; the first
step's losses are compared before timing. Timed in interleaved rounds: each round runs
``calls`` steps of each contender back to back and waits for its device to finish
(``synchronize``) before stopping the clock, so launch overhead and GPU time both count;
medians over rounds. Kiln is also timed with its fused optimiser kernels off (each
rule's cupy path), to show what they buy. Prints one line per result and a JSON summary last.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import cupy
from engine_cnn import copy_to_torch as lenet_to_torch
from engine_cnn import lenet
from engine_mlp import copy_to_torch as mlp_to_torch
from kiln_engine import Adam, Chain, Dense, gpu, losses, relu, setup, update, withgradient
from kiln_engine.optimisers import _fused

TARGET = 1.2


def _timed(contenders: dict, rounds: int, calls: int) -> dict[str, float]:
    """Median seconds per step of each contender, in interleaved rounds."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (step, sync) in contenders.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(calls):
                step()
            sync()
            samples[name].append((time.perf_counter() - t0) / calls)
    return {name: statistics.median(s) for name, s in samples.items()}


def _kiln_off(step):
    """``step`` with Kiln's fused optimiser kernels switched off (each rule's cupy path)."""
    def run() -> None:
        _fused.enabled = False
        try:
            step()
        finally:
            _fused.enabled = True
    return run


def case(name: str, model: Chain, tmodel: torch.nn.Module, x: np.ndarray, y: np.ndarray,
         rounds: int, calls: int) -> dict:
    dev = gpu(model)
    gx, gy = cupy.asarray(x), cupy.asarray(y)
    opt_state = setup(Adam(1e-4), dev)
    tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    peers = {}
    for kind, kw in (("fused", {"fused": True}), ("foreach", {"foreach": True})):
        t = copy.deepcopy(tmodel).cuda()
        peers[kind] = (t, torch.optim.Adam(t.parameters(), lr=1e-4, **kw))

    def loss(m):
        return losses.logitcrossentropy(m(gx), gy)

    def kiln() -> None:
        _, (g,) = withgradient(loss, dev)
        update(opt_state, dev, g)

    def torch_step(kind: str):
        t, opt = peers[kind]

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(t(tx), ty).backward()
            opt.step()
        return step

    first = float(loss(dev))
    with torch.no_grad():
        tfirst = float(torch.nn.functional.cross_entropy(peers["fused"][0](tx), ty))
    assert abs(first - tfirst) <= 1e-4 * max(1.0, abs(tfirst)), \
        f"{name}: Kiln's first loss {first} is not torch's {tfirst}"
    csync, tsync = cupy.cuda.Device().synchronize, torch.cuda.synchronize
    contenders = {"kiln": (kiln, csync), "kiln (optimiser kernels off)": (_kiln_off(kiln), csync),
                  "torch fused": (torch_step("fused"), tsync),
                  "torch foreach": (torch_step("foreach"), tsync)}
    for step, sync in contenders.values():  # warm up: compiles kernels, fills the pools
        for _ in range(5):
            step()
        sync()
    t = _timed(contenders, rounds, calls)
    ratio = t["kiln"] / t["torch fused"]
    print(f"{name}: kiln {t['kiln'] * 1e3:.3f} ms, torch fused {t['torch fused'] * 1e3:.3f} ms "
          f"(foreach {t['torch foreach'] * 1e3:.3f} ms), ratio {ratio:.2f} "
          f"({'meets' if ratio <= TARGET else 'MISSES'} target <= {TARGET}); kiln with its "
          f"optimiser kernels off {t['kiln (optimiser kernels off)'] * 1e3:.3f} ms; first loss "
          f"{first:.6f} (torch {tfirst:.6f})", flush=True)
    return {"case": name, "ms": {k: v * 1e3 for k, v in t.items()}, "ratio": ratio,
            "target": TARGET}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print(f"GPU {props['name'].decode()}; cupy {cupy.__version__}, torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}), numpy {np.__version__}", flush=True)
    rng = np.random.default_rng(0)
    results = []
    mlp = Chain(Dense(784, 512, relu), Dense(512, 512, relu), Dense(512, 10))
    results.append(case("MLP 784-512-512-10, batch 128", mlp, mlp_to_torch(mlp),
                        rng.standard_normal((128, 784), dtype=np.float32),
                        rng.integers(0, 10, 128), args.rounds, args.calls))
    cnn = lenet()
    results.append(case("LeNet, batch 64", cnn, lenet_to_torch(cnn),
                        rng.standard_normal((64, 1, 28, 28), dtype=np.float32),
                        rng.integers(0, 10, 64), args.rounds, args.calls))
    print(json.dumps({"gpu_train_step": results}))


if __name__ == "__main__":
    main()
