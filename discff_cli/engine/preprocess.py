"""Image -> VAE input: upright RGB, short side resized to the model's resolution, center crop."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from PIL import Image

from index.imageio import image_bytes, open_rgb
from index.scan import digest as content_digest


def image_key(image: Any) -> str:
    """Cache key by content, so a renamed or duplicated file is encoded once.

    A file's key is the content hash the index records for it (index.scan.digest, BLAKE2b-128 of
    the bytes of a regular file or of a tar shard member); an in-memory image hashes its mode, size
    and pixels."""
    if not isinstance(image, Image.Image):
        return content_digest(image_bytes(image))
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """The center square of `img`, at `size` x `size` (what SD was trained on), in one resample.

    Same geometry as "resize the short side to `size`, then crop the center", but the crop box is
    mapped back onto the source and resampled straight to the output, so no intermediate larger than
    the output exists: a 10000x10 panorama costs a 512x512 image, not a 512,000x512 one."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return img.resize((size, size), Image.BICUBIC, box=box)


def load_pixels(image: Any, size: int) -> torch.Tensor:
    """A [3, size, size] float tensor in [-1, 1]; paths go through the same safe decoder as indexing
    (a JPEG decoded at the smallest DCT scale that still covers `size`, a shard member read in place;
    its pixel cap applies to the file; the model's input is always size x size, made in one resample)."""
    img = image.convert("RGB") if isinstance(image, Image.Image) else open_rgb(image, resize_to=size, crop_resample=True)
    arr = np.asarray(resize_center_crop(img, size), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
