"""Helpers for the dashboard tests (not fixtures): hostile tickets, reading rendered views."""
from __future__ import annotations

import html
import re
import uuid
from datetime import datetime, timedelta, timezone

import panel as pn
from sqlalchemy import Engine

from data.models import Ticket
from data.scope import Scope

XSS_DESCRIPTION = "<img src=x onerror=window.__xss=1>"


def add_ticket(engine: Engine, municipality_id, ward_id: str | None, **fields) -> dict:
    """Insert one ticket (open, today, not sensitive unless ``fields`` say otherwise); returns its values."""
    values = dict(
        id=uuid.uuid4(), tenant_id=uuid.UUID(str(municipality_id)), ward_id=ward_id,
        tracking_number=f"T-{uuid.uuid4().hex[:10].upper()}", category="water", status="open", severity="high",
        description="test ticket", address="1 Test Street", language="en", is_sensitive=False,
        created_at=datetime.now(timezone.utc) - timedelta(minutes=5),
    )
    values.update(fields)
    with engine.begin() as conn:
        conn.execute(Ticket.__table__.insert().values(**values))
    return values


def rendered_texts(view: pn.viewable.Viewable, css_class: str) -> list[str]:
    """The literal texts of the ``text()`` panes with ``css_class`` in a rendered view, and of the
    elements with that class in the markup of its HTML panes (the KPI cards are one pane)."""
    inner = re.compile(rf'<div class="{re.escape(css_class)}(?: [^"]*)?">([^<]*)</div>')
    texts = []
    for pane in view.select(pn.pane.HTML):
        if css_class in (pane.css_classes or []):
            texts.append(html.unescape(pane.object))
        else:
            texts += [html.unescape(t) for t in inner.findall(str(pane.object or ""))]
    return texts


def kpi_cards(view: pn.viewable.Viewable) -> dict[str, str]:
    """Card title -> shown value, from KpiCards.render output."""
    return dict(zip(rendered_texts(view, "opsdash-kpi-title"), rendered_texts(view, "opsdash-kpi-value")))


def other_ward(result, scope: Scope) -> str:
    wards = next(m["wards"] for m in result.municipalities if m["id"] == str(scope.municipality_id))
    return next(w for w in wards if w != scope.ward_id)
