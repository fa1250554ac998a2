"""What every benchmark converter shares: field checks that name the file and row, images that
must become files, the per-tag slice, the one-line missing-images report and the JSONL writer.

A converter reads its benchmark's own layout into `Draft`s (texts, answer, tag, and image
*sources*); only the drafts that survive `--max-per-tag` have their images made (an ARO crop
costs a decode of a Visual Genome photo), so a quick slice of a 24k-item benchmark is quick.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from discff_cli.errors import DiscffError

MISSING_SHOWN = 3  # names listed in the one-line missing-images report


def row_error(file: Path, where: str, why: str) -> DiscffError:
    """`FILE WHERE: why.` — WHERE is how the layout addresses a row (line 3, entry [3], entry "17")."""
    return DiscffError(f"{file} {where}: {why.rstrip('.')}.")


def need_str(row: dict, key: str, file: Path, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise row_error(file, where, f'"{key}" must be a non-empty string')
    return value


def need_number(row: dict, key: str, file: Path, where: str, positive: bool = False) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and not value > 0):
        raise row_error(file, where, f'"{key}" must be a {"positive " if positive else ""}number')
    return value


def need_object(row: Any, file: Path, where: str) -> dict:
    if not isinstance(row, dict):
        raise row_error(file, where, "expected a JSON object")
    return row


def read_json(file: Path, kind: str) -> Any:
    """A whole JSON document, or one sentence saying why not."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DiscffError(f"{kind} file '{file}' does not exist.") from None
    except UnicodeDecodeError:
        raise DiscffError(f"{kind} file '{file}' is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise DiscffError(f"{file} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None


# ----------------------------------------------------------------------------- image sources


class ImageSource(Protocol):
    """Something that becomes an image file the engine can read."""

    name: str  # what the user would look for when it is missing (a file name under their folder)

    def materialize(self, cache: Path) -> Path:
        """The file's path; raises FileNotFoundError when the source is missing."""


@dataclass(frozen=True)
class FileImage:
    """An image the user already has on disk (Winoground's data/images, COCO val2017)."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def materialize(self, cache: Path) -> Path:
        if not self.path.is_file():
            raise FileNotFoundError(self.path)
        return self.path


@dataclass(frozen=True)
class CropImage:
    """A box of a source image (ARO's VG crops), cut the way ARO cuts it: PIL `crop((x, y, x + w, y + h))`
    on the decoded pixels as stored (no EXIF rotation, so the box means what it meant to ARO), saved as
    a lossless PNG named by the source's path, size, mtime and the box, so re-runs reuse it."""

    path: Path
    box: tuple[float, float, float, float]

    @property
    def name(self) -> str:
        return self.path.name

    def key(self) -> str:
        stat = self.path.stat()  # FileNotFoundError when missing
        ident = f"{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.box}"
        return hashlib.sha256(ident.encode()).hexdigest()[:32]

    def materialize(self, cache: Path) -> Path:
        out = cache / f"crop-{self.key()}.png"
        if out.is_file():
            return out
        crop = _crop(self.path, self.box)
        write_atomic(out, lambda f: crop.save(f, format="PNG"))
        return out


def _crop(path: Path, box: tuple[float, float, float, float]):
    """Decode without EXIF rotation and crop; any decoding failure becomes ImageDecodeError."""
    import warnings

    from PIL import Image

    from index.imageio import DEFAULT_MAX_PIXELS, ImageDecodeError, to_rgb

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > DEFAULT_MAX_PIXELS:
                    raise ImageDecodeError(f"{img.width}x{img.height} pixels exceeds the decompression-bomb cap")
                crop = to_rgb(img).crop(box)
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBomb* for bad files
        raise ImageDecodeError(f"cannot be decoded ({type(exc).__name__}: {exc})") from None
    if crop.width == 0 or crop.height == 0:
        raise ImageDecodeError(f"the box {box} is empty")
    return crop


def image_from_bytes(data: bytes, cache: Path) -> Path:
    """Embedded image bytes (Winoground's parquet) as a file named by their SHA-256; written once."""
    digest = hashlib.sha256(data).hexdigest()[:32]
    suffix = ".png" if data.startswith(b"\x89PNG") else ".jpg" if data.startswith(b"\xff\xd8") else ".img"
    out = cache / f"{digest}{suffix}"
    if not out.is_file():
        write_atomic(out, lambda f: f.write(data))
    return out


def write_atomic(out: Path, write: Callable[[Any], None]) -> None:
    """Write via a temp file and rename, so an interrupted run never leaves half a file to be reused."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-", suffix=out.suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise DiscffError(f"Cannot write '{out}': {exc.strerror or exc}.") from None


def default_cache() -> Path:
    """Where made images go when no --write-jsonl is given: $XDG_CACHE_HOME/discff/benchmark-images."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "discff" / "benchmark-images"


def cache_for(write_jsonl: str | Path | None) -> Path:
    """Next to the written JSONL (so the file and its images travel together), else the user cache."""
    if write_jsonl:
        out = Path(write_jsonl)
        return out.parent / f"{out.stem}-images"
    return default_cache()


# ----------------------------------------------------------------------------- drafts


@dataclass
class Draft:
    """One benchmark row, converted except for its image files."""

    kind: str
    images: tuple[ImageSource, ...]
    texts: tuple[str, ...]
    answer: int | None
    tag: str
    source: dict = field(default_factory=dict)  # the row's own address and id, kept in --write-jsonl


def missing_report(failed: dict[str, str], dropped: int, where: str) -> str:
    """One line: how many images could not be used, the first few names and what was skipped."""
    names = list(failed)
    shown = ", ".join(f"{n} ({failed[n]})" for n in names[:MISSING_SHOWN])
    more = f" and {len(names) - MISSING_SHOWN} more" if len(names) > MISSING_SHOWN else ""
    images = "1 image" if len(names) == 1 else f"{len(names)} images"
    skipped = "1 item that needs them is" if dropped == 1 else f"{dropped} items that need them are"
    return f"{images} under {where} cannot be used: {shown}{more}; {skipped} skipped."
