"""Decoding in DataLoader worker processes: image -> (preprocessed tensor | error, size, hash, caption).

Decoding and resizing dominate CPU time for small CLIPs, so they run in workers while the main
process embeds; a bad file becomes an error record instead of stopping the batch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from index.imageio import ImageDecodeError, decode
from index.scan import FileEntry, digest, entry_bytes, read_sidecars


class DecodeDataset:
    """Map-style dataset over scan entries (loose files or shard members); item = dict(i, pixels|None,
    width, height, hash, error, caption, json, seconds). Each image is read once: hashed and decoded
    from the same bytes; a JPEG is decoded at the DCT scale the model needs unless `dct` is off."""

    def __init__(self, root: Path, entries: Sequence[FileEntry], preprocess: Callable, max_pixels: int,
                 hashes: dict[str, str | None], dct: bool = True) -> None:
        self.root = Path(root)
        self.entries = entries
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.hashes = hashes
        self.dct = dct
        self.resize_to = resize_side(preprocess)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        start = time.perf_counter()
        entry = self.entries[i]
        item: dict[str, Any] = {"i": i, "pixels": None, "width": None, "height": None,
                                "hash": self.hashes.get(entry.rel), "error": None}
        item.update(read_sidecars(self.root, entry))
        try:
            data = entry_bytes(self.root, entry)
            item["hash"] = item["hash"] or digest(data)
            if not data:
                raise ImageDecodeError("empty file (0 bytes)")
            decoded = decode(data, self.max_pixels, self.resize_to, self.dct)
            item["width"], item["height"] = decoded.width, decoded.height
            item["pixels"] = self.preprocess(decoded.image)
        except ImageDecodeError as exc:
            item["error"] = str(exc)
        except (OSError, EOFError) as exc:
            item["error"] = f"unreadable ({getattr(exc, 'strerror', None) or exc})"
        except Exception as exc:  # a preprocess failure on one odd file must not end the build
            item["error"] = f"could not be prepared ({type(exc).__name__}: {exc})"
        item["seconds"] = time.perf_counter() - start
        return item


def resize_side(preprocess: Callable) -> int | None:
    """The short side the model's preprocess resizes to (torchvision Resize), or None when unknown."""
    for step in getattr(preprocess, "transforms", []):
        size = getattr(step, "size", None)
        if type(step).__name__ == "Resize" and size is not None:
            return int(size) if isinstance(size, int) else int(max(size))
    return None


def collate(batch: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """Stack the decoded tensors; keep every item's metadata (good and bad) in order."""
    import torch

    good = [b["pixels"] for b in batch if b["pixels"] is not None]
    pixels = torch.stack(good) if good else None
    meta = [{k: v for k, v in b.items() if k != "pixels"} | {"ok": b["pixels"] is not None} for b in batch]
    return pixels, meta


def make_loader(dataset: DecodeDataset, batch_size: int, workers: int, pin_memory: bool = False):
    """A DataLoader in file order (order matters for resumable chunks)."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, prefetch_factor=4 if workers > 0 else None)
