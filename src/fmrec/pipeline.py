"""``fmrec run``: load -> train -> export -> index -> recommend -> evaluate -> publish.

One TOML file configures a run (every key optional; the defaults run the
built-in data set).  Each run gets an id and a folder
``<output.dir>/runs/<run_id>/`` holding ``config.json`` (the resolved
configuration, the target without its password), ``metrics.json``,
``model/``, ``index.json`` (which index served the lists) and ``run.log``.
SQLite and PostgreSQL targets also record the model checksum (sha256 of
``model/manifest.json``) and the resolved configuration with the run in
``fmrec_runs``, and keep ``[recommend] keep_runs`` runs for ``fmrec runs rollback``.  A lock file keeps
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

from fmrec.errors import ConfigError

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
    "model": {"task": "ranking", "n_factors": 64, "random_state": 0},
    "recommend": {
        "k": 100,
        "index": "exact",
        "exclude_seen": True,
        "include_untrained_items": False,
        "target": "",  # default: sqlite:///<output.dir>/recommendations.db
        "format": "fmrec",
        "keep_runs": 3,  # SQLite / PostgreSQL targets: published runs kept for rollback
    },
    "evaluate": {"k": [10], "min_rating": 0.0, "baseline": True},
    "output": {"dir": "fmrec-output", "show_user": ""},
}


#: Allowed values of the string keys that name a choice (checked when the config is loaded).
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("data", "format"): ("auto", "movielens", "csv", "tsv", "parquet"),
    ("data", "duplicates"): ("error", "first", "last", "mean"),
    ("recommend", "index"): ("exact", "flat"),
    ("recommend", "format"): ("fmrec", "sagemaker"),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_value(where: str, section: str, key: str, value: Any) -> None:
    """Type (and range) of one value outside ``[model]``, against the defaults."""
    default = DEFAULTS[section][key]
    name = f"[{section}] {key}"
    if (section, key) == ("evaluate", "k"):
        ks = [value] if _is_int(value) else value
        if not isinstance(ks, list) or not ks or not all(_is_int(x) and x >= 1 for x in ks):
            raise ConfigError(f"{where}: {name} must be a positive integer or a list of them, not {value!r}")
        return
    if isinstance(default, bool):
        ok, what = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, what = _is_int(value), "an integer"
    elif isinstance(default, float):
        ok, what = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        ok, what = isinstance(value, str), "a string"
    if not ok:
        raise ConfigError(f"{where}: {name} must be {what}, not {value!r}")
    if (section, key) in (("recommend", "k"), ("recommend", "keep_runs")) and value < 1:
        raise ConfigError(f"{where}: {name} must be a positive integer, not {value!r}")
    if (section, key) == ("data", "test_per_user") and value < 0:
        raise ConfigError(f"{where}: {name} must be 0 or more, not {value!r}")
    choices = CHOICES.get((section, key))
    if choices and value not in choices:
        raise ConfigError(f"{where}: {name} must be one of {list(choices)}, not {value!r}")


def _resolve_paths(layer: dict[str, Any], base: Path) -> None:
    """Make the relative paths of a config file's layer relative to the file's folder."""
    data = layer.get("data")
    if isinstance(data, dict):
        for key in ("train", "test", "item_names"):
            v = data.get(key)
            if isinstance(v, str) and v and v != "builtin" and not Path(v).is_absolute():
                data[key] = str(base / v)
    out = layer.get("output")
    if isinstance(out, dict) and isinstance(out.get("dir"), str) and not Path(out["dir"]).is_absolute():
        out["dir"] = str(base / out["dir"])
    rec = layer.get("recommend")
    target = rec.get("target") if isinstance(rec, dict) else None
    if isinstance(target, str) and target:
        if target.startswith("sqlite:///"):
            rest = target[len("sqlite:///"):]
            if rest and not rest.startswith("/") and not rest.startswith(":memory:"):
                rec["target"] = "sqlite:///" + (base / rest).as_posix()
        elif "://" not in target and not target.startswith("sqlite:") and not Path(target).is_absolute():
            rec["target"] = str(base / target)


def load_config(path: Any = None, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Defaults, updated by the TOML file at ``path`` and then by ``overrides``.

    Unknown sections or keys (outside ``[model]``, which takes any estimator
    parameter) and values of the wrong type raise :class:`ConfigError` naming
    them.  Relative paths in the file are relative to the file's folder;
    ``overrides`` are taken as they are (relative to the working directory).
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
                layer = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except IsADirectoryError:
            raise ConfigError(f"{p}: is a folder, not a config file") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not UTF-8 text ({exc.reason})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML ({exc})") from None
        _resolve_paths(layer, p.resolve().parent)
        layers.append((str(p), layer))
    if overrides:
        layers.append(("overrides", overrides))
    for where, layer in layers:
        for section, values in layer.items():
            if section not in cfg:
                raise ConfigError(f"{where}: unknown section [{section}]; known: {sorted(cfg)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: [{section}] must be a table")
            for key, value in values.items():
                if section != "model":
                    if key not in cfg[section]:
                        raise ConfigError(f"{where}: unknown key {key!r} in [{section}]; known: {sorted(cfg[section])}")
                    _check_value(where, section, key, value)
                cfg[section][key] = value
    # [model] is checked by the estimator itself, now, so a typo fails before any data is read
    from fmrec.model import FactorizationMachine

    try:
        FactorizationMachine().set_params(**cfg["model"])._validate_params()
    except ConfigError as exc:
        where = ", ".join(w for w, layer in layers if "model" in layer) or "defaults"
        raise ConfigError(f"{where}: [model]: {exc}") from None
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
    if test.rating is not None and model.task in ("regression", "binary"):
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


def resolve_target(cfg: dict[str, Any]) -> str:
    """The sink target of a loaded config: ``[recommend] target`` or the default
    ``sqlite:///<output.dir>/recommendations.db``."""
    out_dir = Path(cfg["output"]["dir"])
    return cfg["recommend"]["target"] or f"sqlite:///{(out_dir / 'recommendations.db').as_posix()}"


def _records_runs(target: str) -> bool:
    """True for the targets with a run log (SQLite, PostgreSQL): they take ``meta`` and ``keep_runs``."""
    return target.lower().startswith(("sqlite:", "postgresql://", "postgres://"))


def model_checksum_of(folder: Path) -> str:
    """sha256 of a model folder's ``manifest.json`` (which holds the sha256 of every other file)."""
    import hashlib

    return hashlib.sha256((Path(folder) / "manifest.json").read_bytes()).hexdigest()


def write_index_info(path: Path, index: Any, rc: dict[str, Any], model_checksum: str) -> None:
    """``index.json`` of a run folder: which index served the lists, over how many items."""
    info = {
        "index": rc["index"],
        "class": type(index).__name__,
        "spec": getattr(index, "spec", None),
        "n_items": int(getattr(index, "n_items", 0) or 0),
        "dim": int(getattr(index, "dim", 0) or 0),
        "k": int(rc["k"]),
        "exclude_seen": bool(rc["exclude_seen"]),
        "include_untrained_items": bool(rc["include_untrained_items"]),
        "model_checksum": model_checksum,
        "exact": rc["index"] in ("exact", "flat"),
    }
    path.write_text(json.dumps(info, indent=2))


def run_pipeline(config: Any = None, *, run_id: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> RunResult:
    """Run every stage once; publish the lists only when all stages succeeded.

    Stages: config, load, train, recommend (lists staged in the sink), evaluate,
    publish.  An exception raised by a stage carries the stage's name in its
    ``stage`` attribute; the previously published lists are then untouched.
    """
    from fmrec.model import FactorizationMachine, save_model
    from fmrec.recommend import recommend_all
    from fmrec.index import make_index
    from fmrec.store import open_sink, redact_target, validate_run_id

    cfg = config if isinstance(config, dict) else load_config(config, overrides)
    out_dir = Path(cfg["output"]["dir"])
    run_id = validate_run_id(run_id) if run_id else _new_run_id()
    folder = out_dir / "runs" / run_id
    target = resolve_target(cfg)
    shown = redact_target(target)  # what config.json, run.log and the summary show (no password)
    seconds: dict[str, float] = {}
    with RunLock(out_dir):
        try:
            folder.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise ConfigError(f"{folder}: run folder already exists; choose another run id") from None
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
            resolved["recommend"]["target"] = shown
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
            model_checksum = model_checksum_of(folder / "model")
            log.info("trained %s FM in %.2fs", model.task, seconds["train"])

            stage = "recommend"
            t = time.perf_counter()
            rc = cfg["recommend"]
            opts: dict[str, Any] = {"format": rc["format"]} if rc["format"] != "fmrec" else {}
            if _records_runs(target):  # SQLite / PostgreSQL: the run log gets the model and config
                opts["keep_runs"] = int(rc["keep_runs"])
                opts["meta"] = {"model_checksum": model_checksum, "config": resolved, "run_folder": str(folder)}
            index = make_index(rc["index"])
            n_users = 0
            show = str(cfg["output"]["show_user"])
            sample_batch, sample_row = None, 0
            with open_sink(target, run_id=run_id, **opts) as sink:
                for batch in recommend_all(
                    model, int(rc["k"]), seen=seen, exclude_seen=bool(rc["exclude_seen"]),
                    include_untrained_items=bool(rc["include_untrained_items"]), index=index,
                ):
                    if len(batch) and (sample_batch is None or (show and sample_row < 0)):
                        hits = np.flatnonzero(batch.user_ids.astype(str) == show) if show else np.zeros(0, int)
                        if hits.size:
                            sample_batch, sample_row = batch, int(hits[0])
                        elif sample_batch is None:  # the first user, unless show_user comes later
                            sample_batch, sample_row = batch, (-1 if show else 0)
                    sink.write(batch)
                    n_users += len(batch)
                seconds["recommend"] = time.perf_counter() - t
                write_index_info(folder / "index.json", index, rc, model_checksum)
                log.info("staged top-%d for %d users for %s", rc["k"], n_users, shown)

                # evaluate before publishing: the lists change only when every stage succeeded
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
                stage = "publish"
                t = time.perf_counter()
            seconds["publish"] = time.perf_counter() - t
            log.info("published top-%d for %d users to %s", rc["k"], n_users, shown)
        except Exception as exc:
            # into run.log only: the caller (the CLI) reports the error with its stage
            handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "stage %s failed: %s",
                                          (stage, exc), None))
            try:
                exc.stage = stage  # type: ignore[attr-defined]
            except AttributeError:  # pragma: no cover - exceptions without __dict__
                pass
            raise
        finally:
            root.removeHandler(handler)
            handler.close()
            root.setLevel(previous_level)

    sample_user, sample = None, []
    if sample_batch is not None:
        r = max(sample_row, 0)
        sample_user = sample_batch.user_ids[r]
        name_of = {str(k_): v for k_, v in (names or {}).items()}
        c = int(sample_batch.counts[r])
        sample = [(sample_batch.item_ids[r, j], name_of.get(str(sample_batch.item_ids[r, j]), ""),
                   float(sample_batch.scores[r, j])) for j in range(min(c, 10))]
    return RunResult(run_id, folder, shown, metrics, seconds, sample_user, sample)


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
