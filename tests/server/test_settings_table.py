"""The README's table of settings is the one settings.py makes: every ``KILN_*`` variable,
its default and its description, and nothing else."""

from __future__ import annotations

import re

import pytest
from kiln_server import settings_table
from kiln_server.settings import Settings
from pydantic import Field

from tests.readme import README

REGENERATE = ".venv/bin/python -m kiln_server.settings_table --write README.md"


def test_the_readmes_settings_table_is_settings_pys():
    text = README.read_text()
    assert settings_table.replace_table(text) == text, (
        f"README.md's settings table is not the one server/kiln_server/settings.py makes: "
        f"regenerate it with `{REGENERATE}`")


def test_each_variable_in_the_table_sets_its_setting(monkeypatch):
    """The table's variables are the names Settings reads (its numeric ones, set to 7)."""
    variables = re.findall(r"^\| `(KILN_\w+)` \|", settings_table.markdown(), flags=re.M)
    assert len(variables) == len(Settings.model_fields)
    for variable, (name, field) in zip(variables, Settings.model_fields.items(), strict=True):
        if field.annotation in (int, float):
            monkeypatch.setenv(variable, "7")
            assert getattr(Settings(), name) == 7, variable


def test_a_setting_without_a_description_is_refused():
    class Undocumented(Settings):
        new_limit: int = Field(1, gt=0)

    with pytest.raises(ValueError, match="'new_limit' has no description"):
        settings_table.markdown(Undocumented)


def test_the_table_shows_defaults_as_a_reader_needs_them():
    table = settings_table.markdown()
    assert "| `KILN_MAX_UPLOAD_BYTES` | `1073741824` (1 GiB) |" in table
    assert "| `KILN_DATABASE_URL` | unset |" in table
    assert "| `KILN_DASHBOARD_DIR` | `dashboard/` in the package |" in table  # no local path
