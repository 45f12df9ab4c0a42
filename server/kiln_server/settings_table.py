"""The README's table of settings, made from ``Settings``' fields: every ``KILN_*``
environment variable documented in one place, never out of step with settings.py
(tests/server/test_settings_table.py fails when the README's copy differs).

    python -m kiln_server.settings_table                    # print the table
    python -m kiln_server.settings_table --write README.md  # replace the README's copy
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic.fields import FieldInfo

from .settings import Settings

__all__ = ["BEGIN", "END", "markdown", "replace_table"]

BEGIN = ("<!-- settings: generated from server/kiln_server/settings.py by "
         "`python -m kiln_server.settings_table --write README.md`; do not edit -->")
END = "<!-- end of settings -->"

_PACKAGE = Path(__file__).resolve().parent


def markdown(settings: type[Settings] = Settings) -> str:
    """The table: each setting's variable, default and description."""
    prefix = settings.model_config["env_prefix"]
    rows = ["| Variable | Default | Description |", "| --- | --- | --- |"]
    for name, field in settings.model_fields.items():
        if not field.description:
            raise ValueError(f"setting {name!r} has no description: give its Field one")
        description = field.description.replace("|", "\\|").replace("<", "\\<")
        rows.append(f"| `{prefix}{name.upper()}` | {_default(name, field)} | {description} |")
    return "\n".join(rows) + "\n"


def _default(name: str, field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, Path) and value.is_absolute() and value.is_relative_to(_PACKAGE):
        return f"`{value.relative_to(_PACKAGE)}/` in the package"  # not this machine's path
    if name.endswith("_bytes") and value >= 1 << 20:
        return f"`{value}` ({_binary_size(value)})"
    return f"`{value}`"


def _binary_size(n: int) -> str:
    size, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while size >= 1024 and len(units) > 1:
        size, units = size / 1024, units[1:]
    return f"{size:g} {units[0]}"


def replace_table(text: str) -> str:
    """``text`` (the README) with the table between its markers made anew."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no settings table markers ({BEGIN!r} ... {END!r})")
    return text[:start + len(BEGIN)] + "\n" + markdown() + text[end:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kiln_server.settings_table",
                                description="The settings' table, for the README")
    p.add_argument("--write", metavar="README", type=Path,
                   help="replace the table between the README's markers")
    args = p.parse_args(argv)
    if args.write is None:
        print(markdown(), end="")
    else:
        args.write.write_text(replace_table(args.write.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
