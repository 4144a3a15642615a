"""Tests for fmrec.data.datasets: pinned registry, verified download, safe extraction.

Downloads go to a local ``http.server`` on 127.0.0.1 only; nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
from pathlib import Path

import pytest

from fmrec.data import DATASETS, dataset_path, fetch_dataset, protocol_files, ratings_file, read_interactions
from fmrec.data.datasets import ML_100K_SHA256, ML_LATEST_SMALL_SHA256, MOVIELENS_PROTOCOLS
from fmrec.errors import ConfigError, DataError, DownloadError

ML100K_FILES = ("README", "u.data", "u.item", "ua.base", "ua.test")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_ml100k_zip(ml100k: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(zipfile.ZipInfo("ml-100k/"), "")
        for name in ML100K_FILES:
            zf.write(ml100k / name, f"ml-100k/{name}")
    return out


def build_zip(out: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return out


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


# -------------------------------------------------------------------------- registry
def test_registry_pins() -> None:
    assert set(DATASETS) == {"movielens-100k", "movielens-latest-small"}
    for info in DATASETS.values():
        assert info.url.startswith("https://files.grouplens.org/datasets/movielens/")
        assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)
        assert info.size > 0
    assert DATASETS["movielens-100k"].sha256 == ML_100K_SHA256
    assert DATASETS["movielens-100k"].size == 4_924_029
    assert DATASETS["movielens-latest-small"].sha256 == ML_LATEST_SMALL_SHA256
    assert DATASETS["movielens-latest-small"].size == 978_202


def test_paths(tmp_path: Path) -> None:
    assert dataset_path("movielens-100k", tmp_path) == tmp_path / "ml-100k"
    assert dataset_path("ml-100k", tmp_path) == tmp_path / "ml-100k"
    assert ratings_file("movielens-latest-small", tmp_path) == tmp_path / "ml-latest-small" / "ratings.csv"
    with pytest.raises(ConfigError, match="unknown data set"):
        dataset_path("movielens-1b", tmp_path)


@pytest.mark.movielens
def test_protocol_files(ml100k: Path) -> None:
    base, test = protocol_files(ml100k, "ua")
    assert (base.name, test.name) == ("ua.base", "ua.test")
    assert set(MOVIELENS_PROTOCOLS) == {"u1", "u2", "u3", "u4", "u5", "ua", "ub"}
    for proto in MOVIELENS_PROTOCOLS:
        assert all(p.is_file() for p in protocol_files(ml100k, proto))


def test_protocol_files_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        protocol_files(tmp_path, "u9")
    with pytest.raises(DataError, match="ua.base") as e:
        protocol_files(tmp_path, "ua")
    assert "\n" not in str(e.value)


def test_bad_sha_argument(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        fetch_dataset("movielens-100k", tmp_path, url="http://127.0.0.1:9/x.zip", sha256="abc")


# --------------------------------------------------------------------- fetch (local HTTP)
@pytest.mark.network
@pytest.mark.movielens
def test_fetch_verify_extract_and_idempotent(ml100k: Path, served: tuple[Path, str], tmp_path: Path) -> None:
    root, base = served
    archive = build_ml100k_zip(ml100k, root / "ml-100k.zip")
    digest = sha256_of(archive)
    dest = tmp_path / "data"
    out = fetch_dataset("movielens-100k", dest, url=f"{base}/ml-100k.zip", sha256=digest)
    assert out == dest / "ml-100k" == dataset_path("movielens-100k", dest)
    for name in ML100K_FILES:
        assert (out / name).read_bytes() == (ml100k / name).read_bytes()
    # nothing else left behind (no temp download, no staging folder)
    assert sorted(p.name for p in dest.iterdir()) == ["ml-100k"]
    x = read_interactions(ratings_file("movielens-100k", dest))
    assert len(x) == 100_000
    train, test = protocol_files(out, "ua")
    assert read_interactions(test).n_users == 943

    # idempotent: a second call with the server's file gone downloads nothing
    archive.unlink()
    assert fetch_dataset("movielens-100k", dest, url=f"{base}/ml-100k.zip", sha256=digest) == out
    # force re-downloads and replaces the copy
    build_ml100k_zip(ml100k, archive)
    (out / "u.data").write_text("damaged")
    assert fetch_dataset("movielens-100k", dest, url=f"{base}/ml-100k.zip", sha256=digest, force=True) == out
    assert (out / "u.data").read_bytes() == (ml100k / "u.data").read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["ml-100k"]
    # a damaged copy is not "verified": a required file missing triggers a fresh download
    (out / "u.item").unlink()
    assert fetch_dataset("movielens-100k", dest, url=f"{base}/ml-100k.zip", sha256=digest) == out
    assert (out / "u.item").is_file()
    # force with the server's file gone fails cleanly, keeping the good copy
    archive.unlink()
    with pytest.raises(DownloadError, match="404|Not Found"):
        fetch_dataset("movielens-100k", dest, url=f"{base}/ml-100k.zip", sha256=digest, force=True)
    assert (out / "u.data").is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["ml-100k"]


@pytest.mark.network
def test_wrong_sha256_leaves_nothing(served: tuple[Path, str], tmp_path: Path) -> None:
    root, base = served
    archive = build_zip(root / "a.zip", {"ml-100k/u.data": b"1\t1\t5\t1\n", "ml-100k/u.item": b"1|A|\n"})
    actual = sha256_of(archive)
    wrong = "0" * 64
    dest = tmp_path / "data"
    with pytest.raises(DownloadError) as e:
        fetch_dataset("movielens-100k", dest, url=f"{base}/a.zip", sha256=wrong)
    msg = str(e.value)
    assert "\n" not in msg and wrong in msg and actual in msg and "sha256 mismatch" in msg
    assert files_under(dest) == []  # no temp file, nothing extracted (dest was not there before)

    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(DownloadError):
        fetch_dataset("movielens-100k", dest, url=f"{base}/a.zip", sha256=wrong)
    assert [p.name for p in files_under(dest)] == ["keep.txt"]


@pytest.mark.network
def test_pinned_digest_applies_to_mirrors(served: tuple[Path, str], tmp_path: Path) -> None:
    root, base = served
    build_zip(root / "m.zip", {"ml-latest-small/ratings.csv": b"userId,movieId\n1,1\n"})
    with pytest.raises(DownloadError, match=ML_LATEST_SMALL_SHA256):
        fetch_dataset("movielens-latest-small", tmp_path / "d", url=f"{base}/m.zip")
    assert files_under(tmp_path / "d") == []


@pytest.mark.network
@pytest.mark.parametrize(
    "members,links,bad",
    [
        ({"ml-100k/u.data": b"1\t1\t1\t1\n", "ml-100k/../evil": b"x"}, None, "ml-100k/../evil"),
        ({"ml-100k/u.data": b"1\t1\t1\t1\n", "../evil": b"x"}, None, "../evil"),
        ({"ml-100k/u.data": b"1\t1\t1\t1\n", "/tmp/fmrec-evil-absolute": b"x"}, None, "/tmp/fmrec-evil-absolute"),
        ({"ml-100k/u.data": b"1\t1\t1\t1\n"}, {"ml-100k/link": "/etc/passwd"}, "ml-100k/link"),
    ],
    ids=["dotdot-inside", "dotdot-top", "absolute", "symlink"],
)
def test_unsafe_archives_extract_nothing(
    served: tuple[Path, str], tmp_path: Path, members: dict[str, bytes], links: dict[str, str] | None, bad: str
) -> None:
    root, base = served
    archive = build_zip(root / "evil.zip", members, links)
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match="unsafe archive member") as e:
        fetch_dataset("movielens-100k", dest, url=f"{base}/evil.zip", sha256=sha256_of(archive))
    msg = str(e.value)
    assert "\n" not in msg and repr(bad) in msg and "nothing was extracted" in msg
    assert files_under(dest) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/fmrec-evil-absolute").exists()


@pytest.mark.network
def test_not_a_zip_and_missing_folder(served: tuple[Path, str], tmp_path: Path) -> None:
    root, base = served
    junk = root / "junk.zip"
    junk.write_bytes(b"this is not a zip")
    with pytest.raises(DownloadError, match="not a zip"):
        fetch_dataset("movielens-100k", tmp_path / "d", url=f"{base}/junk.zip", sha256=sha256_of(junk))
    other = build_zip(root / "other.zip", {"elsewhere/u.data": b"1\t1\t1\t1\n"})
    with pytest.raises(DownloadError, match="no top-level folder 'ml-100k'"):
        fetch_dataset("movielens-100k", tmp_path / "d", url=f"{base}/other.zip", sha256=sha256_of(other))
    assert files_under(tmp_path / "d") == []


def test_foreign_folder_is_never_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "ml-100k"
    mine.mkdir()
    (mine / "u.data").write_text("my own copy")
    with pytest.raises(DownloadError, match="not fetched by fmrec"):
        fetch_dataset("movielens-100k", tmp_path, url="http://127.0.0.1:9/x.zip", sha256="0" * 64, force=True)
    assert (mine / "u.data").read_text() == "my own copy"


def test_unreachable_url(tmp_path: Path) -> None:
    # port 9 (discard) on loopback: connection refused, no traffic leaves the machine
    with pytest.raises(DownloadError, match="download of http://127.0.0.1:9/x.zip failed"):
        fetch_dataset("movielens-100k", tmp_path / "d", url="http://127.0.0.1:9/x.zip", sha256="0" * 64)
    assert files_under(tmp_path / "d") == []
