"""Shared test setup.

PyTorch is an optional oracle: tests that compare against it ask for the ``torch``
fixture. Without torch they are skipped, unless KILN_REQUIRE_TORCH=1 (CI sets it), where
a missing torch is a failure rather than a silent skip.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def torch():
    try:
        import torch as _torch
    except ImportError:
        if os.environ.get("KILN_REQUIRE_TORCH") == "1":
            pytest.fail("KILN_REQUIRE_TORCH=1 but torch is not installed")
        pytest.skip("PyTorch oracle not installed (pip install torch==2.13.0)")
    _torch.set_default_dtype(_torch.float64)
    return _torch
