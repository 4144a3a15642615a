"""Batch scoring on a Dask cluster: users partitioned, parts staged, one atomic publish.

Each partition is a slice of the users to serve.  A task loads the model folder
once per worker process (cached by path and manifest checksum, so the index is
built once per worker and model), scores its users with the same
:func:`fmrec.recommend.recommend_all` as the single-process path, and writes its
part as a Parquet file into a staging folder (temp file + rename, so a retried
task simply overwrites its part).  Only when *every* part exists does the driver
stream the parts into the target sink and publish it in one atomic step; a
failed partition is retried (``retries``) and, if it keeps failing, the staging
folder is removed and nothing is published.

Without ``scheduler`` a local cluster is started (``n_workers`` processes, one
thread each) and closed afterwards.  With ``scheduler="tcp://host:8786"`` the
existing cluster is used; the model folder and the staging folder must then be on
storage every worker and the driver can read (a shared file system).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fmrec.errors import ConfigError, StoreError

log = logging.getLogger("fmrec.distributed")

_MODEL_CACHE: dict[tuple[str, str], tuple[Any, Any]] = {}


def _load_cached(model_dir: str) -> tuple[Any, Any]:
    """(model, seen) loaded once per worker process for this model folder and checksum."""
    from fmrec.model import load_model
    from fmrec.model.io import load_seen, sha256_file

    key = (model_dir, sha256_file(Path(model_dir) / "manifest.json"))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = (load_model(model_dir), load_seen(model_dir))
    return _MODEL_CACHE[key]


def aligned_chunks(n: int, n_parts: int, unit: int) -> list[np.ndarray]:
    """Up to ``n_parts`` contiguous index ranges covering ``range(n)``, as even as possible,
    each starting on a multiple of ``unit``."""
    n_units = -(-n // unit) if n else 0
    out = []
    for part in np.array_split(np.arange(n_units), max(1, min(n_parts, n_units))):
        if part.size:
            out.append(np.arange(part[0] * unit, min(n, (part[-1] + 1) * unit)))
    return out


def _score_partition(model_dir: str, users: np.ndarray, k: int, part_path: str, options: dict[str, Any]) -> int:
    """Score one partition and write its part file; returns the number of users written."""
    from fmrec.recommend import recommend_all
    from fmrec.store import ParquetSink

    hook = os.environ.get("FMREC_TEST_PARTITION_HOOK")
    if hook:  # test hook: simulate a worker dying / a task failing on a chosen partition
        _test_hook(hook, part_path)
    model, seen = _load_cached(model_dir)
    n = 0
    with ParquetSink(part_path) as sink:
        for batch in recommend_all(model, k, users=users, seen=seen, **options):
            sink.write(batch)
            n += len(batch)
    return n


def _test_hook(spec: str, part_path: str) -> None:
    """``kill:<part>:<marker>`` kills the worker the first time partition <part> runs (the
    marker file records it); ``fail:<part>`` always raises for that partition."""
    kind, _, rest = spec.partition(":")
    part = int(rest.split(":", 1)[0])
    if not Path(part_path).name.startswith(f"part-{part:05d}"):
        return
    if kind == "fail":
        raise RuntimeError(f"test hook: partition {part} fails")
    if kind == "kill":
        marker = Path(rest.split(":", 1)[1])
        if not marker.exists():
            marker.write_text("killed once")
            os._exit(137)


def recommend_dask(
    model_dir: Any,
    k: int,
    target: Any,
    *,
    scheduler: str | None = None,
    n_workers: int = 2,
    n_partitions: int | None = None,
    users: Any = None,
    retries: int = 2,
    run_id: str | None = None,
    staging_dir: Any = None,
    sink_options: dict[str, Any] | None = None,
    **recommend_options: Any,
) -> dict[str, Any]:
    """Top-``k`` for every user of the model at ``model_dir``, scored on Dask, published to ``target``.

    ``recommend_options`` go to :func:`~fmrec.recommend.recommend_all` on every
    partition (``exclude_seen``, ``include_untrained_items``, ``index``, ...).
    Returns a summary (users, partitions, seconds).  Lists equal the single-process
    run's bit for bit: the same function scores every user, and with the exact
    index every partition uses the whole run's item order and starts on a GEMM
    block boundary (:func:`fmrec.recommend.exact_plan`), so at most
    ``ceil(users / block)`` partitions are made.
    """
    from dask.distributed import Client, LocalCluster

    from fmrec.index.exact import check_k
    from fmrec.model import load_model
    from fmrec.store import open_sink, read_parquet_topk

    k = check_k(k)
    model_dir = str(Path(model_dir).resolve())
    model = load_model(model_dir)  # validates the folder on the driver before any work is shipped
    user_ids = model.encoder_.user_map.ids if users is None else np.asarray(users)
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")
    n_parts = int(n_partitions or max(1, n_workers * 4))
    n_parts = max(1, min(n_parts, len(user_ids)))
    unit = 1
    if recommend_options.get("index", "exact") == "exact":
        # every partition searches with the whole run's item order and starts on a GEMM block
        # boundary, so each user's scores come out of the same BLAS blocks as in one process
        from fmrec.index import ExactIndex
        from fmrec.model.io import load_seen
        from fmrec.recommend import exact_plan

        seen = recommend_options.get("seen")
        order, unit = exact_plan(model, k, users=user_ids, seen=seen if seen is not None else load_seen(model_dir),
                                 **{key: v for key, v in recommend_options.items() if key != "seen"})
        recommend_options = dict(recommend_options, index=ExactIndex(order_by=order))
    chunks = aligned_chunks(len(user_ids), n_parts, unit)
    n_parts = len(chunks)
    stage = Path(staging_dir) if staging_dir is not None else None
    if stage is None:
        base = Path(str(target)).parent if "://" not in str(target) else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".fmrec-dask-", dir=base))
    else:  # a run-scoped folder inside the given one, so concurrent runs never share parts
        stage.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".fmrec-dask-", dir=stage))
    t0 = time.perf_counter()
    cluster = None
    try:
        if scheduler is None:
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        else:
            client = Client(scheduler)
        try:
            parts = [str(stage / f"part-{p:05d}.parquet") for p in range(n_parts)]
            futures = [
                client.submit(_score_partition, model_dir, user_ids[idx], k, parts[p], recommend_options,
                              key=f"fmrec-part-{p:05d}-{os.getpid()}-{int(t0 * 1000)}", retries=retries, pure=False)
                for p, idx in enumerate(chunks)
            ]
            try:
                counts = client.gather(futures)
            except Exception as exc:
                raise StoreError(
                    f"distributed scoring failed after {retries} retries ({type(exc).__name__}: {exc}); "
                    "nothing was published".replace("\n", " ")
                ) from None
        finally:
            client.close()
        if sum(counts) != len(user_ids) or not all(Path(p).is_file() for p in parts):
            raise StoreError("a partition's part file is missing; nothing was published")
        scored = time.perf_counter() - t0
        with open_sink(target, run_id=run_id, **(sink_options or {})) as sink:
            for p in parts:
                part = read_parquet_topk(p, k=k)
                if len(part):
                    sink.write(part)
        return {"users": int(sum(counts)), "partitions": n_parts, "score_seconds": scored,
                "total_seconds": time.perf_counter() - t0}
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(stage, ignore_errors=True)
