"""The C selection kernels of :class:`~fmrec.index.ExactIndex` (``_ctopk.c``), through ctypes.

Built by ``pip install`` when a C compiler is present (an optional extension: without
one the install still succeeds and ExactIndex uses the numba kernels of
``_kernels.py``, which compute the same lists).  Why C beside numba: a command that
scores a vectors file spends ~0.3 s of its start-up in numba (importing it, and the
target context it builds before it loads a cached kernel); this library loads in about
a millisecond.  ctypes releases the GIL for every call, so worker threads run the
kernels in parallel like numba's ``nogil`` functions.

Algorithm (see ``_ctopk.c``): per user row an unordered buffer of keys (capacity
``2k + 16``) and a threshold T (the k-th best score once k are known).  The first
block of a row is selected by a sampled threshold and a quickselect; later blocks
are scanned 64 scores at a time into a bit mask against T, and only set bits are
keyed and appended; a full buffer is cut back to its k best (quickselect), which
raises T.  At the end each row is cut to k, sorted by numpy (its AVX-512 / AVX2
sort of uint64 keys), and written best first.  Compared with the numba kernels'
per-row heap this replaces ~40 sifts per user (each ~40 ns of unpredictable
branches) by appends.

``FMREC_KERNELS=numba`` in the environment forces the numba kernels;
``FMREC_KERNELS=c`` makes a missing library an error.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from typing import Any

import numpy as np

from fmrec.errors import ConfigError

_LOCK = threading.Lock()
_LIB: Any = None
_LOADED = False

LOWEST = np.float32(-3.4028235e38)
KEY_BITS_NEG_INF = np.uint32(0xFF800000)

_P = ctypes.c_void_p
_I = ctypes.c_int64


def library_path() -> str | None:
    """Path of the built library, or None when it was not built."""
    try:
        spec = importlib.util.find_spec("fmrec.index._ctopk")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return None
    return spec.origin


def _load() -> Any:
    global _LIB, _LOADED
    with _LOCK:
        if not _LOADED:
            path = library_path()
            lib = None
            if path is not None:
                try:
                    lib = ctypes.CDLL(path)
                except OSError:
                    lib = None
            if lib is not None:
                lib.fmrec_topk_block.argtypes = [_P, _I, _I, _I, _I, _P, _P, _P, _P, _I, _P, _I, _I, _P, _P, _P, _P, _I, _P]
                lib.fmrec_topk_block.restype = None
                lib.fmrec_reset_rows.argtypes = [_P, _P, _I]
                lib.fmrec_reset_rows.restype = None
                lib.fmrec_remap_exclusions.argtypes = [_P, _P, _P, _I, _I, _P, _P]
                lib.fmrec_remap_exclusions.restype = None
                lib.fmrec_finish_select.argtypes = [_P, _I, _I, _P, _I, _P]
                lib.fmrec_finish_select.restype = None
                lib.fmrec_finish_write.argtypes = [_P, _I, _I, _P, _I, _P, _P]
                lib.fmrec_finish_write.restype = None
                lib.fmrec_select_isa.argtypes = [_I]
                lib.fmrec_select_isa.restype = _I
                lib.fmrec_pack_panels.argtypes = [_P, _I, _I, _P]
                lib.fmrec_pack_panels.restype = None
                lib.fmrec_fused_scores.argtypes = [_P, _I, _I, _P, _I, _P, _I]
                lib.fmrec_fused_scores.restype = None
                lib.fmrec_fused_select.argtypes = [_P, _I, _I, _P, _I, _I, _I, _P, _P, _P, _P, _I, _P, _I, _I, _P,
                                                   _P, _P, _I]
                lib.fmrec_fused_select.restype = None
                lib.fmrec_fused_available.argtypes = []
                lib.fmrec_fused_available.restype = _I
                lib.fmrec_ivf_scan.argtypes = [_P, _I, _I, _I, _P, _I, _P, _P, _P, _P, _P, _I, _P, _P, _I, _I, _P, _P,
                                               _I]
                lib.fmrec_ivf_scan.restype = None
                lib.fmrec_ivf_fast.argtypes = []
                lib.fmrec_ivf_fast.restype = _I
            _LIB = lib
            _LOADED = True
        return _LIB


def available() -> bool:
    return _load() is not None


def resolve(kernels: str | None) -> str:
    """"c" or "numba" for an ExactIndex's ``kernels`` setting ("auto", "c", "numba" or None = auto;
    the environment's ``FMREC_KERNELS`` overrides "auto")."""
    want = (kernels or "auto").lower()
    if want == "auto":
        want = os.environ.get("FMREC_KERNELS", "auto").strip().lower() or "auto"
    if want not in ("auto", "c", "numba"):
        raise ConfigError(f"kernels must be 'auto', 'c' or 'numba', got {want!r}")
    if want == "numba":
        return "numba"
    if available():
        return "c"
    if want == "c":
        raise ConfigError("the C selection kernels are not built (pip install needs a C compiler); "
                          "use kernels='numba'")
    return "numba"


def fused_available() -> bool:
    """True when the fused GEMM + selection kernels can run here (library built, CPU with AVX-512 or
    AVX2, and FMA; within the level :func:`set_isa` allows)."""
    lib = _load()
    return lib is not None and bool(lib.fmrec_fused_available())


def resolve_fused(fused: bool | None) -> bool:
    """Whether a C-kernel search uses the fused GEMM (None: where available; the
    environment's ``FMREC_FUSED=0`` turns it off)."""
    if fused is None:
        if os.environ.get("FMREC_FUSED", "").strip().lower() in ("0", "no", "false", "off"):
            return False
        return fused_available()
    if fused and not fused_available():
        raise ConfigError("the fused GEMM kernels need the C library and a CPU with AVX-512 or AVX2, and FMA")
    return bool(fused)


def ivf_fast() -> bool:
    """True when the IVF list scan has a vector path here (AVX2 with FMA)."""
    lib = _load()
    return lib is not None and bool(lib.fmrec_ivf_fast())


PANEL = 32  # items per packed panel of the fused kernels


def pack_panels(items: np.ndarray) -> np.ndarray:
    """Items (n, K) float32 C-contiguous in the fused kernels' panel layout (zero-padded to 32)."""
    n, K = items.shape
    out = np.empty(max(1, -(-n // PANEL)) * K * PANEL, dtype=np.float32)
    _load().fmrec_pack_panels(_ptr(items), n, K, _ptr(out))
    return out


_ISA_LIMIT = [-1]  # set_isa's limit, for the kernels that take the level per call (ivf_scan)


def set_isa(want: int) -> int:
    """Use at most this instruction set (2 AVX-512, 1 AVX2, 0 portable C; -1 the best the CPU
    has) for every later call; returns the level chosen.  Process-wide, for tests and
    benchmarks, and never while a search runs (a search picks its path when it starts)."""
    lib = _load()
    if lib is None:
        raise ConfigError("the C selection kernels are not built")
    _ISA_LIMIT[0] = int(want)
    return int(lib.fmrec_select_isa(int(want)))


def _ptr(a: np.ndarray) -> int:
    return int(a.ctypes.data)


class Rows:
    """One worker's scratch for the C kernels: a user block's key buffers, fills, thresholds."""

    def __init__(self, bu: int, cols: int, k: int) -> None:
        self.lib = _load()
        self.key = (bu, cols, k)
        self.k = k
        self.cap = 2 * k + 16
        self.S = np.empty((bu, cols), dtype=np.float32)
        self.keys = np.empty((bu, self.cap), dtype=np.uint64)
        self.fill = np.empty(bu, dtype=np.int64)
        self.thr = np.empty(bu, dtype=np.float32)
        self.sample = np.empty(cols // 4 + 1, dtype=np.float32)
        self.cand_len = 4 * k + 1
        self.cand = np.empty(self.cand_len, dtype=np.uint64)
        self.tmp = np.empty(max(self.cap, self.cand_len, self.sample.shape[0]), dtype=np.uint64)
        self.p_S, self.p_keys, self.p_fill, self.p_thr = _ptr(self.S), _ptr(self.keys), _ptr(self.fill), _ptr(self.thr)
        self.p_sample, self.p_cand, self.p_tmp = _ptr(self.sample), _ptr(self.cand), _ptr(self.tmp)
        self.ld = cols

    def start(self, rows: int) -> None:
        self.lib.fmrec_reset_rows(self.p_fill, self.p_thr, rows)

    def block(self, rows: int, cols: int, col_offset: int, p_perm: int, ex: tuple[int, int, int, int]) -> None:
        self.lib.fmrec_topk_block(self.p_S, self.ld, rows, cols, col_offset, p_perm, ex[0], ex[1], ex[2], ex[3],
                                  self.p_keys, self.cap, self.k, self.p_fill, self.p_thr, self.p_sample, self.p_cand,
                                  self.cand_len, self.p_tmp)

    def finish(self, rows: int, out_bits: np.ndarray, out_i: np.ndarray) -> None:
        """Rows best first into ``out_bits`` (uint32 view of float32 scores) / ``out_i``, both
        C-contiguous (rows, k)."""
        _finish(self.keys, self.fill, self.tmp, self.k, rows, _ptr(out_bits), _ptr(out_i))

    def exclusions(self, indptr: np.ndarray, indices: np.ndarray, inv: np.ndarray, start: int,
                   stop: int) -> tuple[tuple[int, int, int, int], tuple[np.ndarray, ...]]:
        """Users ``start..stop-1``'s exclusions in visiting order, sorted per user, as the kernels'
        ``(ex_ptr, ex_pos, ex_cur, has)`` pointers, and the arrays behind them (keep them alive)."""
        if not indptr.size:
            return (0, 0, 0, 0), ()
        rows = stop - start
        ex_ptr = np.empty(rows + 1, dtype=np.int64)
        ex_pos = np.empty(max(1, int(indptr[stop] - indptr[start])), dtype=np.int64)
        self.remap(indptr, indices, inv, start, stop, ex_ptr, ex_pos)
        ex_cur = ex_ptr[:-1].copy()
        return (_ptr(ex_ptr), _ptr(ex_pos), _ptr(ex_cur), 1), (ex_ptr, ex_pos, ex_cur)

    def fused_first(self, p_users: int, rows: int, dims: int, p_panels: int, n_panels: int) -> None:
        """Scores of ``rows`` users against the first ``n_panels`` panels into ``S`` (fused kernels)."""
        self.lib.fmrec_fused_scores(p_users, rows, dims, p_panels, n_panels, self.p_S, self.ld)

    def fused_rest(self, p_users: int, rows: int, dims: int, p_panels: int, n_panels: int, col_offset: int,
                   n_cols: int, p_perm: int, ex: tuple[int, int, int, int], chunk: int) -> None:
        """The rest of the catalogue (panels from ``p_panels``, visiting-order columns from
        ``col_offset``) merged into the rows' buffers without storing scores."""
        self.lib.fmrec_fused_select(p_users, rows, dims, p_panels, n_panels, col_offset, n_cols, p_perm, ex[0], ex[1],
                                    ex[2], ex[3], self.p_keys, self.cap, self.k, self.p_fill, self.p_thr, self.p_tmp,
                                    chunk)

    def remap(self, indptr: np.ndarray, indices: np.ndarray, inv: np.ndarray, start: int, stop: int,
              out_ptr: np.ndarray, out_pos: np.ndarray) -> None:
        self.lib.fmrec_remap_exclusions(_ptr(indptr), _ptr(indices), _ptr(inv), start, stop, _ptr(out_ptr),
                                        _ptr(out_pos))


class IvfLists:
    """An IVF index's inverted lists for :func:`ivf_search`: each list's items (original
    vectors, catalogue positions) packed as whole panels of 32 (positions -1 pad)."""

    def __init__(self, items: np.ndarray, lists: list[np.ndarray]) -> None:
        dims = items.shape[1]
        n_panels = np.array([-(-len(ids) // PANEL) for ids in lists], dtype=np.int64)
        self.list_ptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(n_panels, out=self.list_ptr[1:])
        total = int(self.list_ptr[-1])
        self.panel_ids = np.full((max(total, 1), PANEL), -1, dtype=np.int64)
        self.panels = np.zeros(max(total, 1) * dims * PANEL, dtype=np.float32)
        self.dims = dims
        self.n_items = items.shape[0]
        lib = _load()
        for l, ids in enumerate(lists):
            if not len(ids):
                continue
            p0 = int(self.list_ptr[l])
            self.panel_ids.reshape(-1)[p0 * PANEL:p0 * PANEL + len(ids)] = ids
            vecs = np.ascontiguousarray(items[ids], dtype=np.float32)
            lib.fmrec_pack_panels(_ptr(vecs), len(ids), dims, _ptr(self.panels) + p0 * dims * PANEL * 4)


def ivf_scan(lists: IvfLists, U: np.ndarray, probes: np.ndarray, k: int, r0: int, r1: int,
             ex: tuple[np.ndarray, np.ndarray, int] | None, out_bits: np.ndarray, out_i: np.ndarray) -> None:
    """Rows ``r0..r1-1`` of a batch: every item of each user's probed lists (``probes`` (rows,
    nprobe) list ids, -1 none) scored exactly, exclusions (``ex`` = CSR indptr, indices and
    the batch's first row in them) skipped, the k best written best first into ``out_bits``
    (uint32 view of float32 scores) / ``out_i`` rows ``r0..r1-1``, padded with -inf / -1."""
    lib = _load()
    rows = r1 - r0
    cap = 2 * k + 16
    keys = np.empty((max(rows, 1), cap), dtype=np.uint64)
    fill = np.empty(max(rows, 1), dtype=np.int64)
    tmp = np.empty(cap, dtype=np.uint64)
    banned = np.zeros(lists.n_items, dtype=np.uint8)
    if ex is not None:
        indptr, indices, first = ex
        p_ptr, p_idx, has = _ptr(indptr) + 8 * first, _ptr(indices), 1
    else:
        p_ptr = p_idx = has = 0
    isa = 2 if _ISA_LIMIT[0] < 0 else _ISA_LIMIT[0]
    lib.fmrec_ivf_scan(_ptr(U), r0, r1, lists.dims, _ptr(probes), probes.shape[1], _ptr(lists.list_ptr),
                       _ptr(lists.panels), _ptr(lists.panel_ids), p_ptr, p_idx, has, _ptr(banned), _ptr(keys), cap,
                       k, _ptr(fill), _ptr(tmp), isa)
    _finish(keys, fill, tmp, k, rows, _ptr(out_bits) + 4 * k * r0, _ptr(out_i) + 8 * k * r0)


def _finish(keys: np.ndarray, fill: np.ndarray, tmp: np.ndarray, k: int, rows: int, p_bits: int, p_ids: int) -> None:
    """Cut each key buffer row (``keys`` (>= rows, cap)) to its k best, sort them (numpy's SIMD
    sort) and write them best first as float32 bits / positions at ``p_bits`` / ``p_ids``."""
    lib = _load()
    cap = keys.shape[1]
    lib.fmrec_finish_select(_ptr(keys), cap, k, _ptr(fill), rows, _ptr(tmp))
    keys[:rows, :k].sort(axis=1)
    lib.fmrec_finish_write(_ptr(keys), cap, k, _ptr(fill), rows, p_bits, p_ids)
