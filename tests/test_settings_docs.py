"""The README's settings table lists exactly the Settings fields: variable, default and meaning."""
from __future__ import annotations

import re
from pathlib import Path

from data.settings import Settings, env_name

README = Path(__file__).resolve().parents[1] / "README.md"


def shown_default(field: str) -> str:
    """A field's default as the table shows it (or the field's own ``shown_default`` wording)."""
    info = Settings.model_fields[field]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "shown_default" in extra:
        return str(extra["shown_default"])
    default = info.default
    if default is False:
        return "unset (false)"
    if default == ():
        return "empty"
    return f"`{default}`"


def documented_rows() -> list[str]:
    """The table's rows as the fields say they should read, in field order."""
    return [f"| `{env_name(name)}` | {shown_default(name)} | {info.description} |"
            for name, info in Settings.model_fields.items()]


def readme_rows() -> list[str]:
    """The rows of the first table after the README's "## Settings" heading (header and rule left out)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Settings\n"):]
    section = section[:section.index("\n## ", 1)]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[0] == "| variable | default | meaning |" and re.fullmatch(r"\|(-+\|){3}", table[1]), table[:2]
    return table[2:]


def test_every_setting_has_a_description_and_a_variable_of_its_own():
    for name, info in Settings.model_fields.items():
        assert info.description, f"{name} has no description"
    assert len({env_name(name) for name in Settings.model_fields}) == len(Settings.model_fields)


def test_readme_settings_table_matches_the_settings_fields_exactly():
    expected = documented_rows()
    assert readme_rows() == expected, "README.md's settings table should read:\n" + "\n".join(expected)
