"""Shared test setup.

PyTorch is an optional oracle: tests that compare against it ask for the ``torch``
fixture. Without torch they are skipped, unless KILN_REQUIRE_TORCH=1 (CI sets it), where
a missing torch is a failure rather than a silent skip. The dashboard's browser tests
ask for ``browser`` (Playwright driving Debian's Chromium, headless) in the same way:
skipped without Chromium or Playwright, unless KILN_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

#: Debian's Chromium (`apt-get install -y chromium`), which Playwright drives: Playwright's
#: own browser builds are downloads these machines cannot make.
CHROMIUM = Path("/usr/bin/chromium")
#: Headless and quiet: no sandbox (tests run as root), no GPU, no calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _missing(what: str, require: str, hint: str) -> NoReturn:
    """Skip the test for want of something (``hint`` says how to get it), or fail it
    where the environment variable ``require`` is 1 (CI)."""
    if os.environ.get(require) == "1":
        pytest.fail(f"{require}=1 but {what}")
    pytest.skip(f"{what} ({hint})")


@pytest.fixture(scope="session")
def torch():
    try:
        import torch as _torch
    except ImportError:
        _missing("torch is not installed", "KILN_REQUIRE_TORCH", "the PyTorch oracle: "
                 "pip install torch==2.13.0")
    _torch.set_default_dtype(_torch.float64)
    return _torch


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium under Playwright, for the whole session (a page per test:
    ``browser.new_page()``)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed", "KILN_REQUIRE_BROWSER",
                 "pip install playwright; it is in engine's test extra")
    if not CHROMIUM.exists():
        _missing(f"Chromium is not installed at {CHROMIUM}", "KILN_REQUIRE_BROWSER",
                 "apt-get install -y chromium")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
