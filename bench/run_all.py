"""Run every benchmark under bench/ (files named bench_*.py) and print their figures.

Each benchmark is a script that prints its own figures; pass --quick for a
smaller run (CI smoke). Figures and the machine they ran on go into
docs/performance.md.
"""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import os


def machine() -> str:
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) // 1024 // 1024} GiB RAM"
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cores{mem}, {platform.platform()}, Python {platform.python_version()}"


def main() -> int:
    here = Path(__file__).resolve().parent
    print(f"machine: {machine()}", flush=True)
    failed = 0
    for script in sorted(here.glob("bench_*.py")):
        print(f"\n=== {script.name}", flush=True)
        rc = subprocess.call([sys.executable, str(script), *sys.argv[1:]], cwd=here.parent)
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
