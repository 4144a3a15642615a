"""Atomic file publishing: write a temp file beside the target, fsync, rename."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO

from fmrec.errors import StoreError


class StagedFile:
    """A temporary file in the target's directory, published with ``os.replace``.

    The temp file is named ``.<target name>.<run_id>.<random>.tmp`` and created
    with mode ``0o666`` minus the umask (like a plain ``open``).  Readers of the
    target see either the old file or the complete new one, never a part.
    """

    def __init__(self, target: str | os.PathLike[str], run_id: str) -> None:
        self.target = Path(target)
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create folder {parent} for {self.target}: {exc.strerror or exc}") from exc
        if self.target.is_dir():
            raise StoreError(f"sink target {self.target} is a folder, not a file")
        self.temp_path = parent / f".{self.target.name}.{run_id}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise StoreError(f"cannot create {self.temp_path}: {exc.strerror or exc}") from exc
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def commit(self) -> None:
        """Flush, fsync, close and rename the temp file onto the target."""
        f = self.file
        if not f.closed:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        else:  # closed by a library writer (pyarrow): fsync through a fresh handle
            fd = os.open(self.temp_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(self.temp_path, self.target)
        _fsync_dir(self.target.parent)

    def discard(self) -> None:
        """Close and remove the temp file (the target is not touched)."""
        try:
            if not self.file.closed:
                self.file.close()
        finally:
            try:
                os.unlink(self.temp_path)
            except FileNotFoundError:
                pass


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (best effort; not every platform can open folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
