"""Safe image decoding shared by indexing and scoring.

Every image that enters discff passes through `open_rgb`, so a corrupt file, a
decompression bomb or an exotic mode fails the same way everywhere: `ImageDecodeError`
with a short reason that is recorded in the index and printed as one line.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 100_000_000  # ~10k x 10k; larger is treated as a decompression bomb


class ImageDecodeError(Exception):
    """The file cannot be used as an image; the message is the reason, without the path."""


def open_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `path` to an upright 8-bit RGB image (first frame of animations)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    raise ImageDecodeError(
                        f"{img.width}x{img.height} pixels exceeds the cap of {max_pixels:,} (possible decompression bomb)"
                    )
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
