"""The formula rule's stored expressions (data/formula_patterns.py) are exactly what enumeration gives."""
from __future__ import annotations

import unicodedata

import pytest

from data import formula_rule


def test_the_stored_expression_of_this_pythons_unicode_is_the_enumerated_one():
    stored = formula_rule.STORED_PATTERNS.get(unicodedata.unidata_version)
    if stored is None:
        pytest.fail(f"no stored formula expression for Unicode {unicodedata.unidata_version}: "
                    "run `python data/formula_rule.py` with this Python and commit data/formula_patterns.py")
    assert stored == formula_rule.enumerated_pattern()
    assert formula_rule.formula_start_pattern() == stored
