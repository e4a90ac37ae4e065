"""The Settings fields are the one source of configuration.

The README's settings table lists exactly them (variable, default, meaning), and no product
code but the settings module reads the environment.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from data.settings import ENV_PREFIX, Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SETTINGS_MODULE = ROOT / "data" / "settings.py"


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


def environment_reads(source: str) -> list[str]:
    """Each read of the environment in ``source``: ``os.getenv``, ``os.environ`` read in any way.

    Writes are not reads: ``os.environ[NAME] = ...``, and ``os.environ.setdefault(NAME, ...)`` for
    another tool's variable (Bokeh's, Panel's), which hands it a value only when none is set.
    """
    reads = []
    tree = ast.parse(source)
    stores = {id(node.value) for node in ast.walk(tree)
              if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store)}
    hands_over = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setdefault"
                and node.args and isinstance(node.args[0], ast.Constant)
                and not str(node.args[0].value).startswith(ENV_PREFIX)):
            hands_over.add(id(node.func.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr in ("getenv", "getenvb", "environb"):
                reads.append(f"line {node.lineno}: os.{node.attr}")
            elif node.attr == "environ" and id(node) not in stores and id(node) not in hands_over:
                reads.append(f"line {node.lineno}: os.environ")
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                alias.name in ("environ", "getenv") for alias in node.names):
            reads.append(f"line {node.lineno}: from os import ...")
    return reads


def test_no_product_code_but_the_settings_module_reads_the_environment():
    found = {}
    for folder in ("data", "components", "dashboard_app"):
        for path in (ROOT / folder).rglob("*.py"):
            if path != SETTINGS_MODULE and (reads := environment_reads(path.read_text(encoding="utf-8"))):
                found[str(path.relative_to(ROOT))] = reads
    for path in (ROOT / "examples").glob("*.ipynb"):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        if reads := environment_reads(code):
            found[str(path.relative_to(ROOT))] = reads
    assert found == {}


def test_the_environment_read_check_sees_reads_and_lets_writes_pass():
    assert environment_reads("import os\nos.environ.get('OPSDASH_X')\n") == ["line 2: os.environ"]
    assert environment_reads("import os\nx = os.getenv('A')\n") == ["line 2: os.getenv"]
    assert environment_reads("import os\nif 'A' in os.environ: pass\n") == ["line 2: os.environ"]
    assert environment_reads("import os\nos.environ.setdefault('OPSDASH_X', '1')\n") == ["line 2: os.environ"]
    assert environment_reads("import os\nos.environ['OPSDASH_DEMO'] = '1'\n"
                             "os.environ.setdefault('BOKEH_SIGN_SESSIONS', 'true')\n") == []
