"""The README's code, by section, for the tests that run it as written."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["README", "python_blocks"]

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    """The ```python blocks under the README's ``## section`` heading."""
    parts = re.split(r"^## ", README.read_text(), flags=re.M)
    body = next((p for p in parts if p.startswith(section + "\n")), None)
    assert body is not None, f"README.md has no section {section!r}"
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    assert blocks, f"README.md's section {section!r} has no python example"
    return blocks
