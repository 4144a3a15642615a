"""Download, verify and safely extract public MovieLens data sets.

Nothing is downloaded implicitly: :func:`fetch_dataset` is called on purpose (the
CLI's ``fmrec fetch``).  Every archive is pinned by SHA-256 and size; a download
whose digest differs is deleted before anything is extracted.  Extraction checks
every member first (no absolute paths, no ``..``, no links, nothing resolving
outside the destination, bounded total size) and then extracts into a staging
folder that is renamed into place, so a failure leaves nothing behind.

Pinned digests (provenance): the SHA-256 and byte sizes below are those published
by TensorFlow Datasets in ``tensorflow_datasets/url_checksums/movielens.txt``
(``ml-100k.zip`` 4,924,029 bytes; ``ml-latest-small.zip`` 978,202 bytes, the
2018-09-26 release), and the same values are pinned independently by other
projects (e.g. the Julia ``MLDatasets``/``DataDeps`` registration for
ml-latest-small, and several projects that also pin the official MD5
``0e33842e24a9c977be4e0107933c0723`` of ``ml-100k.zip``).  ``ml-latest-small`` is a
"latest" data set that GroupLens may regenerate; a new release will fail the check
on purpose (pass ``sha256=`` to accept another digest knowingly).

Licences: MovieLens data are for non-commercial research use; ml-100k may not be
redistributed.  fmrec never ships them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Union

from fmrec.errors import ConfigError, DataError, DownloadError

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "ML_100K_SHA256",
    "ML_LATEST_SMALL_SHA256",
    "MOVIELENS_PROTOCOLS",
    "fetch_dataset",
    "dataset_path",
    "protocol_files",
    "ratings_file",
]

PathLike = Union[str, Path]

#: SHA-256 of https://files.grouplens.org/datasets/movielens/ml-100k.zip (4,924,029 bytes),
#: as published in tensorflow_datasets/url_checksums/movielens.txt.
ML_100K_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"
#: SHA-256 of https://files.grouplens.org/datasets/movielens/ml-latest-small.zip (978,202 bytes,
#: release of 2018-09-26), as published in tensorflow_datasets/url_checksums/movielens.txt.
ML_LATEST_SMALL_SHA256 = "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"

#: Train/test file pairs of the MovieLens-100K protocols (5-fold u1..u5; ua/ub: 10 ratings per user held out).
MOVIELENS_PROTOCOLS: dict[str, tuple[str, str]] = {
    **{f"u{k}": (f"u{k}.base", f"u{k}.test") for k in range(1, 6)},
    "ua": ("ua.base", "ua.test"),
    "ub": ("ub.base", "ub.test"),
}

_MARKER = ".fmrec-verified"
_MAX_EXTRACTED_BYTES = 4 << 30  # refuse archives that expand past 4 GiB
_CHUNK = 1 << 16


@dataclass(frozen=True)
class DatasetInfo:
    """One downloadable data set: where it lives and what it must look like."""

    name: str
    url: str
    sha256: str
    size: int
    folder: str  #: top-level folder inside the archive (and under ``dest_dir``)
    ratings: str  #: the ratings file inside ``folder``
    items: str  #: the item titles file inside ``folder``
    required: tuple[str, ...] = ()  #: files that must exist after extraction
    protocols: dict[str, tuple[str, str]] = field(default_factory=dict)
    licence: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "movielens-100k": DatasetInfo(
        name="movielens-100k",
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        sha256=ML_100K_SHA256,
        size=4_924_029,
        folder="ml-100k",
        ratings="u.data",
        items="u.item",
        required=("u.data", "u.item"),
        protocols=MOVIELENS_PROTOCOLS,
        licence="GroupLens research licence: non-commercial, no redistribution",
    ),
    "movielens-latest-small": DatasetInfo(
        name="movielens-latest-small",
        url="https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        sha256=ML_LATEST_SMALL_SHA256,
        size=978_202,
        folder="ml-latest-small",
        ratings="ratings.csv",
        items="movies.csv",
        required=("ratings.csv", "movies.csv"),
        licence="GroupLens research licence: non-commercial, redistribution under the same terms",
    ),
}

_ALIASES = {"ml-100k": "movielens-100k", "ml-latest-small": "movielens-latest-small"}


def _info(name: str) -> DatasetInfo:
    key = _ALIASES.get(name, name)
    if key not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[key]


def dataset_path(name: str, dest_dir: PathLike) -> Path:
    """Where :func:`fetch_dataset` puts (or has put) data set ``name`` under ``dest_dir``."""
    return Path(dest_dir) / _info(name).folder


def ratings_file(name: str, dest_dir: PathLike) -> Path:
    """The ratings file of a fetched data set (e.g. ``dest/ml-100k/u.data``)."""
    return dataset_path(name, dest_dir) / _info(name).ratings


def protocol_files(folder: PathLike, protocol: str = "ua") -> tuple[Path, Path]:
    """``(train, test)`` files of a MovieLens-100K protocol in an extracted ``ml-100k`` folder.

    ``protocol`` is ``"ua"``/``"ub"`` (10 ratings per user held out) or ``"u1"``..``"u5"``
    (the 5 folds).  Raises :class:`DataError` when a file is missing.
    """
    if protocol not in MOVIELENS_PROTOCOLS:
        raise ConfigError(f"unknown MovieLens protocol {protocol!r}; choose one of {sorted(MOVIELENS_PROTOCOLS)}")
    base, test = MOVIELENS_PROTOCOLS[protocol]
    root = Path(folder)
    out = (root / base, root / test)
    for p in out:
        if not p.is_file():
            raise DataError(
                f"protocol {protocol!r} file not found (fetch movielens-100k first)", path=p
            )
    return out


def _is_verified(target: Path, info: DatasetInfo, sha256: str) -> bool:
    marker = target / _MARKER
    try:
        recorded = marker.read_text(encoding="utf-8").split()
    except OSError:
        return False
    return bool(recorded) and recorded[0] == sha256 and all((target / f).is_file() for f in info.required)


def _download(url: str, dest: Path, expected_size: int | None, progress: bool) -> tuple[Path, str, int]:
    """Stream ``url`` into a temp file in ``dest``; return (file, sha256, size)."""
    fd, tmp_name = tempfile.mkstemp(prefix=".fmrec-download-", suffix=".zip", dir=dest)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(url, headers={"User-Agent": "fmrec"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                total = resp.headers.get("Content-Length")
                total_n = int(total) if total and total.isdigit() else expected_size
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if progress:
                        pct = f" {100 * size / total_n:5.1f}%" if total_n else ""
                        print(f"\rdownloading {url}: {size:,} bytes{pct}", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, urllib.error.HTTPError):
            reason: object = f"HTTP {exc.code} {exc.reason}"
        else:
            reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"download of {url} failed: {reason}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest(), size


def _check_members(zf: zipfile.ZipFile, dest: Path, url: str) -> None:
    """Refuse the whole archive if any member could escape ``dest``."""
    root = dest.resolve()
    total = 0
    for info in zf.infolist():
        name = info.filename
        mode = info.external_attr >> 16
        posix = PurePosixPath(name.replace("\\", "/"))
        bad = None
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or posix.is_absolute():
            bad = "absolute path"
        elif ".." in posix.parts:
            bad = "'..' in path"
        elif stat.S_ISLNK(mode):
            bad = "symbolic link"
        elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            bad = "not a regular file or folder"
        else:
            resolved = (root / posix).resolve()
            if resolved != root and root not in resolved.parents:
                bad = "resolves outside the destination"
        if bad is not None:
            raise DownloadError(f"unsafe archive member {name!r} ({bad}) in {url}; nothing was extracted")
        total += info.file_size
        if total > _MAX_EXTRACTED_BYTES:
            raise DownloadError(f"archive {url} expands past {_MAX_EXTRACTED_BYTES:,} bytes; nothing was extracted")


def fetch_dataset(
    name: str,
    dest_dir: PathLike,
    *,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Download, verify and extract data set ``name`` into ``dest_dir``; return its folder.

    ``url`` overrides the download location (a mirror); ``sha256`` overrides the
    pinned digest (otherwise a mirror must serve the pinned bytes).  When the
    folder was already extracted and verified (a marker file records the digest)
    nothing is downloaded, unless ``force``.  A digest mismatch, a download
    failure or an unsafe archive raises :class:`DownloadError` and leaves nothing
    new under ``dest_dir``.  ``progress`` prints bytes received to stderr.
    """
    info = _info(name)
    expected = (sha256 or info.sha256).lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ConfigError(f"sha256 must be 64 hex digits, not {expected!r}")
    src = url or info.url
    dest = Path(dest_dir)
    target = dest / info.folder
    if not force and _is_verified(target, info, expected):
        return target
    if (target.exists() or target.is_symlink()) and not (target.is_dir() and (target / _MARKER).is_file()):
        raise DownloadError(
            f"{target} exists but was not fetched by fmrec; use it as it is, or move it away to fetch again"
        )
    created = not dest.exists()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {dest}: {exc.strerror or exc}") from None
    try:
        return _fetch_into(info, src, expected, dest, target, progress, url is None)
    except BaseException:
        if created:
            try:
                dest.rmdir()  # only when empty: never removes anything that was there
            except OSError:
                pass
        raise


def _fetch_into(
    info: DatasetInfo, src: str, expected: str, dest: Path, target: Path, progress: bool, pinned_url: bool
) -> Path:
    tmp, actual, size = _download(src, dest, info.size if pinned_url else None, progress)
    staging: Path | None = None
    try:
        if actual != expected:
            raise DownloadError(
                f"sha256 mismatch for {src}: expected {expected}, got {actual} ({size:,} bytes); "
                "the download was deleted and nothing was extracted"
            )
        try:
            zf = zipfile.ZipFile(tmp)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{src} is not a zip archive: {exc}") from None
        with zf:
            _check_members(zf, dest, src)
            staging = Path(tempfile.mkdtemp(prefix=".fmrec-extract-", dir=dest))
            _check_members(zf, staging, src)
            zf.extractall(staging)
        extracted = staging / info.folder
        if not extracted.is_dir():
            raise DownloadError(f"archive {src} has no top-level folder {info.folder!r}")
        missing = [f for f in info.required if not (extracted / f).is_file()]
        if missing:
            raise DownloadError(f"archive {src} lacks {missing} in {info.folder!r}")
        (extracted / _MARKER).write_text(f"{actual} {size} {src}\n", encoding="utf-8")
        if target.exists():  # an older fmrec copy (checked in fetch_dataset): swap, then delete
            os.replace(target, staging / ".old")
        os.replace(extracted, target)
    except OSError as exc:
        raise DownloadError(f"extracting {src} into {dest} failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target
