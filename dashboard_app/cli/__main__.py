"""``python -m dashboard_app.cli``: the same as the ``opsdash`` command."""
from __future__ import annotations

from . import main

raise SystemExit(main())
