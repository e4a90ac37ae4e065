"""Server settings: the data layer's Settings, read once per process."""
from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine

from data.db import get_engine as engine_for
from data.settings import Settings, load_settings

__all__ = ["Settings", "get_settings", "get_engine", "reset"]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def get_engine() -> Engine:
    """The process-wide Engine for the configured database."""
    return engine_for(get_settings().database_url)


def reset() -> None:
    """Forget cached settings (tests that change the environment)."""
    get_settings.cache_clear()
