"""One place that sizes the three thread pools fmrec touches: BLAS, numba, faiss (OpenMP).

Each library brings its own pool; left alone they oversubscribe the cores
(BLAS threads x numba threads).  :func:`thread_limits` sets them together.
:func:`blas_limit` pins BLAS to one thread while the exact top-k's own worker
threads each run a single-threaded GEMM and then the selection on the same
core.  Measured on 2 cores, 256 x 4096 blocks: a 2-thread BLAS GEMM alternating
with a 2-thread numba merge ran the GEMM at 8 GFLOP/s (each idle pool spins
while the other works) against 100 GFLOP/s per thread with one BLAS thread.
:func:`faiss_threads` sizes faiss's OpenMP pool; :func:`import_faiss` asks it
to wait passively.
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


_CONTROLLER = None


def _controller():  # type: ignore[no-untyped-def]
    """One threadpoolctl controller per process (building one scans the loaded libraries)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


@contextmanager
def blas_limit(n_threads: int) -> Iterator[None]:
    """Limit every loaded BLAS (numpy's and faiss's OpenBLAS) to ``n_threads`` for the block.

    Used by the fused exact top-k: each worker thread runs a single-threaded
    GEMM and then its selection kernel on the block while it is in cache, so
    the BLAS pool and the workers never compete for cores.  Cheap: the library
    scan happens once per process.
    """
    global _CONTROLLER
    if _CONTROLLER is not None:
        # a library loaded since the scan (faiss imported later) would escape the limit
        import threadpoolctl

        if len(threadpoolctl.threadpool_info()) != len(_CONTROLLER.info()):
            _CONTROLLER = None
    with _controller().limit(limits=n_threads, user_api="blas"):
        yield


def import_faiss():  # type: ignore[no-untyped-def]
    """``import faiss``, first asking OpenMP pools to wait passively (unless ``OMP_WAIT_POLICY`` is set).

    By default libgomp threads spin after every parallel region; fmrec's faiss
    pool alternates with BLAS / numba work and often shares the machine, and a
    spinning pool then steals the cores the next stage needs.  Measured on 2
    busy cores: IVF-PQ training 2.4 s spinning vs 0.95 s passive; search speed
    is unchanged (its parallel regions are long).  Must happen before the first
    OpenMP runtime starts; a faiss imported earlier by the caller keeps its policy.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import faiss

    return faiss


@contextmanager
def faiss_threads(n_threads: int | None) -> Iterator[None]:
    """Set faiss's OpenMP pool to ``n_threads`` (None: all available cores) for the block."""
    faiss = import_faiss()

    n = resolve_threads(n_threads)
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


_AVX2_KERNELS = {"haswell", "zen", "sandybridge", "nehalem", "core2", "prescott", "atom", "bulldozer",
                 "piledriver", "steamroller", "excavator", "barcelona", "opteron"}


def cpu_has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU reports AVX-512 Foundation (Linux ``/proc/cpuinfo``; False if unreadable)."""
    try:
        with open(cpuinfo) as fh:
            return any(line.startswith("flags") and " avx512f" in line for line in fh)
    except OSError:
        return False


def blas_kernel_hint(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """A one-line hint when ``OPENBLAS_CORETYPE`` forces numpy's OpenBLAS onto kernels older
    than the CPU (AVX2 or older on an AVX-512 CPU), else None.

    Some machines set it for everything (faiss-cpu's own OpenBLAS may crash with the
    AVX-512 kernel); numpy's GEMM then runs slower: on a 2-core AVX-512 EPYC,
    ``OPENBLAS_CORETYPE=Haswell`` made the exact top-k's GEMM 1.6x slower
    (2.3 against 1.4 CPU s at 100k users x 20k items).
    """
    forced = os.environ.get("OPENBLAS_CORETYPE")
    if not forced or forced.strip().lower() not in _AVX2_KERNELS or not cpu_has_avx512(cpuinfo):
        return None
    return (f"OPENBLAS_CORETYPE={forced} keeps numpy's BLAS on older kernels on this AVX-512 CPU: "
            "the exact search's GEMM may run ~1.6x slower (unset it for fmrec unless it is there on purpose)")
