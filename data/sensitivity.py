"""The sensitivity rule (docs/architecture.md, invariant 1): one definition, in Python and in SQL.

A ticket may be shown only when

- ``is_sensitive`` is false, and
- its *category key* is one of the known categories: the ticketing system's own
  (``DEFAULT_CATEGORIES``, always known) and any an admin added
  (``ticket_categories``, which lists the defaults too, so a reader of the
  database sees the whole set in one place).

Everything else is sensitive: ``gbv`` however it is spelled, and any category
nobody has named on purpose (fail closed: a new category of the ticketing
system stays hidden until an admin adds it; ``opsdash category add``).

The category key is the category after

1. Unicode compatibility normalisation (NFKC: full-width ``ＧＢＶ`` is ``GBV``),
2. removal of every whitespace, control and invisible format character,
   anywhere in the text (``"gbv\\u200b"``, ``" GBV "``, ``"g\\u00adbv"``),
3. ASCII case folding (``GBV`` is ``gbv``).

Why ASCII folding rather than full Unicode case folding: every known
category is ASCII (``KEY_PATTERN``), so a key with any non-ASCII character
left after NFKC can never be a known category whatever its case, and is
hidden. Full folding would only add strings such as ``"graß"`` -> ``"grass"``
to a category; ASCII folding hides them (the safe side) and, unlike the
database's ``lower()``, gives the same answer on every database locale. A
look-alike letter from another script (Cyrillic ``В`` in ``GВV``) is not
folded into Latin by anything: it leaves an unknown key, hidden.

The same three steps run in PostgreSQL (``opsdash_key()``, created by
migration 0006 from ``pg_key_function_sql``), on SQLite (the same Python
function, registered on every connection by ``data.db``), and in the live
hub's matching of the tracking numbers and categories events name (``name_key``). The key of every
ticket is a column the database writes itself (``tickets.category_key``), so
every writer, the ticketing system included, keeps it right.
"""
from __future__ import annotations

import re
import unicodedata

#: The sensitive category's key: never a known category (ticket_categories refuses it).
SENSITIVE_KEY = "gbv"
#: The ticketing system's categories (migration 0006 makes them the known ones).
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "water", "electricity", "roads", "waste", "sanitation", "streetlights", "parks", "housing", "other",
)
#: What a known category may look like: a short ASCII word.
KEY_PATTERN = re.compile(r"^[a-z0-9_]{1,32}$")

#: Code points removed from a category before comparing it, as inclusive ranges: Unicode's
#: White_Space, every control (Cc) and format (Cf) character, and the other default-ignorable
#: code points (variation selectors, Hangul fillers, ...). Frozen here rather than read from
#: ``unicodedata``: the database's function is built from this list once (migration 0006), and
#: Python's Unicode version changes between releases. A character missing from it is not a
#: leak: it stays in the key, which is then unknown and hidden.
INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x0020), (0x007F, 0x00A0), (0x00AD, 0x00AD), (0x034F, 0x034F), (0x0600, 0x0605),
    (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2),
    (0x115F, 0x1160), (0x1680, 0x1680), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x2000, 0x200F),
    (0x2028, 0x202F), (0x205F, 0x206F), (0x3000, 0x3000), (0x3164, 0x3164), (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD),
    (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
_UPPER, _LOWER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"
_ASCII_FOLD = str.maketrans(_UPPER, _LOWER)


def _bracket(escape) -> str:
    return "[" + "".join(escape(lo) if lo == hi else f"{escape(lo)}-{escape(hi)}" for lo, hi in INVISIBLE_RANGES) + "]"


_INVISIBLE = re.compile(_bracket(lambda cp: f"\\U{cp:08x}"))


def name_key(text: str | None) -> str | None:
    """The key a category (or a tracking number) is compared by: NFKC, invisible characters out, ASCII-folded."""
    if text is None:
        return None
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", str(text))).translate(_ASCII_FOLD)


def is_known_key(key: str | None, known: frozenset[str] | set[str]) -> bool:
    """Whether ``key`` names a category that may be shown (never gbv, whatever ``known`` says)."""
    return key is not None and key != SENSITIVE_KEY and key in known


def pg_key_function_sql(name: str = "opsdash_key") -> str:
    """``CREATE OR REPLACE FUNCTION`` for PostgreSQL: ``name_key`` in SQL, step for step.

    Schema-qualified calls, so the function means the same under any search_path (it
    runs inside a generated column and row-level security policies). U+0000 cannot
    occur in PostgreSQL text, and its regular expressions refuse it: the class starts at 1.
    """
    pattern = _bracket(lambda cp: f"\\U{max(cp, 1):08x}")
    return (
        f"CREATE OR REPLACE FUNCTION {name}(value text) RETURNS text\n"
        "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE\n"
        "AS $fn$ SELECT pg_catalog.translate(pg_catalog.regexp_replace(pg_catalog.normalize(value, 'NFKC'), "
        f"'{pattern}', '', 'g'), '{_UPPER}', '{_LOWER}') $fn$"
    )


__all__ = ["DEFAULT_CATEGORIES", "INVISIBLE_RANGES", "KEY_PATTERN", "SENSITIVE_KEY", "name_key",
           "is_known_key", "pg_key_function_sql"]
