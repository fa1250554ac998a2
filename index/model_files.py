"""Checking a model directory's files before a library loads them.

diffusers, transformers and open_clip fail on a truncated safetensors file, a config that is
not JSON or a missing weights file with tracebacks from deep inside; these checks name the
file and what is wrong with it in one sentence instead, before any weights are read.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "open_clip_model.safetensors",
                "diffusion_pytorch_model.bin", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def json_problem(path: Path) -> str | None:
    """Why `path` is not a JSON object (None when it is)."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return "is missing"
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "is not valid JSON"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None if isinstance(data, dict) else "is not a JSON object"


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a complete safetensors file (None when its header and sizes agree).

    Reads only the header: the format stores an 8-byte header length, a JSON header with each
    tensor's byte range, then the data, so truncation and random bytes show without loading.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return "is truncated (shorter than a safetensors header)"
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, 100 << 20):
                return "is not a safetensors file (its header length is impossible), or is truncated"
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "is not a safetensors file"
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    need = 8 + length + max(ends, default=0)
    if need > size:
        return f"is truncated ({size:,} bytes, its header needs {need:,})"
    return None


def weights_problem(folder: Path, names: tuple[str, ...] = WEIGHT_NAMES) -> tuple[Path, str] | None:
    """(file, why) for a folder whose weights file is missing or broken; None when it looks whole."""
    for name in names:
        path = folder / name
        if path.is_file():
            if path.suffix == ".safetensors":
                why = safetensors_problem(path)
                return (path, why) if why else None
            return None if path.stat().st_size > 0 else (path, "is empty")
    return folder / names[0], f"is missing (no weights file in '{folder}')"
