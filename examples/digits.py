"""Train scikit-learn's digits on a Kiln server from Python, and steer the run as it trains.

    make run                                   # in one terminal: prints the URL and a token
    .venv/bin/kiln login --token kiln_...      # once (or set KILN_URL / KILN_TOKEN)
    .venv/bin/python examples/digits.py        # in another

Uploads the digits, submits a Chain(enc=…, dec=…) MLP with WeightDecay + Adam, and after
three epochs lowers the encoder's learning rate and freezes the decoder, which it thaws
two epochs later: the epoch rows printed as the worker reports them (it posts them every
second) show each change from the epoch it took effect. Then it takes the trained model
back and checks it here.
"""

from __future__ import annotations

import argparse

import numpy as np
from kiln_client import Client
from kiln_engine import Adam, Chain, Dense, OptimiserChain, WeightDecay, onecold, relu
from sklearn.datasets import load_digits


def digits() -> dict[str, np.ndarray]:
    """The digits, shuffled once, as x/y (training) and xv/yv (validation)."""
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x, y = (d.data / 16).astype(np.float32)[order], d.target.astype(np.int64)[order]
    return {"x": x[:1400], "y": y[:1400], "xv": x[1400:], "yv": y[1400:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="the server (default: KILN_URL or `kiln login`'s)")
    parser.add_argument("--token", help="a token (default: KILN_TOKEN or `kiln login`'s)")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()

    data = digits()
    with Client(args.url, args.token) as kiln:
        ds = kiln.datasets.upload("digits", **data)
        job = kiln.jobs.submit(
            model=Chain(enc=Chain(Dense(64, 128, relu)), dec=Chain(Dense(128, 10))),
            optimiser=OptimiserChain(WeightDecay(1e-4), Adam(3e-3)),
            loss="logitcrossentropy", train=(ds, "x", "y"), validation=(ds, "xv", "yv"),
            batch_size=1, epochs=args.epochs, metrics=["loss", "accuracy"],
            name="digits example")
        print(f"submitted job {job.id}")

        frozen_at = thawed = None
        for event in job.events():
            if event.kind == "epoch":
                row = event.data
                print(f"epoch {row['epoch']:2d}  train_loss {row['train_loss']:.4f}  "
                      f"val_accuracy {row['metrics']['val_accuracy']:.3f}  "
                      f"lr {row['learning_rates']}  frozen {row['frozen']}")
                if row["epoch"] == 3:  # steer it: each takes effect at the next step
                    job.adjust("layers.enc", eta=3e-4)
                    job.freeze("layers.dec")
                if frozen_at is not None and row["epoch"] >= frozen_at + 2 and not thawed:
                    thawed = job.thaw("layers.dec")  # two whole epochs frozen: enough
            elif event.kind == "control" and event.data["status"] != "pending":
                c = event.data
                print(f"  control {c['seq']} {c['kind']} {c['path']} {c['hyper'] or ''}: "
                      f"{c['status']} at epoch {c['applied_epoch']}, step {c['applied_step']}"
                      f"{'  ' + c['reason'] if c['reason'] else ''}")
                if c["kind"] == "freeze" and c["status"] == "applied":
                    frozen_at = c["applied_epoch"]
            elif event.kind == "status" and event.data["status"] in ("failed", "cancelled"):
                print(f"job {event.data['status']}: {event.data.get('error') or ''}")
                return 1

        model = job.model()  # a kiln_engine model with the trained weights
        accuracy = float(np.mean(onecold(model(data["xv"])) == data["yv"]))
        print(f"job {job.refresh().status}; the trained model classifies {accuracy:.1%} of "
              f"the validation digits here")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
