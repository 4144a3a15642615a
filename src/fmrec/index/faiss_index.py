"""``FaissIndex``: faiss indexes (exact ``Flat`` and approximate) behind the same
interface as :class:`~fmrec.index.ExactIndex`.

Metric, per index type (``metric="auto"``):

* ``Flat``: ``IndexFlatIP`` -- exact inner product, no transform.
* everything else (``IVF…,Flat``, ``IVF…,PQ…``, ``IVF…,SQ8``, ``HNSW…``, ``PQ…``):
  the MIPS-to-L2 transform.  Items become ``[x, sqrt(M^2 - ||x||^2)]`` (``M`` the
  largest item norm) and queries ``[q, 0]``, so ``||q - x'||^2 = ||q||^2 + M^2 -
  2 <q, x>`` and the L2 order *is* the inner-product order.  faiss supports inner
  product for IVF and HNSW too, but on FM-like vectors (item norms vary with the
  popularity bias) it is much worse.  Measured recall@100 on
  ``benchmarks/topk_scale.py``'s vectors, 2,000 users x 20,000 items:
  ``IVF512,Flat`` inner product 0.70 at nprobe 16, 0.94 at 32, 0.995 at 64;
  transformed 0.978 at 16, 0.998 at 32 (k-means cells are built for L2).
  ``HNSW32`` inner product 0.79 at efSearch 64, 0.944 at 512 (inner product is
  not a metric, and the graph's neighbourhoods do not lead to large-norm items);
  transformed 0.985 at 64, 1.000 at 256.  ``metric="ip"`` forces inner product
  where faiss has it.

Candidates from an approximate index are re-scored exactly (inner product of the
original vectors, float32 like BLAS) and re-ranked, so reported scores are
true scores whatever the codes (PQ) or transform; ``k_factor`` fetches more
candidates than ``k`` for the re-ranking (default 1, 4 for PQ/SQ codes).

``IVF…,Flat`` indexes (where the C kernels are built, ``scan_lists``): faiss's
quantizer picks each user's ``nprobe`` lists and fmrec's C kernels score *every*
item of those lists exactly (original vectors, the FMA chain of the fused exact
GEMM), skip excluded items and keep the k best -- no candidate heap, no over-fetch,
no re-rank (4x faster than faiss's own scan at 100k x 100k, recall at least as high).

Exclusions (seen items), faiss's own search: each batch over-fetches ``k_factor * k``
plus the largest exclusion count of its users and filters; users with more than
``max_exclusions`` excluded items, and users an approximate index returns too
few candidates for (either search), are answered by an :class:`ExactIndex` over the same items
(``stats_`` counts them).  ``tune`` raises ``nprobe`` / ``efSearch`` (doubling)
until recall@k against ``ExactIndex`` on a sample of users reaches a target.

``save(folder)`` writes ``index.faiss`` (``faiss.write_index``), ``items.npy``
(the item vectors, for exact re-scoring and the fallback) and ``index.json`` (spec,
metric, transform, parameters, tuning result, checksums); ``FaissIndex.load``
checks all of it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:  # scipy is imported where a sparse matrix is built: `recommend --vectors` starts without it
    import scipy.sparse as sp

from fmrec._artifacts import sha256_file, staged_folder
from fmrec._threads import import_faiss
from fmrec.errors import ArtifactError, ConfigError
from fmrec.index.exact import as_exclusion, as_vectors, check_k

log = logging.getLogger("fmrec.index")

FORMAT = "fmrec-faiss-index"
FORMAT_VERSION = 1
METRICS = ("auto", "ip", "l2")
#: dimensions used to check a factory string before the data is known
_PROBE_DIMS = (960, 1024, 64)


@dataclass
class TuneResult:
    """Outcome of :meth:`FaissIndex.tune`: the parameter set and the recall it reached."""

    parameter: str | None
    value: int | None
    recall: float
    target: float
    k: int
    n_users: int
    reached: bool
    history: list[tuple[Any, ...]] = field(default_factory=list)  # (value, recall, seconds, standard error)
    stderr: float = 0.0  # standard error of the sample's pooled recall (linearised over its users)

    def __str__(self) -> str:
        setting = f"{self.parameter}={self.value}" if self.parameter else "no search parameter"
        verdict = "reached" if self.reached else "NOT reached"
        return (f"{setting}: recall@{self.k} {self.recall:.4f} (± {self.stderr:.4f}) on {self.n_users} users "
                f"(target {self.target:.3f} {verdict})")


def family(spec: str) -> str:
    """``flat``, ``ivf``, ``hnsw``, ``pq`` or ``other`` for a factory string."""
    body = spec.strip()
    parts = [p.strip() for p in body.split(",")]
    # skip leading transforms (PCA64, OPQ16_64, L2norm, RR64, ...)
    while len(parts) > 1 and re.match(r"^(PCA|OPQ|RR|ITQ|L2norm|Pad)", parts[0]):
        parts = parts[1:]
    head = parts[0]
    if head == "Flat" and len(parts) == 1:
        return "flat"
    if head.startswith("IVF"):
        return "ivf"
    if head.startswith("HNSW"):
        return "hnsw"
    if head.startswith("PQ"):
        return "pq"
    return "other"


def _uses_codes(spec: str) -> bool:
    """Whether stored vectors are compressed (distances approximate): PQ / SQ / LSH codes."""
    return bool(re.search(r"(^|[,_])(PQ|SQ|LSH|RQ|LSQ)", spec)) or "fs" in spec


def _faiss_message(exc: BaseException) -> str:
    """faiss's message without the C++ location prefix, on one line."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^.*?Error in .*? at \S+:\d+: ", "", text)
    for marker in ("Error: ", "failed: "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    return text[:300]


def check_spec(spec: Any) -> str:
    """Validate a faiss factory string without data; return it. One-line ConfigError otherwise."""
    faiss = import_faiss()

    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"unknown index {spec!r}: use 'exact', 'flat' or a faiss factory string such as "
                          "'IVF1024,Flat' or 'HNSW32'")
    spec = spec.strip()
    last = None
    for d in _PROBE_DIMS:
        try:
            faiss.index_factory(d, spec, faiss.METRIC_L2)
            return spec
        except RuntimeError as exc:  # faiss reports parse errors as RuntimeError
            last = exc
    raise ConfigError(f"unknown index {spec!r}: not 'exact', 'flat' or a faiss factory string faiss accepts "
                      f"(faiss: {_faiss_message(last) if last else 'rejected'}); e.g. 'IVF1024,Flat', 'HNSW32', "
                      "'IVF256,PQ16'")


class FaissIndex:
    """A faiss index over item vectors, searched by inner product.

    Parameters
    ----------
    spec : faiss factory string: ``"Flat"`` (exact ``IndexFlatIP``), ``"IVF1024,Flat"``,
        ``"HNSW32"``, ``"IVF256,PQ16"``, ...
    batch_size : users per faiss search call.
    nprobe, ef_search : search parameters of IVF / HNSW indexes (None: faiss's default,
        or the tuned value).
    metric : ``"auto"`` (inner product for Flat, MIPS-to-L2 transform otherwise; see
        the module docstring), ``"ip"`` or ``"l2"`` (transform).
    k_factor : fetch ``ceil(k_factor * k)`` candidates (plus exclusions) and re-rank
        them exactly; None: 1, or 4 when the index stores compressed codes.
    train_size : vectors sampled (``random_state``) to train IVF / PQ indexes.
    max_exclusions : users with more excluded items are answered by the exact index
        (faiss's own search; the ``IVF…,Flat`` list scan needs no fallback).
    n_threads : faiss (OpenMP) threads, and the exact fallback's; None = all cores.
    scan_lists : for ``IVF…,Flat`` indexes, score every item of each user's probed lists
        exactly in fmrec's C kernels (faiss picks the lists) instead of faiss's own
        list scan + re-rank of its top ``k_factor * k``.  None (default): where the C
        kernels are built.  The probed items are the same, so recall is at least
        faiss's (every probed item is ranked by its true score, none is cut by a
        candidate heap first), and no over-fetch for exclusions is needed (users
        with long histories need no exact fallback).  Measured at 100k users x 100k
        items, IVF1024 nprobe 5, seen masked: 1.52 s with faiss's scan, 0.35 s.
    """

    kind = "faiss"

    def __init__(self, spec: str = "Flat", batch_size: int = 4096, *, nprobe: int | None = None,
                 ef_search: int | None = None, metric: str = "auto", k_factor: float | None = None,
                 train_size: int = 100_000, max_exclusions: int = 1000, n_threads: int | None = None,
                 random_state: int = 0, scan_lists: bool | None = None) -> None:
        self.spec = spec
        self.scan_lists = scan_lists
        self.batch_size = batch_size
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.metric = metric
        self.k_factor = k_factor
        self.train_size = train_size
        self.max_exclusions = max_exclusions
        self.n_threads = n_threads
        self.random_state = random_state
        self.index_ = None
        self.items_: np.ndarray | None = None
        self.n_items = 0
        self.dim = 0
        self.tuned_: TuneResult | None = None
        self.stats_: dict[str, int] = {"users": 0, "exact_fallback_users": 0, "short_lists_refilled": 0}
        self._exact = None
        self._loaded_from: str | None = None
        self._refill = True
        self._lists: Any = None  # IvfLists for scan_lists, False when not used; built on first search

    # ------------------------------------------------------------------ properties
    @property
    def family(self) -> str:
        return family(self.spec if self.spec.lower() != "flat" else "Flat")

    @property
    def is_exact(self) -> bool:
        """True for ``Flat`` searched by inner product (no re-ranking needed)."""
        return self.family == "flat" and self.metric_ == "ip"

    @property
    def metric_(self) -> str:
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.metric == "auto":
            return "ip" if self.family == "flat" else "l2"
        return self.metric

    def _k_factor(self) -> float:
        if self.k_factor is not None:
            if not (isinstance(self.k_factor, (int, float)) and self.k_factor >= 1):
                raise ConfigError(f"k_factor must be a number >= 1, got {self.k_factor!r}")
            return float(self.k_factor)
        return 4.0 if _uses_codes(self.spec) else 1.0

    def _check_params(self) -> None:
        for name in ("nprobe", "ef_search"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.max_exclusions, (int, np.integer)) or self.max_exclusions < 0:
            raise ConfigError(f"max_exclusions must be a non-negative integer, got {self.max_exclusions!r}")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.nprobe is not None and self.family != "ivf":
            raise ConfigError(f"nprobe applies to IVF indexes; {self.spec!r} is not one")
        if self.ef_search is not None and self.family != "hnsw" and "HNSW" not in self.spec:
            raise ConfigError(f"ef_search applies to HNSW indexes; {self.spec!r} is not one")

    # ------------------------------------------------------------------ building
    def _transform_items(self, items: np.ndarray) -> np.ndarray:
        parts = [items]
        if self.metric_ == "l2":
            norms2 = np.einsum("ij,ij->i", items.astype(np.float64), items.astype(np.float64))
            extra = np.sqrt(np.maximum(self.max_norm2_ - norms2, 0.0))
            parts.append(extra[:, None].astype(np.float32))
        if self.pad_:
            parts.append(np.zeros((items.shape[0], self.pad_), dtype=np.float32))
        return np.ascontiguousarray(np.hstack(parts), dtype=np.float32) if len(parts) > 1 else items

    def _transform_queries(self, U: np.ndarray) -> np.ndarray:
        extra = (1 if self.metric_ == "l2" else 0) + self.pad_
        if not extra:
            return U
        out = np.zeros((U.shape[0], U.shape[1] + extra), dtype=np.float32)
        out[:, : U.shape[1]] = U
        return out

    def _new_index(self, d: int) -> tuple[Any, int]:
        """faiss index for ``d`` input dims; pads with zero dims when PQ needs a multiple of m."""
        faiss = import_faiss()

        metric = faiss.METRIC_INNER_PRODUCT if self.metric_ == "ip" else faiss.METRIC_L2
        spec = "Flat" if self.spec.lower() == "flat" else self.spec.strip()
        if spec == "Flat" and metric == faiss.METRIC_INNER_PRODUCT:
            return faiss.IndexFlatIP(d), 0
        try:
            return faiss.index_factory(d, spec, metric), 0
        except RuntimeError as exc:
            m = re.search(r"PQ(\d+)", spec)
            if m:
                mult = int(m.group(1))
                pad = (-d) % mult
                if pad:
                    try:
                        return faiss.index_factory(d + pad, spec, metric), pad
                    except RuntimeError:
                        pass
            check_spec(spec)  # a parse error reads better than a dimension error
            raise ConfigError(f"faiss cannot build {spec!r} with {'inner product' if self.metric_ == 'ip' else 'L2'} "
                              f"over {d}-dimensional vectors: {_faiss_message(exc)}") from None

    def build(self, item_vectors: np.ndarray) -> "FaissIndex":
        """Build (train on a sample, add) over ``item_vectors``; a loaded index checks they match."""
        faiss = import_faiss()

        from fmrec._threads import faiss_threads

        items = as_vectors(item_vectors, "item vectors")
        if self._loaded_from is not None:
            assert self.items_ is not None
            if items.shape != self.items_.shape or not np.array_equal(items, self.items_):
                raise ConfigError(f"the index loaded from {self._loaded_from} was built over different item vectors "
                                  f"({self.items_.shape[0]} x {self.items_.shape[1]}; these are "
                                  f"{items.shape[0]} x {items.shape[1]}); rebuild it or drop it")
            return self
        self._check_params()
        if items.shape[0] == 0:
            raise ConfigError("cannot build a faiss index over 0 items")
        self.items_ = items
        self.n_items, self.dim = int(items.shape[0]), int(items.shape[1])
        self.max_norm2_ = float(np.max(np.einsum("ij,ij->i", items.astype(np.float64), items.astype(np.float64))))
        self.pad_ = 0
        d_in = self.dim + (1 if self.metric_ == "l2" else 0)
        index, self.pad_ = self._new_index(d_in)
        X = self._transform_items(items)
        t0 = time.perf_counter()
        with faiss_threads(self.n_threads):
            try:
                if not index.is_trained:
                    ivf = faiss.try_extract_index_ivf(index)
                    if ivf is not None:
                        if self.n_items < ivf.nlist:
                            raise ConfigError(f"{self.spec!r} has {ivf.nlist} IVF lists but there are only "
                                              f"{self.n_items} items; use IVF{max(1, self.n_items // 39)} or fewer")
                        if self.n_items < 39 * ivf.nlist:
                            log.warning("%s: %d items train %d IVF lists (faiss suggests >= %d per list)",
                                        self.spec, self.n_items, ivf.nlist, 39)
                        ivf.cp.min_points_per_centroid = 1  # warned above, in one line
                    self._quiet_pq_training(index)
                    n_train = min(self.n_items, int(self.train_size))
                    if n_train < self.n_items:
                        rng = np.random.default_rng(self.random_state)
                        sample = np.sort(rng.choice(self.n_items, n_train, replace=False))
                        index.train(np.ascontiguousarray(X[sample]))
                    else:
                        index.train(X)
                index.add(X)
            except RuntimeError as exc:
                raise ConfigError(f"faiss could not build {self.spec!r} over {self.n_items} items: "
                                  f"{_faiss_message(exc)}") from None
        self.index_ = index
        self._exact = None
        self._lists = None
        self.build_seconds_ = time.perf_counter() - t0
        self._apply_params()
        log.info("faiss %s (%s) built over %d items in %.2fs", self.spec,
                 "inner product" if self.metric_ == "ip" else "MIPS->L2 transform", self.n_items, self.build_seconds_)
        return self

    def _quiet_pq_training(self, index: Any) -> None:
        """faiss prints a line per PQ sub-quantizer trained on few vectors; warn once here instead."""
        faiss = import_faiss()

        ivf = faiss.try_extract_index_ivf(index)
        for holder in (ivf, faiss.downcast_index(index)):
            pq = getattr(holder, "pq", None) if holder is not None else None
            if pq is None or not hasattr(pq, "cp"):
                continue
            ksub = 1 << int(pq.nbits)
            if min(self.n_items, int(self.train_size)) < 39 * ksub:
                log.warning("%s: %d training vectors for %d PQ centroids per sub-quantizer "
                            "(faiss suggests >= %d)", self.spec, min(self.n_items, int(self.train_size)), ksub,
                            39 * ksub)
            pq.cp.min_points_per_centroid = 1
            return

    # ------------------------------------------------------------------ parameters
    def _param_name(self) -> str | None:
        """The search parameter tuning moves: ``nprobe`` (IVF), ``efSearch`` (HNSW) or None."""
        fam = self.family
        if fam == "ivf":
            return "nprobe"
        if fam == "hnsw":
            return "efSearch"
        return None

    def _apply_params(self) -> None:
        faiss = import_faiss()

        if self.index_ is None:
            return
        ps = faiss.ParameterSpace()
        if self.nprobe is not None:
            ps.set_index_parameter(self.index_, "nprobe", int(self.nprobe))
        if self.ef_search is not None:
            name = "efSearch" if self.family == "hnsw" else "quantizer_efSearch"
            ps.set_index_parameter(self.index_, name, int(self.ef_search))

    def _param_value(self) -> int | None:
        faiss = import_faiss()

        name = self._param_name()
        if name == "nprobe":
            ivf = faiss.try_extract_index_ivf(self.index_)
            return int(ivf.nprobe) if ivf is not None else None
        if name == "efSearch":
            idx = self._hnsw()
            return int(idx.hnsw.efSearch) if idx is not None else None
        return None

    def _hnsw(self) -> Any:
        faiss = import_faiss()

        idx = self.index_
        while idx is not None:
            down = faiss.downcast_index(idx)
            if hasattr(down, "hnsw"):
                return down
            if isinstance(down, faiss.IndexPreTransform):
                idx = down.index
            elif isinstance(down, faiss.IndexRefine):
                idx = down.base_index
            else:
                return None
        return None

    def _max_value(self) -> int:
        faiss = import_faiss()

        if self._param_name() == "nprobe":
            ivf = faiss.try_extract_index_ivf(self.index_)
            return int(ivf.nlist)
        return max(4096, 1)

    def _set_value(self, value: int) -> None:
        if self._param_name() == "nprobe":
            self.nprobe = int(value)
        else:
            self.ef_search = int(value)
        self._apply_params()

    # ------------------------------------------------------------------ search
    def search(self, user_vectors: np.ndarray, k: int,
               exclude: sp.spmatrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        parts = list(self.search_batches(user_vectors, k, exclude))
        if not parts:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])

    def _exact_index(self) -> Any:
        if self._exact is None:
            from fmrec.index.exact import ExactIndex

            self._exact = ExactIndex(n_threads=self.n_threads).build(self.items_)
        return self._exact

    def _ivf_lists(self) -> Any:
        """The inverted lists packed for the C list scan (``scan_lists``), or None."""
        if self._lists is None:
            self._lists = False
            from fmrec.index import _cbackend as C

            wanted = self.scan_lists or (self.scan_lists is None and C.ivf_fast())  # auto: vector path only
            if wanted and C.available() and not self.pad_:
                faiss = import_faiss()
                down = faiss.downcast_index(self.index_)
                if type(down) is faiss.IndexIVFFlat:  # not a subclass: IVF…,FlatDedup lists hold one copy
                    inv = down.invlists
                    lists = []
                    for lst in range(down.nlist):
                        size = int(inv.list_size(lst))
                        ids = faiss.rev_swig_ptr(inv.get_ids(lst), size).astype(np.int64) if size else \
                            np.zeros(0, np.int64)
                        lists.append(ids)
                    assert self.items_ is not None
                    self._lists = C.IvfLists(self.items_, lists)
            if self.scan_lists and self._lists is False:
                raise ConfigError(f"scan_lists needs an IVF…,Flat index and the C kernels; {self.spec!r} "
                                  f"{'has none' if C.available() else 'runs without them (not built)'}")
        return self._lists or None

    def _scan_lists(self, lists: Any, U: np.ndarray, Q: np.ndarray, k: int, indptr: np.ndarray,
                    indices: np.ndarray, start: int, out_i: np.ndarray, out_s: np.ndarray) -> None:
        """One batch through the C list scan: faiss's quantizer picks each user's lists."""
        from fmrec._threads import faiss_threads, resolve_threads
        from fmrec.index import _cbackend as C
        from fmrec.index.exact import _pool

        faiss = import_faiss()
        ivf = faiss.extract_index_ivf(self.index_)
        with faiss_threads(self.n_threads):
            _, probes = ivf.quantizer.search(Q, int(ivf.nprobe))
        probes = np.ascontiguousarray(probes, dtype=np.int64)
        rows = U.shape[0]
        ex = (indptr, indices, start) if indptr.size else None
        bits = out_s.view(np.uint32)
        n_chunks = max(1, min(rows, resolve_threads(self.n_threads)))
        bounds = [rows * c // n_chunks for c in range(n_chunks + 1)]
        if n_chunks == 1:
            C.ivf_scan(lists, U, probes, k, 0, rows, ex, bits, out_i)
            return
        futures = [_pool(n_chunks).submit(C.ivf_scan, lists, U, probes, k, bounds[c], bounds[c + 1], ex, bits, out_i)
                   for c in range(n_chunks)]
        for f in futures:
            f.result()

    def search_batches(self, user_vectors: np.ndarray, k: int, exclude: sp.spmatrix | None = None,
                       batch_size: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(row_start, positions, scores)`` per batch of users, best first, padded with -1 / -inf."""
        from fmrec._threads import faiss_threads

        if self.index_ is None:
            raise ConfigError("index is empty: call build(item_vectors) first")
        k = check_k(k)
        U = as_vectors(user_vectors, "user vectors")
        if U.shape[1] != self.dim:
            raise ConfigError(f"user vectors have {U.shape[1]} dimensions; the index has {self.dim}")
        n_users = U.shape[0]
        indptr, indices = as_exclusion(exclude, n_users, self.n_items)
        counts = np.diff(indptr) if indptr.size else np.zeros(n_users, dtype=np.int64)
        cap = int(self.max_exclusions)
        bs = int(batch_size or self.batch_size)
        kf = self._k_factor()
        exact_scores = self.is_exact
        lists = None if exact_scores else self._ivf_lists()
        for start in range(0, n_users, bs):
            stop = min(n_users, start + bs)
            rows = stop - start
            c = counts[start:stop]
            if lists is not None:  # every probed item scored: no over-fetch, no exclusion cap
                out_i = np.empty((rows, k), dtype=np.int64)
                out_s = np.empty((rows, k), dtype=np.float32)
                self._scan_lists(lists, U[start:stop], self._transform_queries(U[start:stop]), k, indptr, indices,
                                 start, out_i, out_s)
                long_hist = np.zeros(rows, dtype=bool)
            else:
                long_hist = c > cap
                extra = int(c[~long_hist].max()) if (~long_hist).any() else 0
                fetch = min(self.n_items, int(math.ceil(kf * k)) + extra)
                out_i = np.full((rows, k), -1, dtype=np.int64)
                out_s = np.full((rows, k), -np.inf, dtype=np.float32)
                if not long_hist.all():
                    from fmrec.index import _kernels as K

                    Q = self._transform_queries(U[start:stop])
                    with faiss_threads(self.n_threads):
                        D, I = self.index_.search(Q, fetch)  # faiss returns (distances, ids)
                    I = np.ascontiguousarray(I, dtype=np.int64)
                    if exact_scores:
                        K.filter_candidates(I, np.ascontiguousarray(D, dtype=np.float32), indptr, indices, start,
                                            k, out_i, out_s)
                    else:
                        K.rerank_candidates(U[start:stop], self.items_, I, indptr, indices, start, k, out_i, out_s)
            # users the approximate answer cannot serve: long histories, and rows with fewer
            # items than exist for them (a coarse IVF probe can return too few candidates)
            have = (out_i >= 0).sum(axis=1)
            need = np.minimum(k, self.n_items - c)
            redo = long_hist | ((have < need) if self._refill else False)
            n_short = int((redo & ~long_hist).sum())
            if redo.any():
                rows_idx = np.flatnonzero(redo)
                sub = None
                if indptr.size:
                    import scipy.sparse as sp

                    sub = sp.csr_matrix((np.ones(int(c[rows_idx].sum()), np.float32),
                                         np.concatenate([indices[indptr[start + r]:indptr[start + r + 1]]
                                                         for r in rows_idx]),
                                         np.concatenate([[0], np.cumsum(c[rows_idx])])),
                                        shape=(rows_idx.size, self.n_items))
                ei, es = self._exact_index().search(U[start + rows_idx], k, sub)
                out_i[rows_idx] = ei
                out_s[rows_idx] = es
            self.stats_["users"] += rows
            self.stats_["exact_fallback_users"] += int(long_hist.sum())
            self.stats_["short_lists_refilled"] += n_short
            yield start, out_i, out_s

    # ------------------------------------------------------------------ tuning
    def tune(self, user_vectors: np.ndarray, k: int, target_recall: float = 0.95,
             exclude: sp.spmatrix | None = None, n_users: int = 1000, random_state: int = 0,
             max_value: int | None = None) -> TuneResult:
        """Raise ``nprobe`` (IVF) / ``efSearch`` (HNSW), doubling from the current value, until
        recall@k against :class:`ExactIndex` on ``n_users`` random users reaches ``target_recall``
        (or the parameter's maximum, or a doubling that gains less than 0.001 recall: compressed
        codes cap recall whatever the breadth); then bisect between the last value that missed
        and the first that reached, to within an eighth of the smaller, and keep the smallest
        value that reaches (the search time grows with it: at 1M x 100k, ``IVF1024,Flat``
        reached 0.95 at nprobe 5 or 6 where doubling stopped at 8, 1.3x slower).

        Recall@k = |approximate list ∩ exact list| / |exact list|, summed over the
        sample (seen items excluded on both sides).  A value *reaches* the target when the
        sample's recall minus two standard errors (of the users' recalls) does, so the
        setting holds for the users outside the sample too (with the bisection landing
        next to the target, a bare sample mean would miss it on about half of the runs).
        The value reached stays set; the result is returned, logged and kept in ``tuned_``.
        """
        if self.index_ is None:
            raise ConfigError("index is empty: call build(item_vectors) first")
        k = check_k(k)
        if not (isinstance(target_recall, (int, float)) and 0 < target_recall <= 1):
            raise ConfigError(f"target recall must be in (0, 1], got {target_recall!r}")
        if not isinstance(n_users, (int, np.integer)) or n_users < 1:
            raise ConfigError(f"tuning sample size must be a positive integer, got {n_users!r}")
        U = as_vectors(user_vectors, "user vectors")
        n = U.shape[0]
        rng = np.random.default_rng(random_state)
        sample = np.sort(rng.choice(n, min(int(n_users), n), replace=False)) if n else np.zeros(0, np.int64)
        Us = U[sample]
        ex = None
        if exclude is not None:
            import scipy.sparse as sp

            ex = sp.csr_matrix(exclude)[sample]
        truth_i, _ = self._exact_index().search(Us, k, ex)
        truth = [set(b[b >= 0].tolist()) for b in truth_i]  # the exact lists, once
        sizes = np.array([len(t) for t in truth], dtype=np.float64)
        total = float(sizes.sum())

        def measure() -> tuple[float, float, float]:
            """(recall, seconds, standard error of the recall)."""
            t0 = time.perf_counter()
            got_i, _ = self._search_quiet(Us, k, ex)
            secs = time.perf_counter() - t0
            if not total:
                return 1.0, secs, 0.0
            hits = np.array([len(set(a[a >= 0].tolist()) & t) for a, t in zip(got_i, truth)], dtype=np.float64)
            rec = float(hits.sum() / total)
            # standard error of that pooled ratio (hits over exact items), linearised over users
            n_s = hits.size
            resid = hits - rec * sizes
            se = float(np.sqrt((resid ** 2).sum() / (n_s * (n_s - 1))) / sizes.mean()) if n_s > 1 else 0.0
            return rec, secs, se

        def reaches(recall_: float, se_: float) -> bool:
            return recall_ - 2.0 * se_ >= target_recall

        name = self._param_name()
        history: list[tuple[Any, ...]] = []
        value = self._param_value() if name else None
        recall, secs, se = measure()
        history.append((value, recall, secs, se))
        if name is not None and value is not None:
            top = int(max_value) if max_value is not None else self._max_value()
            while not reaches(recall, se) and value < top:
                value = min(top, value * 2)
                self._set_value(value)
                previous = recall
                recall, secs, se = measure()
                history.append((value, recall, secs, se))
                if recall < previous + 1e-3 and len(history) >= 3:
                    break  # plateau: the codes, not the search breadth, limit recall
            if reaches(recall, se) and len(history) >= 2:
                lo, hi, best = history[-2][0], value, (recall, secs, se)
                while lo is not None and hi - lo > max(1, lo // 8):
                    mid = (lo + hi) // 2
                    self._set_value(mid)
                    r, s, e = measure()
                    history.append((mid, r, s, e))
                    if reaches(r, e):
                        hi, best = mid, (r, s, e)
                    else:
                        lo = mid
                value = hi
                self._set_value(value)
                recall, secs, se = best
        result = TuneResult(name, value, float(recall), float(target_recall), k, int(sample.size),
                            reaches(recall, se), history, se)
        self.tuned_ = result
        if result.reached:
            log.info("tuned %s: %s", self.spec, result)
        else:
            hint = ("raise k_factor or use a finer code" if _uses_codes(self.spec)
                    else "use more IVF lists or HNSW links")
            log.warning("tuned %s: %s; %s", self.spec, result, hint)
        return result

    def _search_quiet(self, U: np.ndarray, k: int, exclude: Any) -> tuple[np.ndarray, np.ndarray]:
        """Search without counting stats and without refilling short lists (tuning measures the index itself)."""
        saved = dict(self.stats_)
        self._refill = False
        try:
            return self.search(U, k, exclude)
        finally:
            self._refill = True
            self.stats_ = saved

    # ------------------------------------------------------------------ persistence
    def _sidecar(self) -> dict[str, Any]:
        faiss = import_faiss()

        import fmrec

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fmrec_version": fmrec.__version__,
            "faiss_version": faiss.__version__,
            "spec": self.spec,
            "metric": self.metric_,
            "transform": ({"kind": "mips-to-l2", "max_norm_squared": self.max_norm2_}
                          if self.metric_ == "l2" else {"kind": "none"}),
            "pad_dims": int(self.pad_),
            "n_items": int(self.n_items),
            "dim": int(self.dim),
            "index_dim": int(self.index_.d),
            "nprobe": self._param_value() if self._param_name() == "nprobe" else self.nprobe,
            "efSearch": self._param_value() if self._param_name() == "efSearch" else self.ef_search,
            "k_factor": self.k_factor,
            "max_exclusions": int(self.max_exclusions),
            "batch_size": int(self.batch_size),
            "train_size": int(self.train_size),
            "random_state": self.random_state,
            "tuned": asdict(self.tuned_) if self.tuned_ is not None else None,
        }

    def save(self, path: Any) -> Path:
        """Write the folder ``path``: ``index.faiss``, ``items.npy``, ``index.json`` (atomic rename)."""
        faiss = import_faiss()

        if self.index_ is None:
            raise ConfigError("index is empty: call build(item_vectors) first")
        def refuse_foreign(existing: Path) -> None:
            if not (existing / "index.json").is_file():
                raise ConfigError(f"{existing} exists and is not a saved fmrec index; not overwriting it")

        target = Path(path)
        with staged_folder(target, refuse_foreign) as tmp:
            faiss.write_index(self.index_, str(tmp / "index.faiss"))
            np.save(tmp / "items.npy", self.items_, allow_pickle=False)
            meta = self._sidecar()
            meta["checksums"] = {name: sha256_file(tmp / name) for name in ("index.faiss", "items.npy")}
            (tmp / "index.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: Any, **overrides: Any) -> "FaissIndex":
        """Read a folder written by :meth:`save`; checks format, checksums and shapes (one-line ArtifactError).

        ``overrides`` (``nprobe``, ``ef_search``, ``batch_size``, ``n_threads``,
        ``max_exclusions``, ``k_factor``) replace the saved search settings.
        """
        faiss = import_faiss()

        folder = Path(path)
        meta_path = folder / "index.json"
        if not folder.is_dir():
            raise ArtifactError(f"{folder}: index folder not found")
        if not meta_path.is_file():
            raise ArtifactError(f"{meta_path}: index.json missing; not a saved fmrec index")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{meta_path}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ArtifactError(f"{meta_path}: not an fmrec faiss index sidecar "
                                f"(format {meta.get('format') if isinstance(meta, dict) else None!r})")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ArtifactError(f"{meta_path}: index format version {version!r} is newer than this fmrec "
                                f"supports ({FORMAT_VERSION}); upgrade fmrec")
        for name in ("index.faiss", "items.npy"):
            f = folder / name
            if not f.is_file():
                raise ArtifactError(f"{f}: file listed in index.json is missing")
            want = meta.get("checksums", {}).get(name)
            if want is None or sha256_file(f) != want:
                raise ArtifactError(f"{f}: checksum mismatch with index.json (file changed or corrupt)")
        try:
            spec, metric = meta["spec"], meta["metric"]
            n_items, dim, pad = int(meta["n_items"]), int(meta["dim"]), int(meta["pad_dims"])
            transform = meta["transform"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{meta_path}: missing or bad key {exc}") from None
        if metric not in ("ip", "l2") or (metric == "l2") != (transform.get("kind") == "mips-to-l2"):
            raise ArtifactError(f"{meta_path}: metric {metric!r} and transform {transform!r} disagree")
        try:
            index = faiss.read_index(str(folder / "index.faiss"))
        except RuntimeError as exc:
            raise ArtifactError(f"{folder / 'index.faiss'}: faiss cannot read it ({_faiss_message(exc)})") from None
        try:
            items = np.load(folder / "items.npy", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ArtifactError(f"{folder / 'items.npy'}: cannot read item vectors ({exc})") from None
        expected_d = dim + (1 if metric == "l2" else 0) + pad
        if index.ntotal != n_items or index.d != expected_d or items.shape != (n_items, dim) \
                or items.dtype != np.float32:
            raise ArtifactError(f"{folder}: index ({index.ntotal} x {index.d}), items {items.shape} and index.json "
                                f"({n_items} items, {dim} dims, index dim {expected_d}) disagree")
        settings = {"nprobe": meta.get("nprobe"), "ef_search": meta.get("efSearch"),
                    "k_factor": meta.get("k_factor"), "max_exclusions": meta.get("max_exclusions", 1000),
                    "batch_size": meta.get("batch_size", 4096), "train_size": meta.get("train_size", 100_000),
                    "random_state": meta.get("random_state", 0)}
        unknown = set(overrides) - {"nprobe", "ef_search", "batch_size", "n_threads", "max_exclusions", "k_factor"}
        if unknown:
            raise ConfigError(f"cannot override {sorted(unknown)} of a saved index")
        settings.update({k: v for k, v in overrides.items() if v is not None})
        fam = family(spec if spec.lower() != "flat" else "Flat")
        if fam != "ivf":
            settings["nprobe"] = None
        if fam != "hnsw" and "HNSW" not in spec:
            settings["ef_search"] = None
        obj = cls(spec, metric=metric, **settings)
        obj._check_params()
        obj.index_ = index
        obj.items_ = np.ascontiguousarray(items)
        obj.n_items, obj.dim, obj.pad_ = n_items, dim, pad
        obj.max_norm2_ = float(transform.get("max_norm_squared", 0.0))
        if meta.get("tuned"):
            t = meta["tuned"]
            # sidecars written before the standard error was recorded hold 3-tuples: pad them
            history = [tuple(h) + (None,) * (4 - len(h)) for h in t.get("history", [])]
            obj.tuned_ = TuneResult(t["parameter"], t["value"], t["recall"], t["target"], t["k"], t["n_users"],
                                    t["reached"], history, t.get("stderr", 0.0))
        obj._apply_params()
        obj._loaded_from = str(folder)
        return obj
