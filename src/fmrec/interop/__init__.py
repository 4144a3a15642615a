"""Interop with the hosted FM + k-NN pipeline (``shared/docs/FORMATS.md``), without vendor packages.

* :mod:`fmrec.interop.mxnet_params` -- MXNet NDArray-list (``.params``) reader.
* :mod:`fmrec.interop.sagemaker` -- ``model.tar.gz`` -> fitted :class:`~fmrec.model.FactorizationMachine`.
* :mod:`fmrec.interop.recordio` -- RecordIO-protobuf reader and SDK-identical writer.

The sagemaker JSON lines layout (k-NN verbose output) is written by
:class:`fmrec.store.JsonlSink` (``format="sagemaker"``) and read by
:func:`fmrec.store.read_jsonl`.  See ``docs/interop.md``.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "read_ndarray_list": "fmrec.interop.mxnet_params",
    "load_params": "fmrec.interop.mxnet_params",
    "import_sagemaker": "fmrec.interop.sagemaker",
    "read_sagemaker_params": "fmrec.interop.sagemaker",
    "read_column_map": "fmrec.interop.sagemaker",
    "read_recordio": "fmrec.interop.recordio",
    "write_recordio": "fmrec.interop.recordio",
    "iter_records": "fmrec.interop.recordio",
    "read_recordio_interactions": "fmrec.interop.recordio",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fmrec.interop' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
