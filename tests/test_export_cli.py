"""``opsdash export`` as a real process on SQLite and PostgreSQL: same rows, audited, clear errors, no partial files."""
from __future__ import annotations

import json

import pytest

from data.audit import recent_exports
from data.filters import TicketFilters

from .helpers.databases import scope_of, user_of
from .helpers.export import expected_csv, expected_xlsx, oracle_frame, read_csv, read_xlsx
from .helpers.servers import run_opsdash


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_cli_export_writes_the_users_rows_and_an_audit_row(engine, db_url, make_seed, tmp_path, fmt):
    result = make_seed(tickets=300, random_seed=5)
    councillor = user_of(result, "ward_councillor")["username"]
    other_ward = next(w for w in result.municipalities[0]["wards"] if w != user_of(result, "ward_councillor")["ward_id"])
    out = tmp_path / f"open.{fmt}"
    done = run_opsdash("export", "--user", councillor, "--format", fmt, "--status", "open,in_progress",
                       "--ward", other_ward, "--output", str(out), database_url=db_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    filters = TicketFilters(statuses=("open", "in_progress"))  # the councillor's forged ward is ignored
    frame = oracle_frame(engine, scope_of(engine, result, "ward_councillor"), filters)
    rows = read_csv(out)[1] if fmt == "csv" else read_xlsx(out)[1]
    assert rows == (expected_csv(frame) if fmt == "csv" else expected_xlsx(frame)) and len(rows) > 0
    assert f"wrote {len(rows)} tickets" in done.stdout
    audit = recent_exports(engine, username=councillor)[0]
    assert (audit.channel, audit.format, audit.row_count) == ("cli", fmt, len(rows))
    assert TicketFilters.parse(json.loads(audit.filters)) == filters  # recorded as applied: no ward
    assert "ward=" not in done.stdout


@pytest.mark.parametrize("args,message", [
    (["--format", "pdf"], "unknown export format 'pdf'; choose csv or xlsx"),
    (["--format", "csv", "--status", "lost"], "unknown status 'lost'"),
    (["--format", "csv", "--from", "2026-02-30"], "created from must be a date"),
    (["--format", "csv", "--user", "nobody-at-all"], "unknown user"),
])
def test_cli_export_bad_input_is_one_line_exit_2_and_no_file(db_url, make_seed, tmp_path, args, message):
    result = make_seed(tickets=20)
    user = ["--user", user_of(result, "manager")["username"]] if "--user" not in args else []
    out = tmp_path / "out.file"
    done = run_opsdash("export", *user, *args, "--output", str(out), database_url=db_url, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("opsdash: error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_export_to_a_missing_folder_says_so(db_url, make_seed, tmp_path):
    result = make_seed(tickets=20)
    done = run_opsdash("export", "--user", user_of(result, "manager")["username"], "--format", "xlsx",
                       "--output", str(tmp_path / "nope" / "x.xlsx"), database_url=db_url, cwd=tmp_path)
    assert done.returncode == 2 and "the folder" in done.stderr and "does not exist" in done.stderr
