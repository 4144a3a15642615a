"""fmrec: factorization machines to exact top-k recommendations for every user.

Heavy modules (numba kernels, faiss) are imported lazily so that ``import fmrec``
and ``fmrec --help`` stay fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Interactions": "fmrec.data",
    "IdMap": "fmrec.data",
    "read_interactions": "fmrec.data",
    "load_builtin": "fmrec.data",
    "FactorizationMachine": "fmrec.model",
    "load_model": "fmrec.model",
    "export_vectors": "fmrec.export",
    "ExactIndex": "fmrec.index",
    "FaissIndex": "fmrec.index",
    "recommend_all": "fmrec.recommend",
    "TopK": "fmrec.topk",
    "open_sink": "fmrec.store",
    "VectorSet": "fmrec.vectors",
    "load_vectors": "fmrec.vectors",
    "save_vectors": "fmrec.vectors",
    "recommend_dask": "fmrec.distributed",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fmrec' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
