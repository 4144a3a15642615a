"""``open_sink``: pick a sink from the target's URL scheme or file suffix.

Adding a backend is one call to :func:`register_scheme` or
:func:`register_suffix`.  The run log helpers (:func:`list_published_runs`,
:func:`rollback_run`) dispatch the same way for the SQLite and PostgreSQL
targets, and :func:`redact_target` hides passwords before a target is shown.
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Any, Callable

from fmrec.errors import ConfigError
from fmrec.store._base import Sink

__all__ = [
    "open_sink",
    "register_scheme",
    "register_suffix",
    "accepted_targets",
    "redact_target",
    "list_published_runs",
    "rollback_run",
]

#: A factory takes ``(target, run_id, format, **opts)`` and returns a Sink.
SinkFactory = Callable[..., Sink]

_SCHEMES: dict[str, SinkFactory] = {}
_SUFFIXES: dict[str, SinkFactory] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_scheme(scheme: str, factory: SinkFactory, description: str | None = None) -> None:
    """Route targets starting with ``<scheme>://`` to ``factory``."""
    _SCHEMES[scheme.lower()] = factory
    if description:
        _DESCRIPTIONS[f"{scheme}://"] = description


def register_suffix(suffix: str, factory: SinkFactory, description: str | None = None) -> None:
    """Route paths ending in ``suffix`` (e.g. ``".jsonl"``, case-insensitive) to ``factory``."""
    _SUFFIXES[suffix.lower()] = factory
    if description:
        _DESCRIPTIONS[suffix] = description


def accepted_targets() -> str:
    """One-line description of the accepted target forms."""
    return ", ".join(_DESCRIPTIONS.values())


def _check_opts(cls: type, target: str, opts: dict[str, Any]) -> None:
    """Unknown options are a ConfigError naming them and the accepted ones."""
    params = inspect.signature(cls.__init__).parameters
    allowed = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "format"]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {cls.__name__} ({target}); "
            f"accepted: {', '.join(allowed) or 'none'}"
        )


def _no_format(kind: str, target: str, format: str | None) -> None:
    if format is not None:
        raise ConfigError(f"format {format!r} applies to JSON lines targets only, not the {kind} target {target}")


def _jsonl(target: str, run_id: str | None, format: str | None, **opts: Any) -> Sink:
    from fmrec.store.jsonl import JsonlSink

    _check_opts(JsonlSink, target, opts)
    return JsonlSink(target, run_id, format=format, **opts)


def _parquet(target: str, run_id: str | None, format: str | None, **opts: Any) -> Sink:
    from fmrec.store.parquet import ParquetSink

    _no_format("Parquet", target, format)
    _check_opts(ParquetSink, target, opts)
    return ParquetSink(target, run_id, **opts)


def _sqlite(target: str, run_id: str | None, format: str | None, **opts: Any) -> Sink:
    from fmrec.store.sqlite import SqliteSink

    _no_format("SQLite", target, format)
    _check_opts(SqliteSink, target, opts)
    return SqliteSink(target, run_id, **opts)


def _postgresql(target: str, run_id: str | None, format: str | None, **opts: Any) -> Sink:
    from fmrec.store.postgres import PostgresSink

    _no_format("PostgreSQL", target, format)
    _check_opts(PostgresSink, redact_target(target), opts)
    return PostgresSink(target, run_id, **opts)


_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact_target(target: str) -> str:
    """A target as shown to people: the password of ``scheme://user:password@host`` and of a
    ``?password=`` query parameter replaced by ``***``."""
    text = str(target)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        cred, _, host = netloc.rpartition("@")
        if ":" in cred:
            cred = cred.split(":", 1)[0] + ":***"
        netloc = f"{cred}@{host}"
    return _PASSWORD_PARAM.sub(r"\1***", f"{scheme}://{netloc}{slash}{tail}")


_redact = redact_target  # the old private name


def _runs_backend(target: str) -> str:
    text = os.fspath(target)
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    if scheme == "sqlite" or text.lower().startswith("sqlite:"):
        return "sqlite"
    raise ConfigError(
        f"runs are recorded by SQLite and PostgreSQL targets only, not {redact_target(text)!r} "
        "(use sqlite:///path.db or postgresql://...)"
    )


def list_published_runs(target: str | os.PathLike[str], *, view: str | None = None, **opts: Any) -> list[Any]:
    """The runs recorded at a SQLite or PostgreSQL ``target``, newest publish first.

    Returns :class:`~fmrec.store.RunInfo` objects (``current`` marks the run its view
    serves).  ``opts``: ``runs_table``; ``schema`` for PostgreSQL.
    """
    if _runs_backend(os.fspath(target)) == "postgres":
        from fmrec.store.postgres import list_postgres_runs

        return list_postgres_runs(os.fspath(target), view=view, **opts)
    from fmrec.store.sqlite import list_runs

    return list_runs(target, view=view, **opts)


def rollback_run(target: str | os.PathLike[str], run_id: str, **opts: Any) -> Any:
    """Serve the kept run ``run_id`` again at ``target`` (its view re-pointed in one transaction).

    Returns the run's :class:`~fmrec.store.RunInfo`.  ``opts``: ``runs_table``;
    ``schema`` for PostgreSQL.
    """
    if _runs_backend(os.fspath(target)) == "postgres":
        from fmrec.store.postgres import rollback_postgres

        return rollback_postgres(os.fspath(target), run_id, **opts)
    from fmrec.store.sqlite import rollback_sqlite

    return rollback_sqlite(target, run_id, **opts)


register_suffix(".jsonl", _jsonl, "a *.jsonl or *.json file (JSON lines)")
register_suffix(".json", _jsonl)
register_suffix(".parquet", _parquet, "a *.parquet file")
register_scheme("sqlite", _sqlite, "sqlite:///relative.db or sqlite:////absolute/path.db")
register_scheme("postgresql", _postgresql, "postgresql://user@host:port/dbname (or postgres://)")
register_scheme("postgres", _postgresql)


def open_sink(
    target: str | os.PathLike[str],
    run_id: str | None = None,
    format: str | None = None,
    **opts: Any,
) -> Sink:
    """Open the sink for ``target``; use it as a context manager.

    ``target`` forms: ``*.jsonl`` / ``*.json`` -> :class:`JsonlSink` (``format``
    ``"fmrec"`` or ``"sagemaker"``); ``*.parquet`` -> :class:`ParquetSink`;
    ``sqlite:///relative.db`` / ``sqlite:////abs/path.db`` -> :class:`SqliteSink`;
    ``postgresql://user@host:port/dbname`` / ``postgres://...`` -> :class:`PostgresSink`.
    ``opts`` are the sink's keyword options.  Anything else raises
    :class:`~fmrec.errors.ConfigError` with a one-line message.

    Example::

        with open_sink("sqlite:///recs.db", keep_runs=5) as sink:
            for batch in batches:
                sink.write(batch)
        # published here; an exception inside the block aborts instead
    """
    text = os.fspath(target)
    if not isinstance(text, str):
        raise ConfigError(f"sink target must be a path or URL string, got {target!r}")
    scheme, sep, _ = text.partition("://")
    if sep:
        factory = _SCHEMES.get(scheme.lower())
    elif text.lower().startswith("sqlite:"):
        factory = _SCHEMES["sqlite"]  # sqlite_path explains the malformed URL
    else:
        factory = next((f for suffix, f in _SUFFIXES.items() if text.lower().endswith(suffix)), None)
    if factory is None:
        raise ConfigError(f"unknown sink target {redact_target(text)!r}: expected {accepted_targets()}")
    return factory(text, run_id, format, **opts)
