"""Safe image decoding shared by indexing and scoring.

Every image that enters discff passes through `open_rgb`, so a corrupt file, a
decompression bomb or an exotic mode fails the same way everywhere: `ImageDecodeError`
with a short reason that is recorded in the index and printed as one line.
"""

from __future__ import annotations

import math
import stat
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
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


def open_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, resize_to: int | None = None) -> Image.Image:
    """Decode `path` to an upright 8-bit RGB image (first frame of animations).

    Only a regular file is opened (a FIFO or a device would block or never end); a name spelled
    safely by the index (`index.scan.safe_name`) is mapped back to the file it names.
    """
    from index.scan import fs_path

    path = fs_path(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(str(path))
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError("not a regular file (a FIFO, device or socket)")
        if info.st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_size(img.width, img.height, max_pixels, resize_to)
                img.seek(0)
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
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
