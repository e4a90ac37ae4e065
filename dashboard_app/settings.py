"""Server settings: the data layer's Settings, read once per process."""
from __future__ import annotations

from sqlalchemy import Engine

from data.db import get_engine as engine_for
from data.settings import Settings, current_settings

__all__ = ["Settings", "get_settings", "get_engine", "reset"]


def get_settings() -> Settings:
    """This process's settings (``data.settings.current_settings``): read and validated once."""
    return current_settings()


def get_engine() -> Engine:
    """The process-wide Engine for the configured database."""
    return engine_for(get_settings().database_url)


def reset() -> None:
    """Read the settings again at the next use (``opsdash serve --demo``, tests that change the environment)."""
    current_settings.cache_clear()
