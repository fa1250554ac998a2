"""How the index names and opens a collection's files: the ground floor every reader stands on.

A path is stored as valid UTF-8 text (`safe_name`) that still leads back to the file on disk
(`fs_path`), and a file is opened only when it is a regular file (`open_regular`): a FIFO or a
link to /dev/zero named like an image would otherwise hang a build. It imports nothing of the
index, so the scan, the tar reader and the decoder can all use it without importing each other.
"""

from __future__ import annotations

import errno
import os
import re
import stat as stat_
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_ESCAPE = re.compile(r"\\x([0-9a-f]{2})")


def safe_name(name: str) -> str:
    """A name as valid UTF-8: bytes that are not UTF-8 (surrogate-escaped by os) become `\\xNN`."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def fs_path(path: str | Path) -> Path:
    """The file a (possibly safe-spelled) path names: undo `safe_name` when the spelled path does not exist."""
    path = Path(path)
    text = str(path)
    if "\\x" not in text or os.path.lexists(text):
        return path
    raw = _ESCAPE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)
    return Path(raw)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (for the reason a scan records)."""
    for test, name in ((stat_.S_ISFIFO, "a FIFO"), (stat_.S_ISCHR, "a character device"),
                       (stat_.S_ISBLK, "a block device"), (stat_.S_ISSOCK, "a socket"), (stat_.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of `path`, refusing anything but a regular file without blocking on it."""
    fd = os.open(fs_path(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat_.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{file_kind(mode)}, not an image file")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise
