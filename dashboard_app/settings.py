"""Server settings: the data layer's Settings, read once per process."""
from __future__ import annotations

from sqlalchemy import Engine

from data.db import get_engine as engine_for
from data.replica import ReadRoute, read_route
from data.settings import Settings, current_settings

__all__ = ["Settings", "get_settings", "get_engine", "get_read_route", "reset"]


def get_settings() -> Settings:
    """This process's settings (``data.settings.current_settings``): read and validated once."""
    return current_settings()


def get_engine() -> Engine:
    """The process-wide Engine for the configured database: the primary (sign-in, sessions, audit, writes)."""
    return engine_for(get_settings().database_url)


def get_read_route() -> ReadRoute:
    """Where the dashboard's reads go: ``OPSDASH_READ_DATABASE_URL``'s replica when caught up, else the primary."""
    settings = get_settings()
    return read_route(settings.database_url, settings.read_database_url)


def reset() -> None:
    """Read the settings again at the next use (``opsdash serve --demo``, tests that change the environment)."""
    current_settings.cache_clear()
