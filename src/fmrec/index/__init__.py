"""Top-k search over item vectors: exact (blocked GEMM) and faiss."""

from __future__ import annotations

from typing import Any

from fmrec.index.exact import ExactIndex
from fmrec.index.faiss_index import FaissIndex

INDEX_KINDS = ("exact", "flat")


def make_index(spec: Any) -> Any:
    """``"exact"`` -> ExactIndex, ``"flat"``/``"Flat"`` -> FaissIndex("Flat"), or an index instance."""
    from fmrec.errors import ConfigError

    if isinstance(spec, (ExactIndex, FaissIndex)):
        return spec
    if isinstance(spec, str):
        if spec.lower() == "exact":
            return ExactIndex()
        if spec.lower() == "flat":
            return FaissIndex("Flat")
    raise ConfigError(f"unknown index {spec!r}; choose one of {INDEX_KINDS}")


__all__ = ["ExactIndex", "FaissIndex", "make_index", "INDEX_KINDS"]
