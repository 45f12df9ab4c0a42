"""The README's engine example runs as written (its SDK example runs against a real
server in tests/client/test_readme_sdk.py)."""

from __future__ import annotations

from tests.readme import README, python_blocks


def test_readme_engine_example_runs():
    namespace: dict = {}
    for block in python_blocks("The engine in thirty seconds"):
        exec(compile(block, str(README), "exec"), namespace)
    model, grads = namespace["model"], namespace["grads"]
    assert grads[0].layers.dec.layers[0].weight.shape == model.layers.dec.layers[0].weight.shape
