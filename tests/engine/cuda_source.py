"""Whole CUDA translation units from Kiln's kernel sources, as CuPy would compile them.

A ``cupy.RawKernel`` source is already whole. A ``cupy.ElementwiseKernel`` is only
parameters, an operation and a preamble: CuPy generates the ``__global__`` function
around them at the call (``_get_elementwise_kernel_code`` in ``cupy/_core/_kernel.pyx``).
:func:`elementwise_function` does what that generator does, for arguments that are all
arrays of one dtype or scalars:

- ``typedef <ctype> T;`` for the type placeholder, then the preamble;
- each array parameter becomes ``CArray<ctype, ndim, c_contiguous, index_32_bits>``,
  named ``_raw_<name>`` unless declared ``raw``; inputs are ``const``; scalars are plain
  C values of their type; last comes the indexer ``CIndexer<ndim, index_32_bits> _ind``;
- the body is a grid-stride ``CUPY_FOR(i, _ind.size())`` loop that sets the indexer and
  binds each non-raw array's element to a reference of its name (``const T &g =
  _raw_g[_ind.get()];``) before the operation.

CuPy's own ``carray.cuh`` (CArray, CIndexer, CUPY_FOR) is not installed here; :data:`HEADER`
declares the same interface (the members a generated kernel uses, with CuPy's template
parameters and indexing arithmetic), so what compiles against it compiles against CuPy's.
Two shapes of call are generated per kernel: all arrays one-dimensional and contiguous
(CuPy's reduced view of contiguous arguments) and two-dimensional with strides (a
broadcast bias, say), which takes the other indexing path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from kiln_engine.kernels import C_TYPES, Elementwise, Raw

#: C types of the dtypes a kernel parameter may name, as CuPy's get_typename gives them.
_NAMED_TYPES = {"int32": "int", "int64": "long long", "float32": "float", "float64": "double",
                "bool": "bool"}

HEADER = r"""
// The interface of CuPy's cupy/carray.cuh that generated elementwise kernels use.
#define CUPY_FOR(i, n)                                                          \
  for (ptrdiff_t i = static_cast<ptrdiff_t>(blockIdx.x) * blockDim.x + threadIdx.x; \
       i < (n); i += static_cast<ptrdiff_t>(blockDim.x) * gridDim.x)

template <typename T, int _ndim, bool _c_contiguous = false, bool _use_32bit_indexing = false>
class CArray {
 public:
  static const int ndim = _ndim;
  typedef typename std::conditional<_use_32bit_indexing, int, ptrdiff_t>::type index_t;
 private:
  T* data_;
  ptrdiff_t size_;
  ptrdiff_t shape_[_ndim];
  ptrdiff_t strides_[_ndim];
 public:
  __device__ ptrdiff_t size() const { return size_; }
  __device__ const ptrdiff_t* shape() const { return shape_; }
  __device__ const ptrdiff_t* strides() const { return strides_; }
  template <typename Int>
  __device__ const T& operator[](const Int (&idx)[_ndim]) const {
    index_t diff = 0;
    for (int d = 0; d < _ndim; ++d)
      diff += static_cast<index_t>(strides_[d]) * static_cast<index_t>(idx[d]);
    return *reinterpret_cast<const T*>(reinterpret_cast<const char*>(data_) + diff);
  }
  template <typename Int>
  __device__ T& operator[](const Int (&idx)[_ndim]) {
    return const_cast<T&>(static_cast<const CArray&>(*this)[idx]);
  }
  __device__ const T& operator[](ptrdiff_t i) const {
    if (_c_contiguous) return data_[i];
    index_t diff = 0, rest = static_cast<index_t>(i);
    for (int d = _ndim - 1; d > 0; --d) {
      const index_t n = static_cast<index_t>(shape_[d]);
      diff += static_cast<index_t>(strides_[d]) * (rest % n);
      rest /= n;
    }
    diff += static_cast<index_t>(strides_[0]) * rest;
    return *reinterpret_cast<const T*>(reinterpret_cast<const char*>(data_) + diff);
  }
  __device__ T& operator[](ptrdiff_t i) {
    return const_cast<T&>(static_cast<const CArray&>(*this)[i]);
  }
};

template <typename T, bool _use_32bit_indexing>
class CArray<T, 0, true, _use_32bit_indexing> {
 private:
  T* data_;
  ptrdiff_t size_;
 public:
  static const int ndim = 0;
  __device__ ptrdiff_t size() const { return size_; }
  template <typename U> __device__ T& operator[](const U&) { return *data_; }
  template <typename U> __device__ T operator[](const U&) const { return *data_; }
};

template <int _ndim, bool _use_32bit_indexing = false>
class CIndexer {
 private:
  ptrdiff_t size_;
  ptrdiff_t shape_[_ndim];
  ptrdiff_t index_[_ndim];
 public:
  static const int ndim = _ndim;
  __device__ ptrdiff_t size() const { return size_; }
  __device__ const ptrdiff_t (&get() const)[_ndim] { return index_; }
  __device__ void set(ptrdiff_t i) {
    for (int d = _ndim - 1; d > 0; --d) {
      index_[d] = i % shape_[d];
      i /= shape_[d];
    }
    index_[0] = i;
  }
};
"""


@dataclass(frozen=True)
class Param:
    name: str
    ctype: str  # "T" or a C type
    raw: bool
    const: bool


def _params(spec: str, const: bool) -> list[Param]:
    out = []
    for p in spec.split(","):
        words = p.split()
        raw = words[0] == "raw"
        typ, name = words[-2], words[-1]
        ctype = typ if len(typ) == 1 else _NAMED_TYPES[typ]
        out.append(Param(name, ctype, raw, const))
    return out


def elementwise_function(kernel: Elementwise, dtype: np.dtype, ndim: int, contiguous: bool,
                         name: str) -> str:
    """The ``__global__`` function CuPy generates for ``kernel`` called with arrays of
    ``dtype`` (``ndim`` dimensions; ``raw`` ones one-dimensional), named ``name``."""
    ctype = C_TYPES[np.dtype(dtype)]
    params = _params(kernel.in_params, True) + _params(kernel.out_params, False)
    args, binds = [], []
    for p in params:
        c = ctype if p.ctype == "T" else p.ctype
        const = "const " if p.const else ""
        if p.name in kernel.scalars:
            args.append(f"{const}{c} {p.name}")
        elif p.raw:
            args.append(f"{const}CArray<{c}, 1, 1, 0> {p.name}")
        else:
            args.append(f"{const}CArray<{c}, {ndim}, {int(contiguous)}, 0> _raw_{p.name}")
            binds.append(f"{const}{p.ctype} &{p.name} = _raw_{p.name}[_ind.get()];")
    args.append(f"CIndexer<{ndim}, 0> _ind")
    body = "\n        ".join([*binds, kernel.operation.replace("\n", "\n        ")])
    return f"""
typedef {ctype} T;
{kernel.preamble}
extern "C" __global__ void {name}({", ".join(args)}) {{
  ;
  #pragma unroll 1
  CUPY_FOR(i, _ind.size()) {{
    _ind.set(i);
    {{
        {body};
    }}
  }}
  ;
}}
"""


@dataclass
class Unit:
    """One translation unit and, for its error messages, which kernel each line is from."""

    text: str
    spans: list[tuple[int, int, str]]  # first line, last line, kernel (dtype, shape)

    def blame(self, output: str) -> list[str]:
        """The kernels nvcc's ``output`` names lines of."""
        hit = {int(n) for n in re.findall(r"\.cu\((\d+)\)", output)}
        return sorted({what for lo, hi, what in self.spans if any(lo <= n <= hi for n in hit)})


def unit(kernels: list[Elementwise | Raw], dtype: np.dtype) -> Unit:
    """Every kernel of ``kernels`` for ``dtype`` in one translation unit: each elementwise
    kernel in both shapes of call, in a namespace of its own (a preamble may define the
    same helper as another's), each raw kernel's source as CuPy compiles it."""
    text = ["#include <type_traits>", HEADER]
    spans: list[tuple[int, int, str]] = []
    ctype = C_TYPES[np.dtype(dtype)]

    def add(chunk: str, what: str) -> None:
        first = sum(t.count("\n") for t in text) + len(text) + 1
        text.append(chunk)
        spans.append((first, first + chunk.count("\n"), what))

    for k in kernels:
        if isinstance(k, Raw):
            add(k.source(dtype), f"{k.name} ({ctype})")
            continue
        for ndim, contiguous in ((1, True), (2, False)):
            shape = f"{ndim}-d, {'contiguous' if contiguous else 'strided'}"
            name = f"{k.name}_{ctype}_{ndim}d"
            fn = elementwise_function(k, dtype, ndim, contiguous, name)
            add(f"namespace {name} {{{fn}}}\n", f"{k.name} ({ctype}, {shape})")
    return Unit("\n".join(text), spans)
