"""One place that sizes the three thread pools fmrec touches: BLAS, numba, faiss (OpenMP).

Each library brings its own pool; left alone they oversubscribe the cores
(BLAS threads x numba threads).  :func:`thread_limits` sets them together.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(n_threads: int | None) -> int:
    """``None`` or ``-1`` -> all available cores; otherwise a positive count (capped)."""
    cores = available_cores()
    if n_threads is None or n_threads == -1:
        return cores
    if n_threads < 1:
        from fmrec.errors import ConfigError

        raise ConfigError(f"n_threads must be a positive integer or -1, got {n_threads}")
    return n_threads


@contextmanager
def thread_limits(numba_threads: int | None = None, blas_threads: int | None = None) -> Iterator[None]:
    """Set numba's and BLAS's thread counts for the duration of the block."""
    import numba
    from threadpoolctl import threadpool_limits

    previous = numba.get_num_threads()
    n = min(resolve_threads(numba_threads), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    try:
        if blas_threads is None:
            yield
        else:
            with threadpool_limits(limits=blas_threads):
                yield
    finally:
        numba.set_num_threads(previous)
