"""What every command group uses: the database, a password from the terminal, the demo logins."""
from __future__ import annotations

import getpass
import sys
from typing import Sequence

from sqlalchemy import Engine

from data.db import migrate as run_migrations
from data.errors import OpsDashError

from ..settings import get_engine


def open_engine(migrate: bool = True) -> Engine:
    """The configured database, its schema brought to the latest revision unless ``migrate`` is False."""
    engine = get_engine()
    if migrate:
        run_migrations(engine)
    return engine


def read_password(prompt: str = "Password: ") -> str:
    """A password from the terminal (asked twice) or the first line of stdin (scripts)."""
    if sys.stdin.isatty():
        password = getpass.getpass(prompt)
        if getpass.getpass("Repeat password: ") != password:
            raise OpsDashError("the passwords do not match")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def print_logins(users: Sequence[dict]) -> None:
    for user in users:
        extra = f", {user['ward_id']}" if user["role"] == "ward_councillor" else ""
        print(f"login: {user['username']} / {user['password']} ({user['role']}{extra})", flush=True)
