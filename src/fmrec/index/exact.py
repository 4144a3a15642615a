"""``ExactIndex``: fused blocked GEMM (BLAS) + compiled running top-k, exact by construction."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:  # scipy is imported where a sparse matrix is built: `recommend --vectors` starts without it
    import scipy.sparse as sp

from fmrec.errors import ConfigError

MAX_POSITION = 0x7FFFFFFE  # positions fit a selection key's low half and int32 exclusion indices (scipy's)
_EMPTY_PTR = np.zeros(0, dtype=np.int64)
_EMPTY_IDX = np.zeros(0, dtype=np.int32)


def check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    return int(k)


def as_exclusion(exclude: sp.spmatrix | None, n_rows: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated CSR arrays (indptr int64, sorted indices int32) of an exclusion matrix."""
    if exclude is None:
        return _EMPTY_PTR, _EMPTY_IDX
    if n_items > MAX_POSITION + 1:
        raise ConfigError(f"exclusions cover at most {MAX_POSITION + 1} items (int32 positions), got {n_items}")
    import scipy.sparse as sp

    m = sp.csr_matrix(exclude)
    if m.shape != (n_rows, n_items):
        raise ConfigError(f"exclusion matrix has shape {m.shape}; expected {(n_rows, n_items)}")
    if not m.has_sorted_indices:
        m = m.copy()
        m.sort_indices()
    if m.nnz and (int(m.indices.min()) < 0 or int(m.indices.max()) >= n_items):
        raise ConfigError(f"exclusion matrix holds item positions outside 0..{n_items - 1}")  # kernels index by them
    return np.ascontiguousarray(m.indptr, dtype=np.int64), np.ascontiguousarray(m.indices, dtype=np.int32)


def as_vectors(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} hold non-finite values")
    return arr


def default_blocks(n_items: int, k: int, budget_bytes: int) -> tuple[int, int]:
    """(users, items) per worker block so that one worker's scratch fits ``budget_bytes``.

    Items per block: up to 1024; users: what the budget leaves (16..2048).
    Measured with single-threaded OpenBLAS sgemm, 65 dims, 1 MiB scratch:
    256 x 1024 runs at 108 GFLOP/s, 512 x 512 at 120, 64 x 4096 at 80
    (``benchmarks/topk_scale.py`` records the blocks it used).  Narrow item
    blocks also keep the per-block exclusion scan short.
    """
    floats = max(1, budget_bytes // 4)
    bi = int(min(max(n_items, 1), 1024))
    bu = int(max(16, min(2048, floats // bi)))
    return bu, bi


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
_LOCAL = threading.local()


def _pool(n_threads: int) -> ThreadPoolExecutor:
    """A process-wide worker pool per size, reused across searches: a worker thread keeps its
    scratch buffers and OpenBLAS its per-thread packing memory (measured on 2 cores: ten
    10k-user searches took 2.6 s with fresh threads each time, 2.1 s as one 100k search)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(n_threads)
        if pool is None:
            pool = _POOLS[n_threads] = ThreadPoolExecutor(max_workers=n_threads,
                                                          thread_name_prefix="fmrec-exact")
        return pool


def _cscratch(bu: int, cols: int, k: int) -> Any:
    """This thread's scratch for the C kernels (:class:`fmrec.index._cbackend.Rows`), reused when it fits."""
    st = getattr(_LOCAL, "crows", None)
    if st is None or st.key != (bu, cols, k):
        from fmrec.index._cbackend import Rows

        st = _LOCAL.crows = Rows(bu, cols, k)
    return st


def _scratch(bu: int, cols: int, k: int) -> tuple[np.ndarray, ...]:
    """This thread's scratch (scores, their bits, heaps, fill, sample, candidates), reused when it fits."""
    key = (bu, cols, k)
    st = getattr(_LOCAL, "state", None)
    if st is None or st[0] != key:
        S = np.empty((bu, cols), dtype=np.float32)
        st = _LOCAL.state = (key, S, S.view(np.uint32), np.empty((bu, k), dtype=np.uint64),
                             np.empty(bu, dtype=np.int64), np.empty(cols // 4 + 1, dtype=np.float32),
                             np.empty(4 * k + 1, dtype=np.uint64))
    return st[1:]


def _blocks_t(items: np.ndarray, bi: int) -> list[np.ndarray]:
    """Each item block transposed into its own C-contiguous (dims x block) array: OpenBLAS packs
    it 7-10% faster than a transposed view (measured, 65 dims, 256 x 1024 blocks)."""
    n = items.shape[0]
    return [np.ascontiguousarray(items[j0:min(n, j0 + bi)].T) for j0 in range(0, n, bi)]


class ExactIndex:
    """Exact maximum-inner-product top-k over item vectors.

    Work is split into blocks of ``block_users`` users; ``n_threads`` worker
    threads (default: all cores) each own one scratch buffer of
    ``block_users x block_items`` floats (by default 2 MiB: 512 x 1024) and, for their user block, run a
    *single-threaded* BLAS GEMM against each item block followed at once by a
    compiled kernel (``_kernels.topk_block``) that masks the block's excluded
    items and merges it into a running per-user top-k while the scores are
    still in that core's cache.  BLAS is limited to one thread while a search
    runs (``fmrec._threads.blas_limit``), so the BLAS pool and the workers never
    compete for cores and no pool spins while another works.

    Items are visited in decreasing score for the mean searched user, so each
    user's top-k fills with good items in the first block (selected there by a
    sampled threshold and a quickselect) and later blocks are rejected 64
    scores at a time by a vectorised compare.  Memory is bounded by the scratch
    buffers and two output batches whatever the number of users; while the
    caller consumes one batch the workers compute the next.

    ``kernels``: ``"auto"`` (the C kernels of ``_ctopk.c`` when built, else numba),
    ``"c"`` or ``"numba"``.  ``fused``: with the C kernels on a CPU with AVX-512 or
    AVX2, and FMA (``None`` = there, the default), the GEMM itself runs in C, fused with the
    selection: after a user's first 1,024 items, scores are compared with the
    user's threshold in registers and never stored (same lists; see
    ``docs/architecture.md``).  ``fused=False`` keeps BLAS GEMM blocks.

    Ties are broken by smaller item position, so results are deterministic and
    independent of the thread count.  Fused scores are one FMA chain per (user,
    item), the same wherever the pair sits.  BLAS scores are float32 dot products
    whose last bit, on some CPUs (OpenBLAS's AMD Zen kernels), depends on where a
    user and an item fall in a GEMM block.  Batches therefore always start on a
    block boundary, and ``order_by`` fixes the item visiting order (default: the
    mean searched user): searching a slice of users that starts on a block
    boundary with the ``order_by`` of the whole set gives bit-identical lists
    and scores to searching the whole set (what ``fmrec.distributed`` relies on).
    """

    kind = "exact"

    def __init__(self, block_users: int | None = None, block_items: int | None = None,
                 max_block_bytes: int | None = None, n_threads: int | None = None,
                 reorder: bool = True, order_by: np.ndarray | None = None, kernels: str = "auto",
                 fused: bool | None = None) -> None:
        self.block_users = block_users
        self.kernels = kernels
        self.fused = fused
        self.order_by = None if order_by is None else np.asarray(order_by, dtype=np.float64).ravel()
        self.block_items = block_items
        self.max_block_bytes = max_block_bytes
        self.n_threads = n_threads
        self.reorder = reorder
        self.items_: np.ndarray | None = None

    def build(self, item_vectors: np.ndarray) -> "ExactIndex":
        items = as_vectors(item_vectors, "item vectors")
        if items.shape[0] > MAX_POSITION:
            raise ConfigError(f"ExactIndex holds at most {MAX_POSITION} items, got {items.shape[0]}")
        self.items_ = items
        return self

    @property
    def n_items(self) -> int:
        return 0 if self.items_ is None else int(self.items_.shape[0])

    @property
    def dim(self) -> int:
        return 0 if self.items_ is None else int(self.items_.shape[1])

    def _budget(self) -> int:
        if self.max_block_bytes is not None:
            return int(self.max_block_bytes)
        # 2 MiB (512 x 1024), whatever the L2: single-threaded sgemm is slower on short user
        # blocks and the per-block call overhead (a GEMM and a kernel call per block) grows.
        # Measured, GEMM + selection per user at 20k items, 65 dims: on a 512 KiB-L2 AVX2 EPYC
        # 64 x 1024 cost 12 % more CPU than 256 x 1024 or 512 x 512; on a 1 MiB-L2 AVX-512
        # EPYC 512 x 1024 took 20.1 us, 256 x 1024 21.2, 512 x 512 20.9, 1024 x 1024 21.5
        # (scores spill to L3, but the OpenBLAS kernel packs each item block once per 512 users).
        return 2 << 20

    def gemm_engine(self) -> str:
        """``"fused"`` when searches compute scores in the C kernels' own GEMM, ``"blas"`` when
        numpy's BLAS does (so BLAS settings such as ``OPENBLAS_CORETYPE`` matter)."""
        from fmrec.index._cbackend import resolve, resolve_fused

        return "fused" if resolve(self.kernels) == "c" and resolve_fused(self.fused) else "blas"

    def user_block(self, k: int = 100) -> int:
        """Users per GEMM block for a top-``k`` search of the built index."""
        return self._blocks(k)[0]

    def _blocks(self, k: int = 100) -> tuple[int, int]:
        bu, bi = default_blocks(self.n_items, k, self._budget())
        if self.block_items:
            bi = int(self.block_items)
            if not self.block_users:
                bu = int(max(1, min(512, self._budget() // (4 * bi))))
        if self.block_users:
            bu = int(self.block_users)
        return bu, bi

    def search(self, user_vectors: np.ndarray, k: int,
               exclude: sp.spmatrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item positions and scores for every user row, best first.

        ``exclude``: optional (n_users x n_items) sparse matrix; its nonzero
        pattern lists items never to return for that user.  Returns
        ``(ids int64 (n, k), scores float32 (n, k))`` padded with -1 / -inf.
        """
        parts = list(self.search_batches(user_vectors, k, exclude))
        if not parts:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])

    def _order(self, U: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Items in decreasing score for the mean user: (permuted items, perm, inverse)."""
        n = self.n_items
        assert self.items_ is not None
        if not self.reorder or n <= 1 or U.shape[0] == 0:
            perm = np.arange(n, dtype=np.int64)
            return self.items_, perm, perm
        mean = U.mean(axis=0, dtype=np.float64) if self.order_by is None else self.order_by
        if mean.shape != (self.items_.shape[1],):
            raise ConfigError(f"order_by has {mean.shape[0]} dimensions; the index has {self.items_.shape[1]}")
        prior = self.items_.astype(np.float64) @ mean
        perm = np.argsort(-prior, kind="stable").astype(np.int64)
        inv = np.empty(n, dtype=np.int64)
        inv[perm] = np.arange(n, dtype=np.int64)
        return np.ascontiguousarray(self.items_[perm]), perm, inv

    def search_batches(self, user_vectors: np.ndarray, k: int, exclude: sp.spmatrix | None = None,
                       batch_size: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(row_start, ids, scores)`` for consecutive batches of users.

        The next batch is computed by the workers while the caller consumes
        the current one (writing it to a sink, say).
        """
        from fmrec._threads import blas_limit, resolve_threads
        from fmrec.index._cbackend import resolve

        if self.items_ is None:
            raise ConfigError("index is empty: call build(item_vectors) first")
        k = check_k(k)
        U = as_vectors(user_vectors, "user vectors")
        if U.shape[1] != self.dim:
            raise ConfigError(f"user vectors have {U.shape[1]} dimensions; the index has {self.dim}")
        n_users = U.shape[0]
        indptr, indices = as_exclusion(exclude, n_users, self.n_items)
        bu, bi = self._blocks(k)
        bs = int(batch_size) if batch_size is not None else 8192
        if bs < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        bs = -(-bs // bu) * bu  # batches start on block boundaries (see the class docstring)
        n_items = self.n_items
        items, perm, inv = self._order(U)
        n_threads = max(1, min(resolve_threads(self.n_threads), -(-n_users // bu) if n_users else 1))
        scratch_cols = max(1, min(bi, n_items))

        backend = resolve(self.kernels)
        if self.gemm_engine() == "fused" and n_items > 0 and n_users > 0:
            # fused GEMM + selection (see _ctopk.c): the first panels' scores are stored and
            # selected as a first block; the rest never leave the registers unless they pass
            from fmrec.index import _cbackend as C

            dims = U.shape[1]
            panels = C.pack_panels(items)
            n_panels = -(-n_items // C.PANEL)
            first = max(1, min(n_panels, scratch_cols // C.PANEL))
            first_cols = min(n_items, first * C.PANEL)
            chunk = max(1, (256 << 10) // (dims * C.PANEL * 4))  # ~256 KiB of panels per sweep: L2-resident
            p_perm, p_panels, p_users = int(perm.ctypes.data), int(panels.ctypes.data), int(U.ctypes.data)
            p_rest = p_panels + first * dims * C.PANEL * 4

            def work(b0: int, s: int, e: int, out_s: np.ndarray, out_i: np.ndarray) -> None:
                _ = (panels, perm, U)  # the C kernels read these through raw pointers: keep them alive
                st = _cscratch(bu, first * C.PANEL, k)
                rows = e - s
                st.start(rows)
                ex, _ex_arrays = st.exclusions(indptr, indices, inv, s, e)  # arrays kept alive here
                pu = p_users + s * dims * 4
                st.fused_first(pu, rows, dims, p_panels, first)
                st.block(rows, first_cols, 0, p_perm, ex)
                if n_panels > first:
                    st.fused_rest(pu, rows, dims, p_rest, n_panels - first, first * C.PANEL,
                                  n_items - first * C.PANEL, p_perm, ex, chunk)
                st.finish(rows, out_s[s - b0:e - b0].view(np.uint32), out_i[s - b0:e - b0])
        elif backend == "c":
            items_t = _blocks_t(items, bi)
            p_perm = int(perm.ctypes.data)

            def work(b0: int, s: int, e: int, out_s: np.ndarray, out_i: np.ndarray) -> None:
                _ = perm  # the C kernels read it through a raw pointer: keep it alive
                st = _cscratch(bu, scratch_cols, k)
                rows = e - s
                st.start(rows)
                ex, _ex_arrays = st.exclusions(indptr, indices, inv, s, e)  # arrays kept alive here
                Ub = U[s:e]
                S = st.S
                for t, j0 in enumerate(range(0, n_items, bi)):
                    cols = items_t[t].shape[1]
                    np.matmul(Ub, items_t[t], out=S[:rows, :cols])
                    st.block(rows, cols, j0, p_perm, ex)
                st.finish(rows, out_s[s - b0:e - b0].view(np.uint32), out_i[s - b0:e - b0])
        else:
            from fmrec.index import _kernels as K

            items_t = _blocks_t(items, bi)

            def work(b0: int, s: int, e: int, out_s: np.ndarray, out_i: np.ndarray) -> None:
                S, Sbits, keys, fill, sample, cand = _scratch(bu, scratch_cols, k)
                rows = e - s
                fill[:rows] = 0
                if indptr.size:  # this block's exclusions in visiting order, sorted per user
                    ex_ptr = np.empty(rows + 1, dtype=np.int64)
                    ex_pos = np.empty(int(indptr[e] - indptr[s]), dtype=np.int64)
                    K.remap_exclusions(indptr, indices, inv, s, e, ex_ptr, ex_pos)
                    ex_cur = ex_ptr[:-1].copy()
                else:
                    ex_ptr = ex_pos = ex_cur = _EMPTY_PTR
                Ub = U[s:e]
                for t, j0 in enumerate(range(0, n_items, bi)):
                    cols = items_t[t].shape[1]
                    np.matmul(Ub, items_t[t], out=S[:rows, :cols])
                    K.topk_block(S, Sbits, rows, cols, j0, perm, ex_ptr, ex_pos, ex_cur, keys, fill, sample, cand)
                K.finish_rows(keys, fill, rows, out_s[s - b0:e - b0].view(np.uint32), out_i[s - b0:e - b0])

        def launch(b0: int, pool: ThreadPoolExecutor | None) -> tuple[int, np.ndarray, np.ndarray, list[Future[Any]]]:
            b1 = min(n_users, b0 + bs)
            heap_s = np.empty((b1 - b0, k), dtype=np.float32)
            heap_i = np.empty((b1 - b0, k), dtype=np.int64)
            futures: list[Future[Any]] = []
            for s in range(b0, b1, bu):
                e = min(b1, s + bu)
                if pool is None:
                    work(b0, s, e, heap_s, heap_i)
                else:
                    futures.append(pool.submit(work, b0, s, e, heap_s, heap_i))
            return b0, heap_i, heap_s, futures

        starts = list(range(0, n_users, bs))
        if not starts:
            return
        with blas_limit(1):
            if n_threads == 1:
                for b0 in starts:
                    start, ids, scores, _ = launch(b0, None)
                    yield start, ids, scores
                return
            pool = _pool(n_threads)
            inflight: list[list[Future[Any]]] = []  # every launched batch not yet waited for
            try:
                pending = launch(starts[0], pool)
                inflight.append(pending[3])
                for nxt in starts[1:] + [None]:
                    following = launch(nxt, pool) if nxt is not None else None
                    if following is not None:
                        inflight.append(following[3])
                    start, ids, scores, futures = pending
                    for f in futures:
                        f.result()
                    inflight.remove(futures)
                    yield start, ids, scores
                    pending = following  # type: ignore[assignment]
            finally:
                # abandoned early (the caller stopped, a task failed, Ctrl-C): drop queued work and
                # wait for running tasks -- of the batch being consumed *and* the one launched after
                # it -- before the arrays they read through raw pointers (C kernels) can be freed
                for futures in inflight:
                    for f in futures:
                        f.cancel()
                for futures in inflight:
                    for f in futures:
                        if not f.cancelled():
                            try:
                                f.result()
                            except BaseException:  # noqa: BLE001 - the caller is already leaving
                                pass
