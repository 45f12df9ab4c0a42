"""A failed job's ``error``: what went wrong and where, without the machine's file paths.

Whoever reads a job need not see the worker's directory layout (home, virtualenv, cache),
so the text names files as they are imported: a traceback's file becomes its path inside
its import root (``kiln_engine/layers/dense.py:42``, ``numpy/_core/numeric.py:7``), and
so does an absolute path in the message itself; one outside every import root (the
worker's blob cache, a temporary file) keeps only its last TAIL_PARTS parts
(``…/cache/ab``).
"""

from __future__ import annotations

import os
import re
import sys
import traceback

__all__ = ["OWN_PACKAGES", "TAIL_PARTS", "describe_failure", "scrub_paths"]

#: The packages whose frames say where a job failed: the innermost frame in one of them
#: is the location given (a frame deep in numpy says less to the job's owner).
OWN_PACKAGES = ("kiln_engine", "kiln_server")
#: The parts kept of a path outside every import root.
TAIL_PARTS = 2

# An absolute POSIX path: a slash that does not continue a word, a URL or a relative
# path, up to a space, a quote, a colon (``file:line``) or a bracket.
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])/[^\s'\"`:,;()\[\]{}<>]+")


def _import_roots() -> list[str]:
    """The directories modules are imported from, longest first: sys.path, and the parent
    of each loaded top-level package (an editable install's is not on sys.path)."""
    roots = {os.path.abspath(p) for p in sys.path if p}
    for name, module in list(sys.modules.items()):
        package = os.path.dirname(os.path.abspath(getattr(module, "__file__", None) or "/"))
        if "." not in name and os.path.basename(package) == name:
            roots.add(os.path.dirname(package))
    return sorted((r for r in roots if r != os.sep), key=len, reverse=True)


def _relative(path: str, roots: list[str]) -> str:
    """``path`` inside its import root, or ``…/`` and its last parts."""
    path = os.path.normpath(path)
    for root in roots:
        if path.startswith(root + os.sep):
            return path[len(root) + 1:]
    return "…/" + "/".join(path.split(os.sep)[-TAIL_PARTS:])


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path on this machine made relative (see the module
    docstring). A path-like string whose first part is no directory here (a URL's path,
    ``/v1/jobs``) is left alone."""
    roots = _import_roots()

    def one(m: re.Match[str]) -> str:
        path = m.group(0)
        trail = path[len(path.rstrip(".")):]  # a sentence's full stop is not the path's
        path = path[:len(path) - len(trail)]
        first = path.split("/", 2)[1]
        if not first or not os.path.isdir(os.sep + first):
            return m.group(0)
        return _relative(path, roots) + trail

    return _ABSOLUTE.sub(one, text)


def describe_failure(exc: BaseException) -> str:
    """``"ExcType: message (at package/module.py:LINE)"``, free of absolute paths; the
    location is the innermost frame in OWN_PACKAGES, else the innermost of all."""
    text = scrub_paths("".join(traceback.format_exception_only(exc)).strip())
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return text
    roots = _import_roots()
    where = [(_relative(f.filename, roots) if os.path.isabs(f.filename) else f.filename,
              f.lineno) for f in frames]
    own = [w for w in where if w[0].split("/", 1)[0] in OWN_PACKAGES]
    file, line = (own or where)[-1]
    return f"{text} (at {file}:{line})"
