"""Helpers shared by the benchmark scripts (MovieLens location, table printing, JSON output)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FMREC_SHARED", REPO.parent / "shared"))
ML100K = SHARED / "data" / "ml-100k"
RESULTS = Path(__file__).resolve().parent / "results"


def need_ml100k() -> Path:
    if not (ML100K / "ua.base").is_file():
        sys.exit(f"MovieLens-100K not found at {ML100K}: run `fmrec datasets fetch movielens-100k --dest data` "
                 "and set FMREC_SHARED, or point FMREC_SHARED at the shared/ folder")
    return ML100K


def machine() -> dict[str, Any]:
    import numpy as np

    return {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
            "platform": platform.platform(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cols, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path
