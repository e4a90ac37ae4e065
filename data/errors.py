"""The exceptions OpsDash raises on purpose.

Each carries a message a person can act on; the UI and the command line show
``str(exc)`` as it is, so never put internals (SQL, stack details) in one.
"""
from __future__ import annotations


class OpsDashError(Exception):
    """Base class of every error OpsDash raises deliberately."""


class ConfigError(OpsDashError):
    """A setting is missing or has a value OpsDash cannot use."""


class NotAuthorized(OpsDashError):
    """The user may not see this (unknown user, wrong role, no ward, ...)."""


class InvalidValue(OpsDashError):
    """A value given by a person (filter, CLI option, form field) is not acceptable."""


class InvalidFilter(InvalidValue):
    """A filter value is not one OpsDash accepts."""


class NotFound(OpsDashError):
    """A named record (user, municipality, ticket) does not exist."""


class DatabaseBusy(OpsDashError):
    """Every worker of a lane of database work stayed busy for as long as a task may wait (data.workers)."""


class DatabaseSlow(DatabaseBusy):
    """PostgreSQL stopped a query that ran longer than the statement timeout (``OPSDASH_STATEMENT_TIMEOUT_S``).

    A kind of DatabaseBusy: what is on screen stays, and the message says why it did not change.
    """


class ExportCancelled(OpsDashError):
    """An export stopped by its caller (the server shutting down), which answers the user and audits it."""
