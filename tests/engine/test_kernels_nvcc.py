"""Every CUDA kernel source compiles with nvcc, for sm_80 and sm_90, float32 and float64.

A GPU host then never meets a kernel that does not build. The ElementwiseKernels are
wrapped into whole ``__global__`` functions the way CuPy generates them
(``cuda_source.py``); the RawKernels compile as they are. With nvcc on the PATH (or
``$CUDA_HOME/bin``) a kernel that does not compile fails the test, naming it; without
nvcc the test is skipped, saying so (KILN_REQUIRE_NVCC=1 makes that a failure).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from kiln_engine.kernels import Elementwise, families

from ..conftest import _missing
from .cuda_source import unit

ARCHS = ["sm_80", "sm_90"]
DTYPES = [np.float32, np.float64]
#: NVRTC options the kernels pass to CuPy that nvcc takes as they are.
NVCC_OPTIONS = {"--fmad=false"}


def nvcc() -> str:
    found = shutil.which("nvcc") or next(
        (str(p) for p in [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"]
         if p.exists()), None)
    if found is None:
        _missing("nvcc is not installed", "KILN_REQUIRE_NVCC",
                 "the CUDA toolkit's compiler; the kernels' sources are compiled with it")
    return found


def compile_unit(kernels, dtype, arch: str, tmp_path: Path) -> None:
    """Compile ``kernels`` for ``dtype`` to PTX for ``arch``; fail naming the kernels nvcc
    complained about."""
    options = sorted({o for k in kernels for o in k.options})
    assert set(options) <= NVCC_OPTIONS, f"kernel options nvcc is not known to take: {options}"
    u = unit(kernels, np.dtype(dtype))
    src = tmp_path / f"kernels_{np.dtype(dtype).name}_{arch}.cu"
    src.write_text(u.text)
    cmd = [nvcc(), "--ptx", f"-arch={arch}", "-std=c++17", "--Werror", "all-warnings",
           *options, str(src), "-o", str(src.with_suffix(".ptx"))]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"nvcc failed for {u.blame(out) or 'the unit'}:\n{out[-4000:]}"
    ptx = src.with_suffix(".ptx").read_text()
    for k in kernels:  # each kernel is in the PTX: nothing was compiled away
        entry = k.name if not isinstance(k, Elementwise) else f"{k.name}_"
        assert f".entry {entry}" in ptx, f"{k.name} is missing from the PTX"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_compiles(arch, dtype, tmp_path):
    compile_unit(list(families().values()), dtype, arch, tmp_path)


def test_a_kernel_that_does_not_compile_fails_naming_itself(tmp_path):
    """The harness can fail: a typo in an operation is an nvcc error blamed on its kernel."""
    good = families()["kiln_descent"]
    bad = Elementwise("kiln_typo", good.in_params, good.out_params,
                      good.operation.replace("x - d * eta", "x - d * etaa"), good.twin,
                      good.scalars, good.preamble)
    with pytest.raises(AssertionError, match=r"nvcc failed for \['kiln_typo \(float, 1-d"):
        compile_unit([good, bad], np.float32, "sm_80", tmp_path)
