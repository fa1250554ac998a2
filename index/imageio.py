"""Safe image decoding shared by indexing and scoring.

Every image that enters discff passes through `open_rgb`, so a corrupt file, a
decompression bomb or an exotic mode fails the same way everywhere: `ImageDecodeError`
with a short reason that is recorded in the index and printed as one line.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from index.files import IMAGE_EXTENSIONS, fs_path, open_regular
from index.containers import read_member

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "Decoded", "decode", "open_rgb", "image_bytes", "check_size"]
_ORIENTATION = 0x0112
DEFAULT_MAX_PIXELS = 100_000_000  # ~10k x 10k; larger is treated as a decompression bomb
# Every decode goes through open_rgb, whose check_size applies the user's cap (--max-pixels) from the
# header, before any pixel is decoded. PIL's own fixed limit (89 MP) would refuse images the user
# allowed and quote its number instead of theirs, so it is switched off (Pillow's documented knob).
Image.MAX_IMAGE_PIXELS = None


class ImageDecodeError(Exception):
    """The file cannot be used as an image; the message is the reason, without the path."""


def max_side(max_pixels: int) -> int:
    """The longest side allowed under a pixel cap: 8x the side of the largest square image."""
    return max(1, math.isqrt(max_pixels) * 8)


def check_size(width: int, height: int, max_pixels: int, resize_to: int | None = None) -> None:
    """Refuse sizes that would cost more memory than the cap: the area, each side, and the area after
    the model's resize of the short side to `resize_to` (100000x1 is 0.1 MP but 6.4 MP at 64 px)."""
    if width * height > max_pixels:
        raise ImageDecodeError(f"{width}x{height} pixels exceeds the cap of {max_pixels:,} pixels "
                               "(index build --max-pixels; possible decompression bomb)")
    if max(width, height) > max_side(max_pixels):
        raise ImageDecodeError(f"{width}x{height} pixels: a side exceeds {max_side(max_pixels):,} pixels")
    if resize_to and min(width, height) > 0:
        long_side = math.ceil(max(width, height) * resize_to / min(width, height))
        if long_side * resize_to > max_pixels or long_side > max_side(max_pixels):
            raise ImageDecodeError(f"{width}x{height} pixels would be {long_side:,}x{resize_to} after resizing for "
                                   f"the model, over the cap of {max_pixels:,} (extreme aspect ratio)")
    if min(width, height) <= 0:
        raise ImageDecodeError(f"{width}x{height} pixels: an empty image")


@dataclass
class Decoded:
    """A decoded image and the size of the original (DCT scaling may have decoded it smaller)."""

    image: Image.Image
    width: int
    height: int


def image_bytes(path: str | Path) -> bytes:
    """The bytes of a file, a tar shard member (`shards/00001.tar/key.jpg`) or a parquet row (`a.parquet#3`)."""
    data = read_member(path)
    if data is not None:
        return data
    with os.fdopen(open_regular(path), "rb") as handle:
        return handle.read()


def open_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, resize_to: int | None = None,
             dct: bool = True, crop_resample: bool = False) -> Image.Image:
    """Decode `path` to an upright 8-bit RGB image (first frame of animations); see `decode`."""
    return decode(path, max_pixels, resize_to, dct, crop_resample).image


def decode(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, resize_to: int | None = None,
           dct: bool = True, crop_resample: bool = False) -> Decoded:
    """Decode a file, a shard member or bytes already read; every failure is an ImageDecodeError.

    Only a regular file is opened (a FIFO or a device would block or never end); a name spelled
    safely by the index (`index.files.safe_name`) is mapped back to the file it names. With
    `resize_to` (the short side the caller resizes to next) and `dct`, a JPEG is decoded at the
    smallest 1/2, 1/4 or 1/8 DCT scale that keeps that short side: the resize that follows sees the
    same picture, and decoding a 12 MP photo for a 224 px model costs a fraction of a full decode.
    `crop_resample`: the caller resamples the centre crop straight to its output size
    (engine/preprocess.resize_center_crop), so an extreme aspect ratio makes no giant intermediate
    and is not refused for it.
    """
    check = resize_to if not crop_resample else None
    try:
        if isinstance(source, (bytes, bytearray)):
            return _decode_file(io.BytesIO(source), max_pixels, resize_to, dct, check)
        data = read_member(source)
        if data is not None:
            return _decode_file(io.BytesIO(data), max_pixels, resize_to, dct, check)
        return _decode_file(_checked_path(source), max_pixels, resize_to, dct, check)
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError("is a directory") from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image ({exc})") from None


def _checked_path(path: str | Path) -> Path:
    path = fs_path(path)
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(str(path))
    if not stat.S_ISREG(info.st_mode):
        raise ImageDecodeError("not a regular file (a FIFO, device or socket)")
    if info.st_size == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    return path


def _decode_file(file, max_pixels: int, resize_to: int | None, dct: bool, check_resize: int | None) -> Decoded:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(file) as img:
            check_size(img.width, img.height, max_pixels, check_resize)
            width, height = img.size
            if img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            img.seek(0)
            if dct and resize_to:
                dct_scale(img, resize_to)
            img.load()
            return Decoded(to_rgb(ImageOps.exif_transpose(img)), width, height)


def dct_scale(img: Image.Image, short_side: int) -> None:
    """Ask a JPEG to decode at the smallest DCT scale whose short side is still >= `short_side`."""
    if img.format != "JPEG" or min(img.size) <= short_side:
        return
    scale = short_side / min(img.size)
    img.draft(img.mode, (math.ceil(img.width * scale), math.ceil(img.height * scale)))


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited onto white, 16-bit is rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray((arr / peak * 255.0).clip(0, 255).astype("uint8")).convert("RGB")
    if img.mode == "P" and "transparency" in img.info or img.mode in ("LA", "PA"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")
