"""Image -> VAE input: upright RGB, short side resized to the model's resolution, center crop."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from PIL import Image

from index.imageio import image_bytes, open_rgb


def image_key(image: Any) -> str:
    """Cache key by content, so a renamed or duplicated file is encoded once."""
    digest = hashlib.sha256()
    if isinstance(image, Image.Image):
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
    else:
        digest.update(image_bytes(image))  # a file, a name the index spelled safely, or a tar shard member
    return digest.hexdigest()


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is `size`, then crop the center square (what SD was trained on)."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_pixels(image: Any, size: int) -> torch.Tensor:
    """A [3, size, size] float tensor in [-1, 1]; paths go through the same safe decoder as indexing
    (a JPEG decoded at the smallest DCT scale that still covers `size`, a shard member read in place)."""
    img = image.convert("RGB") if isinstance(image, Image.Image) else open_rgb(image, resize_to=size)
    arr = np.asarray(resize_center_crop(img, size), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
