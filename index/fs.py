"""Failed writes as one sentence: which path, and why in words (full disk, read-only, no permission).

Checked up front where it can be (`check_writable` before a model loads or an image is embedded),
and turned into the same sentence when it happens later (`write_failure`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from tempfile import mkstemp

from index.errors import IndexError_

REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the name is too long",
}


class WriteFailed(IndexError_):
    """A file could not be written; the message names it and says why."""


def reason(exc: OSError) -> str:
    return REASONS.get(exc.errno, exc.strerror or type(exc).__name__)


def write_failure(exc: OSError, fallback: str | Path, after: str = "") -> WriteFailed:
    """The sentence for a write that failed: `Cannot write 'PATH': the disk is full.` plus `after`."""
    path = exc.filename or fallback
    return WriteFailed(f"Cannot write '{path}': {reason(exc)}" + (f"; {after}" if after else "."))


def check_writable(folder: str | Path, after: str = "") -> None:
    """Create `folder` if needed and a file in it, then remove it; raise WriteFailed naming what failed.

    Why: a read-only or unwritable destination should be refused before minutes of work, not after.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = mkstemp(prefix=".discff-write-test-", dir=folder)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        if exc.filename is None or str(exc.filename).startswith(str(folder / ".discff-write-test-")):
            exc.filename = str(folder)
        raise write_failure(exc, folder, after) from None
