"""The sensitivity rule restated for tests, independently of data.sensitivity (issue 14, point 6).

Written from the rule's words, not from the production code: no shared regex,
list or helper. "A category is compared after Unicode compatibility
normalisation, case folding and removal of surrounding and invisible
whitespace/format characters; a ticket whose category is not a known one is
sensitive, and so is gbv."
"""
from __future__ import annotations

import unicodedata

#: The ticketing system's categories, typed out again.
KNOWN = frozenset({"water", "electricity", "roads", "waste", "sanitation", "streetlights", "parks", "housing",
                   "other"})


def _unseen(ch: str) -> bool:
    """A character a reader cannot see: spaces, controls, format characters, variation selectors, fillers."""
    cp = ord(ch)
    return (ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp")
            or 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF
            or cp in (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164, 0xFFA0))


def shown_category(raw: str | None) -> str | None:
    """The category as staff see it, or None when the ticket must stay hidden."""
    if raw is None:
        return None
    folded = "".join(ch for ch in unicodedata.normalize("NFKC", raw) if not _unseen(ch)).lower()
    return folded if folded in KNOWN else None


def hidden(row: dict) -> bool:
    """A ticket row (``tests.helpers.databases.ticket_record``) that no read may return."""
    return bool(row["is_sensitive"]) or shown_category(row["category"]) is None
