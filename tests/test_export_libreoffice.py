"""The exports opened by LibreOffice Calc, as a spreadsheet user would open them: no hostile cell is a formula.

LibreOffice converts the real CSV (both writers) and XLSX files headless to xlsx; openpyxl then reads
which cells came back as formulas. A control file with one raw ``=1+1`` proves the conversion does
evaluate formulas, so a pass is not an empty check.
"""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import openpyxl

from data.export import export_tickets
from data.scope import Scope

from .helpers.databases import add_tickets, ticket_record
from .test_export import INJECTIONS, UNICODE_FORMULA_STARTS

# CSV import options (LibreOffice's CSV filter tokens): comma, double quote, UTF-8, from line 1,
# English (US), quoted fields NOT forced to text, detect special numbers, evaluate formulas
# (token 13): the most permissive import a user can choose.
CSV_IMPORT = "CSV:44,34,76,1,,1033,false,true,false,false,false,-1,true"


def libreoffice_to_xlsx(soffice: str, sources: list[Path], folder: Path, infilter: str | None = None) -> list[Path]:
    """``sources`` converted by LibreOffice to xlsx in ``folder`` (its own profile: no shared state)."""
    folder.mkdir(exist_ok=True)
    command = [soffice, f"-env:UserInstallation={(folder / 'profile').as_uri()}", "--headless", "--norestore"]
    if infilter:
        command.append(f"--infilter={infilter}")
    subprocess.run([*command, "--convert-to", "xlsx", "--outdir", str(folder), *map(str, sources)],
                   check=True, capture_output=True, timeout=180)
    converted = [folder / (source.stem + ".xlsx") for source in sources]
    missing = [p.name for p in converted if not p.exists()]
    assert not missing, f"LibreOffice wrote no {missing}"
    return converted


def formula_cells(path: Path) -> list[str]:
    """Coordinates and text of every formula cell LibreOffice produced."""
    book = openpyxl.load_workbook(path)
    return [f"{sheet.title}!{cell.coordinate}={cell.value!r}" for sheet in book.worksheets
            for row in sheet.iter_rows() for cell in row if cell.data_type == "f"]


def test_libreoffice_evaluates_no_hostile_cell_of_a_csv_or_xlsx_export(engine, soffice, tmp_path):
    ours = uuid.uuid4()
    texts = INJECTIONS + [text for text, _ in UNICODE_FORMULA_STARTS]
    add_tickets(engine, [ticket_record(ours, description=text, address=text, tracking_number=f"{text}-{i}")
                         for i, text in enumerate(texts)])
    scope = Scope(municipality_id=ours, role="manager", username="calc")
    exports = tmp_path / "exports"
    exports.mkdir()
    csvs = [export_tickets(engine, scope, None, "csv", exports / f"copy-{use_copy}.csv", use_copy=use_copy).path
            for use_copy in ([False, True] if engine.dialect.name == "postgresql" else [False])]
    xlsx = export_tickets(engine, scope, None, "xlsx", exports / "export.xlsx").path
    control = exports / "control.csv"
    control.write_text('"Description"\r\n"=1+1"\r\n', encoding="utf-8")

    converted = libreoffice_to_xlsx(soffice, [*csvs, control], tmp_path / "from-csv", CSV_IMPORT)
    assert formula_cells(converted[-1]) == ["control!A2='=1+1'"], "the control must be evaluated"
    for path in converted[:-1]:
        assert formula_cells(path) == [], path.name
        assert openpyxl.load_workbook(path).active.max_row == len(texts) + 1
    [from_xlsx] = libreoffice_to_xlsx(soffice, [xlsx], tmp_path / "from-xlsx")
    assert formula_cells(from_xlsx) == []
    assert openpyxl.load_workbook(from_xlsx)["Tickets"].max_row == len(texts) + 1
