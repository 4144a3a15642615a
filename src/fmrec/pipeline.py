"""``fmrec run``: load -> train -> export -> index -> recommend -> evaluate -> publish.

One TOML file configures a run (every key optional; the defaults run the
built-in data set).  Each run gets an id and a folder
``<output.dir>/runs/<run_id>/`` holding ``config.json`` (the resolved
configuration), ``metrics.json``, ``model/`` and ``run.log``.  A lock file keeps
two runs of the same output folder from overlapping.  The published lists
change only when every stage succeeded: the lists are staged in the sink,
evaluated, and published last in one atomic step.  Values of the sections other
than ``[model]`` are type-checked against the defaults; relative paths in the
file (data files, ``output.dir``, ``recommend.target``) are relative to the
file's folder.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fmrec.errors import ConfigError, FmrecError

log = logging.getLogger("fmrec.pipeline")

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "train": "builtin",
        "test": "",
        "test_per_user": 10,
        "item_names": "",
        "format": "auto",
        "sep": "",
        "user_col": "",
        "item_col": "",
        "rating_col": "",
        "timestamp_col": "",
        "duplicates": "error",
    },
    "model": {"task": "regression", "n_factors": 64, "n_epochs": 20, "random_state": 0},
    "recommend": {
        "k": 100,
        "index": "exact",
        "exclude_seen": True,
        "include_untrained_items": False,
        "target": "",  # default: sqlite:///<output.dir>/recommendations.db
        "format": "fmrec",
    },
    "evaluate": {"k": [10], "min_rating": 0.0, "baseline": True},
    "output": {"dir": "fmrec-output", "show_user": ""},
}


def load_config(path: Any = None, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Defaults, updated by the TOML file at ``path`` and then by ``overrides``.

    Unknown sections or keys (outside ``[model]``, which takes any estimator
    parameter) raise :class:`ConfigError` naming them.
    """
    cfg = copy.deepcopy(DEFAULTS)
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        try:
            import tomllib
        except ModuleNotFoundError:  # pragma: no cover - Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        p = Path(path)
        try:
            with open(p, "rb") as fh:
                layers.append((str(p), tomllib.load(fh)))
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML ({exc})") from None
    if overrides:
        layers.append(("overrides", overrides))
    for where, layer in layers:
        for section, values in layer.items():
            if section not in cfg:
                raise ConfigError(f"{where}: unknown section [{section}]; known: {sorted(cfg)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: [{section}] must be a table")
            for key, value in values.items():
                if section != "model" and key not in cfg[section]:
                    raise ConfigError(f"{where}: unknown key {key!r} in [{section}]; known: {sorted(cfg[section])}")
                cfg[section][key] = value
    if path is not None:
        # relative paths in the file are relative to the file's folder
        base = Path(path).resolve().parent
        for key in ("train", "test", "item_names"):
            v = cfg["data"][key]
            if v and v != "builtin" and not Path(v).is_absolute():
                cfg["data"][key] = str(base / v)
    return cfg


class RunLock:
    """An exclusive, non-blocking lock on ``<output>/.fmrec.lock`` (released on exit or crash)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".fmrec.lock"
        self.fh: Any = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise ConfigError(f"{self.path}: another fmrec run holds the lock for this output folder") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"{os.getpid()}\n")
        self.fh.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
        self.fh.close()


@dataclass
class RunResult:
    run_id: str
    folder: Path
    target: str
    metrics: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    sample_user: Any = None
    sample_items: list[tuple[Any, str, float]] = field(default_factory=list)


def _new_run_id() -> str:
    import secrets
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "_" + secrets.token_hex(3)


def _read(path: str, d: dict[str, Any]) -> Any:
    from fmrec.data.readers import read_interactions

    return read_interactions(
        path, format=None if d["format"] == "auto" else d["format"], sep=d["sep"] or None,
        user_col=d["user_col"] or None, item_col=d["item_col"] or None, rating_col=d["rating_col"] or None,
        timestamp_col=d["timestamp_col"] or None, duplicates=d["duplicates"],
    )


def load_data(d: dict[str, Any]) -> tuple[Any, Any]:
    """(train, test or None) per the ``[data]`` section."""
    from fmrec.data.synthetic import builtin_split, load_builtin

    full = load_builtin() if d["train"] == "builtin" else _read(d["train"], d)
    if d["test"]:
        test = _read(d["test"], d)
        return full, test
    if d["test_per_user"] and int(d["test_per_user"]) > 0:
        return builtin_split(full, test_per_user=int(d["test_per_user"]))
    return full, None


def evaluate_model(model: Any, train: Any, test: Any, ks: list[int], *, seen: Any = None,
                   min_rating: float = 0.0, index: Any = "exact", baseline: bool = True) -> dict[str, Any]:
    """Prediction metrics on ``test`` rows and top-k metrics of the model's lists
    (train items excluded) for the users of ``test``, beside a popularity baseline."""
    from fmrec.evaluate import popularity_topk, prediction_metrics, ranking_metrics
    from fmrec.recommend import recommend_all

    out: dict[str, Any] = {"n_test_rows": len(test)}
    if test.rating is not None:
        pred = model.predict(test)
        if model.task == "binary":
            y = (test.rating >= model.threshold).astype(np.float64)
        else:
            y = test.rating
        out.update(prediction_metrics(y, pred, model.task))
    kmax = max(ks)
    enc = model.encoder_
    test_users = test.user_map.to_external(np.unique(test.user_idx))
    known = enc.user_map.to_index(test_users) >= 0
    relevant = test.to_frame()
    mr = float(min_rating) if min_rating else None
    batches = recommend_all(model, kmax, users=test_users[known], seen=seen, index=index)
    out.update({f"model_{k_}": v for k_, v in ranking_metrics(batches, relevant, ks, min_rating=mr).items()})
    if baseline:
        pop = popularity_topk(train, test_users, kmax, exclude_seen=True)
        out.update({f"popularity_{k_}": v for k_, v in ranking_metrics(pop, relevant, ks, min_rating=mr).items()})
    return out


def run_pipeline(config: Any = None, *, run_id: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> RunResult:
    """Run every stage once; publish the lists only when all stages succeeded."""
    from fmrec.model import FactorizationMachine, save_model
    from fmrec.recommend import recommend_all
    from fmrec.store import open_sink

    cfg = config if isinstance(config, dict) else load_config(config, overrides)
    out_dir = Path(cfg["output"]["dir"])
    run_id = run_id or _new_run_id()
    folder = out_dir / "runs" / run_id
    target = cfg["recommend"]["target"] or f"sqlite:///{(out_dir / 'recommendations.db').as_posix()}"
    seconds: dict[str, float] = {}
    with RunLock(out_dir):
        folder.mkdir(parents=True, exist_ok=False)
        handler = logging.FileHandler(folder / "run.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger("fmrec")
        root.addHandler(handler)
        previous_level = root.level
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)
        stage = "config"
        try:
            resolved = copy.deepcopy(cfg)
            resolved["recommend"]["target"] = target
            resolved["run_id"] = run_id
            (folder / "config.json").write_text(json.dumps(resolved, indent=2, default=str))

            stage = "load"
            t = time.perf_counter()
            train, test = load_data(cfg["data"])
            names = train.item_names
            if cfg["data"]["item_names"]:
                from fmrec.data.readers import read_item_names

                names = read_item_names(cfg["data"]["item_names"])
            seconds["load"] = time.perf_counter() - t
            log.info("loaded %d training rows (%d users, %d items)%s", len(train), train.n_users, train.n_items,
                     f", {len(test)} test rows" if test is not None else "")

            stage = "train"
            t = time.perf_counter()
            params = dict(cfg["model"])
            params.setdefault("verbose", False)
            model = FactorizationMachine().set_params(**params).fit(train)
            seen = train.to_csr(binary=True)
            seconds["train"] = time.perf_counter() - t
            save_model(model, folder / "model", seen=seen, item_names=names, extra={"run_id": run_id})
            log.info("trained %s FM in %.2fs", model.task, seconds["train"])

            stage = "recommend"
            t = time.perf_counter()
            rc = cfg["recommend"]
            opts = {"format": rc["format"]} if rc["format"] != "fmrec" else {}
            n_users = 0
            first = None
            with open_sink(target, run_id=run_id, **opts) as sink:
                for batch in recommend_all(
                    model, int(rc["k"]), seen=seen, exclude_seen=bool(rc["exclude_seen"]),
                    include_untrained_items=bool(rc["include_untrained_items"]), index=rc["index"],
                ):
                    if first is None and len(batch):
                        first = batch
                    sink.write(batch)
                    n_users += len(batch)
                stage = "publish"
            seconds["recommend_publish"] = time.perf_counter() - t
            log.info("published top-%d for %d users to %s", rc["k"], n_users, target)

            metrics: dict[str, Any] = {"run_id": run_id, "n_users_served": n_users}
            if test is not None:
                stage = "evaluate"
                t = time.perf_counter()
                ks = cfg["evaluate"]["k"]
                ks = [int(ks)] if isinstance(ks, int) else [int(x) for x in ks]
                metrics.update(evaluate_model(model, train, test, ks, seen=seen,
                                              min_rating=cfg["evaluate"]["min_rating"], index=rc["index"],
                                              baseline=bool(cfg["evaluate"]["baseline"])))
                seconds["evaluate"] = time.perf_counter() - t
            metrics["seconds"] = seconds
            (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        except FmrecError as exc:
            log.error("stage %s failed: %s", stage, exc)
            exc.stage = stage  # type: ignore[attr-defined]
            raise
        finally:
            root.removeHandler(handler)
            handler.close()
            root.setLevel(previous_level)

    sample_user, sample = None, []
    if first is not None:
        show = cfg["output"]["show_user"]
        r = 0
        if show:
            hits = np.flatnonzero(first.user_ids.astype(str) == str(show))
            r = int(hits[0]) if hits.size else 0
        sample_user = first.user_ids[r]
        name_of = {str(k_): v for k_, v in (names or {}).items()}
        c = int(first.counts[r])
        sample = [(first.item_ids[r, j], name_of.get(str(first.item_ids[r, j]), ""), float(first.scores[r, j]))
                  for j in range(min(c, 10))]
    return RunResult(run_id, folder, target, metrics, seconds, sample_user, sample)


def format_summary(res: RunResult) -> Iterator[str]:
    yield f"run {res.run_id}: lists published to {res.target}"
    yield f"run folder: {res.folder}"
    m = res.metrics
    keys = [k for k in ("rmse", "mae", "accuracy", "log_loss", "f1", "roc_auc") if k in m]
    if keys:
        yield "test: " + ", ".join(f"{k}={m[k]:.4f}" for k in keys)
    rank = sorted(k for k in m if k.startswith("model_"))
    for k in rank:
        base = m.get("popularity_" + k[len("model_"):])
        extra = f" (popularity {base:.4f})" if isinstance(base, float) else ""
        if isinstance(m[k], float):
            yield f"{k[len('model_'):]}: {m[k]:.4f}{extra}"
    yield "seconds: " + ", ".join(f"{k}={v:.2f}" for k, v in res.seconds.items())
    if res.sample_user is not None:
        yield f"top 10 for user {res.sample_user}:"
        for rank_, (item, name, score) in enumerate(res.sample_items, 1):
            yield f"  {rank_:2d}. {item}  {name}  ({score:.3f})"


def main_summary(res: RunResult) -> None:
    for line in format_summary(res):
        print(line, file=sys.stdout)
