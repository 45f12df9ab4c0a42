"""Train scikit-learn's digits through a running Kiln server, steering it mid-run.

    make run                                   # in one terminal: prints the URL and a token
    .venv/bin/python examples/digits.py --token kiln_...   # in another

Uploads the digits as a .npz, submits a Chain(enc=…, dec=…) MLP with WeightDecay + Adam
that stops at 97% validation accuracy, halves the encoder's learning rate once training has
been submitted, prints each epoch row as the worker reports it, and then the control's outcome.
"""

from __future__ import annotations

import argparse
import io
import time

import httpx
import numpy as np
from sklearn.datasets import load_digits


def digits_npz() -> bytes:
    """The digits, shuffled once, as x/y (training) and xv/yv (validation) in a .npz."""
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x, y = (d.data / 16).astype(np.float32)[order], d.target.astype(np.int64)[order]
    buf = io.BytesIO()
    np.savez(buf, x=x[:1400], y=y[:1400], xv=x[1400:], yv=y[1400:])
    return buf.getvalue()


def main() -> int:
    """Upload, submit, steer, follow."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", required=True, help="the token `make run` printed")
    args = parser.parse_args()
    client = httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {args.token}"},
                          timeout=30)
    r = client.post("/v1/datasets", params={"name": "digits"}, content=digits_npz(),
                    headers={"Content-Type": "application/octet-stream"})
    r.raise_for_status()
    dataset = r.json()["id"]
    job = {
        "model": {"type": "Chain", "layers": {
            "enc": {"type": "Chain", "layers": [
                {"type": "Dense", "in": 64, "out": 128, "activation": "relu"}]},
            "dec": {"type": "Chain", "layers": [{"type": "Dense", "in": 128, "out": 10}]}}},
        "optimiser": {"rule": "OptimiserChain", "rules": [
            {"rule": "WeightDecay", "lambda": 1e-4}, {"rule": "Adam", "eta": 0.003}]},
        "loss": "logitcrossentropy",
        "train": {"dataset": dataset, "x": "x", "y": "y"},
        "validation": {"dataset": dataset, "x": "xv", "y": "yv"},
        "batch_size": 32, "epochs": 30, "seed": 0, "metrics": ["loss", "accuracy"],
        "stop": {"metric": "val_accuracy", "at_least": 0.97},
    }
    r = client.post("/v1/jobs", json=job)
    if r.status_code != 201:
        print(r.status_code, r.text)
        return 1
    job_id = r.json()["id"]
    print(f"submitted job {job_id}")
    # A control on a queued or running job is applied at the worker's next step boundary.
    r = client.post(f"/v1/jobs/{job_id}/controls",
                    json={"kind": "adjust", "path": "layers.enc", "hyper": {"eta": 0.0015}})
    print(f"adjust eta on layers.enc: {r.status_code}")
    seen = 0
    while True:
        status = client.get(f"/v1/jobs/{job_id}").json()
        rows = client.get(f"/v1/jobs/{job_id}/epochs").json()
        for row in rows[seen:]:
            print(f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  "
                  f"val acc {row['metrics'].get('val_accuracy', float('nan')):.3f}  "
                  f"lr {row['learning_rates']}")
        seen = len(rows)
        if status["status"] in ("succeeded", "failed", "cancelled"):
            print(f"job {status['status']} after {status['epoch']} epochs "
                  f"{status['error'] or ''}")
            for c in client.get(f"/v1/jobs/{job_id}/controls").json():
                print(f"control {c['seq']} {c['kind']} {c['path']} {c['hyper']}: {c['status']} "
                      f"at epoch {c['applied_epoch']} step {c['applied_step']}")
            return 0 if status["status"] == "succeeded" else 1
        time.sleep(0.5)


if __name__ == "__main__":
    raise SystemExit(main())
