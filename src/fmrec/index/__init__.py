"""Top-k search over item vectors: exact (fused blocked GEMM) and faiss (exact Flat, IVF, HNSW, PQ)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fmrec.index.exact import ExactIndex

if TYPE_CHECKING:
    from fmrec.index.faiss_index import FaissIndex, TuneResult, check_spec

_LAZY = {"FaissIndex", "TuneResult", "check_spec"}  # faiss_index.py loads on first use (12 ms of start-up)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from fmrec.index import faiss_index

        return getattr(faiss_index, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

INDEX_KINDS = ("exact", "flat", "<faiss factory string>")

_FAISS_OPTIONS = ("nprobe", "ef_search", "metric", "k_factor", "train_size", "max_exclusions", "batch_size",
                  "random_state")


def make_index(spec: Any, *, n_threads: int | None = None, **options: Any) -> Any:
    """An index from a spec, or the instance itself.

    ``"exact"`` -> :class:`ExactIndex`; ``"flat"`` / ``"Flat"`` -> ``FaissIndex("Flat")``
    (faiss ``IndexFlatIP``); any other string is a faiss factory string
    (``"IVF1024,Flat"``, ``"HNSW32"``, ``"IVF256,PQ16"``) -> ``FaissIndex(spec)``,
    checked here so a typo fails before any data is read.  ``options`` are
    FaissIndex parameters (``nprobe``, ``ef_search``, ``metric``, ``k_factor``,
    ``max_exclusions``, ...); None values are ignored.
    """
    from fmrec.errors import ConfigError

    opts = {k: v for k, v in options.items() if v is not None}
    unknown = set(opts) - set(_FAISS_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown index option(s) {sorted(unknown)}")
    if isinstance(spec, ExactIndex):
        return spec
    if isinstance(spec, str) and spec.strip().lower() == "exact":
        bad = set(opts) - {"batch_size"}
        if bad:
            raise ConfigError(f"{', '.join(sorted(bad))} apply to faiss indexes, not to the exact index")
        return ExactIndex(n_threads=n_threads)
    from fmrec.index.faiss_index import FaissIndex, check_spec

    if isinstance(spec, FaissIndex):
        return spec
    if isinstance(spec, str):
        if spec.strip().lower() == "flat":
            return FaissIndex("Flat", n_threads=n_threads, **opts)
        return FaissIndex(check_spec(spec), n_threads=n_threads, **opts)
    raise ConfigError(f"unknown index {spec!r}: use 'exact', 'flat' or a faiss factory string such as 'HNSW32'")


__all__ = ["ExactIndex", "FaissIndex", "TuneResult", "make_index", "check_spec", "INDEX_KINDS"]
