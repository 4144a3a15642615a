"""Shared fixtures.  MovieLens copies live in ../shared/data (never in the repo).

PostgreSQL: the server is ``$FMREC_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/test``, trust auth).  ``pg_url`` creates one
throw-away database ``fmrec_test_<random>`` per session and drops it at the end;
``pg_target`` gives every test its own schema of it.  When the server is
unreachable the tests using them are skipped with the reason -- except when
``CI=true``, where that is a failure, so CI cannot go green without them.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from _helpers import serve_folder

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FMREC_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
INTEROP = SHARED / "interop"
ADMIN_URL = os.environ.get("FMREC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_STATE: dict[str, Any] = {}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (DATA / "ml-100k" / "u.data").is_file():
        pytest.skip(f"MovieLens copies not found at {DATA} (set FMREC_SHARED to the shared/ folder)")
    return DATA


@pytest.fixture(scope="session")
def ml100k(shared_data: Path) -> Path:
    return shared_data / "ml-100k"


@pytest.fixture(scope="session")
def interop() -> Path:
    folder = INTEROP / "sagemaker-fm-ml100k-ua"
    if not folder.is_dir():
        pytest.skip(f"interop files not found at {folder}")
    return folder


# --------------------------------------------------------------------------- logging


@pytest.fixture
def reset_cli_logging() -> Iterator[None]:
    """main() points the "fmrec" logger at the (captured) stderr; undo that after the test."""
    yield
    root = logging.getLogger("fmrec")
    root.handlers.clear()
    root.setLevel(logging.NOTSET)
    root.propagate = True


@pytest.fixture
def restore_fmrec_logger() -> Iterator[None]:
    """Put the "fmrec" logger's level and handlers back as they were before the test."""
    root = logging.getLogger("fmrec")
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


# --------------------------------------------------------------------------- local HTTP


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 (random port); yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_folder(root) as base:
        yield root, base


# --------------------------------------------------------------------------- PostgreSQL


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} -- CI=true: the PostgreSQL tests must run, not be skipped", pytrace=False)
    pytest.skip(f"{reason} (PostgreSQL tests skipped; with CI=true this is a failure)")


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_url(request: pytest.FixtureRequest) -> str:
    """URL of this session's throw-away database (created once, dropped at the end)."""
    if "error" in _STATE:
        _unavailable(_STATE["error"])
    if "url" not in _STATE:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - psycopg is a dependency
            _STATE["error"] = f"psycopg not importable: {exc}"
            _unavailable(_STATE["error"])
        try:
            admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            _STATE["error"] = f"PostgreSQL not reachable at {ADMIN_URL}: {' '.join(str(exc).split())}"
            _unavailable(_STATE["error"])
        name = f"fmrec_test_{secrets.token_hex(5)}"
        with admin:
            admin.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        request.config.add_cleanup(drop)
        _STATE["url"] = _with_db(ADMIN_URL, name)
    return str(_STATE["url"])


@pytest.fixture
def pg_target(pg_url: str) -> str:
    """A target in a fresh schema of the session database (``?schema=t_<random>``)."""
    sep = "&" if "?" in pg_url else "?"
    return f"{pg_url}{sep}schema=t_{secrets.token_hex(5)}"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fmrec train builtin --out m --epochs 1 --factors 8`` (once per session)."""
    if "model" not in _STATE:
        from fmrec.cli.main import main

        folder = tmp_path_factory.mktemp("tiny") / "m"
        assert main(["-q", "train", "builtin", "--out", str(folder), "--epochs", "1", "--factors", "8"]) == 0
        _STATE["model"] = folder
    return Path(_STATE["model"])
