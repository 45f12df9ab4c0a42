"""A failed job's ``error`` as the worker writes it: the exception, where in Kiln it was
raised, and no absolute path of the machine it ran on."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from kiln_engine.layers import Dense
from kiln_server.worker.failure import describe_failure, scrub_paths

SITE_PACKAGES = Path(np.__file__).parents[1]


def _raised(f, *args) -> BaseException:
    with pytest.raises(Exception) as info:
        f(*args)
    return info.value


def _no_absolute_path(text: str) -> None:
    for root in ("/home", "/tmp", "/work", "/root", "/usr", str(Path.home()),
                 str(SITE_PACKAGES), sys.prefix):
        assert not re.search(rf"(?<![\w.]){re.escape(root)}", text), (root, text)
    assert "site-packages" not in text


def test_an_engine_error_names_the_engine_module_and_line():
    e = _raised(Dense(4, 3), np.zeros((2, 5), np.float32))
    text = describe_failure(e)
    m = re.fullmatch(r"(.+) \(at (kiln_engine/layers/\w+\.py):(\d+)\)", text)
    assert m is not None, text
    assert m.group(1).startswith("kiln_engine.layers._base.ShapeError: Dense(4 => 3) expects "
                                 "4 features")
    # The line named is the one that raised.
    source = (Path(sys.modules["kiln_engine"].__file__).parent.parent / m.group(2))
    assert "raise" in source.read_text().splitlines()[int(m.group(3)) - 1]
    _no_absolute_path(text)


def test_paths_in_the_message_keep_their_tail_only(tmp_path):
    missing = tmp_path / "cache" / "ab" / "abcdef.npz"
    e = _raised(np.load, str(missing))
    text = describe_failure(e)
    # Raised inside numpy, called from this test: no Kiln frame, so numpy's, named from
    # its import root.
    assert re.fullmatch(r"FileNotFoundError: \[Errno 2\] No such file or directory: "
                        r"'…/ab/abcdef\.npz' \(at numpy/[\w/]+\.py:\d+\)", text), text
    _no_absolute_path(text)


def test_only_paths_on_this_machine_are_rewritten():
    numpy_file = str(Path(np.__file__).parent / "linalg" / "linalg.py")
    text = (f"failed at {numpy_file}:12. GET http://127.0.0.1:8000/v1/worker/jobs/ab "
            f"(a route: /v1/jobs/ab); see ./data/x.npz, a/b and 3/4; in {Path.home()}/x/y/z.")
    assert scrub_paths(text) == (
        "failed at numpy/linalg/linalg.py:12. GET http://127.0.0.1:8000/v1/worker/jobs/ab "
        "(a route: /v1/jobs/ab); see ./data/x.npz, a/b and 3/4; in …/y/z.")
