"""Persistent VAE latents in the index directory, so `search --rerank` skips the VAE.

`latents.npy` (float16 [N, C, h, w], memory-mapped: a rerank reads only its candidates' rows),
`empty.npy` (float32 [N, conditions]: each image's empty-prompt noise-prediction error e(x, ∅) on
the build's grid and seed, computed from the stored float16 latent so it is exactly what a
search would compute) and `latents.json` (the scorer's content keys, row by row, the model
fingerprint and resolution, and the grid and seed of `empty.npy`). Keys are the scorer's own
content hashes, so a renamed file still hits and a changed file misses. Written to temp files
and renamed, like the index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ARRAY, META, EMPTY = "latents.npy", "latents.json", "empty.npy"


def _read_meta(index_dir: Path) -> dict[str, Any] | None:
    """The store's metadata, or None when it is absent or damaged (then it is rebuilt, never trusted)."""
    meta_path = index_dir / META
    if not meta_path.is_file() or not (index_dir / ARRAY).is_file():
        return None
    try:
        meta = json.loads(meta_path.read_bytes().decode())
        ok = isinstance(meta, dict) and isinstance(meta.get("keys"), list) and "fingerprint" in meta \
            and "resolution" in meta and all(isinstance(k, str) for k in meta["keys"])
        return meta if ok and _load_array(index_dir, len(meta["keys"])) is not None else None
    except (OSError, ValueError, RecursionError):
        return None


def _load_rows(index_dir: Path, name: str, ndim: int, rows: int) -> np.ndarray | None:
    """`name` memory-mapped, or None when it is missing, truncated, garbage or not `rows` long
    (the caller then recomputes what it held)."""
    try:
        array = np.load(index_dir / name, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return array if array.ndim == ndim and array.shape[0] == rows else None


def _load_array(index_dir: Path, rows: int) -> np.ndarray | None:
    """latents.npy: [rows, channels, height, width]."""
    return _load_rows(index_dir, ARRAY, 4, rows)


def _compatible(meta: dict[str, Any] | None, scorer: Any) -> bool:
    return bool(meta) and meta["fingerprint"] == scorer.parts.fingerprint and meta["resolution"] == scorer.parts.resolution


def update_latent_store(index_dir: str | Path, scorer: Any, paths: Sequence[str | Path],
                        advance: Callable[[int], None] = lambda n: None, batch: int = 32) -> dict[str, int]:
    """Encode the images not stored yet, drop the ones no longer indexed; returns counts."""
    from discff_cli.engine.preprocess import image_key

    index_dir = Path(index_dir)
    keys = list(dict.fromkeys(image_key(p) for p in paths))
    key_of = dict(zip((image_key(p) for p in paths), paths))
    meta = _read_meta(index_dir)
    old_rows = {k: i for i, k in enumerate(meta["keys"])} if _compatible(meta, scorer) else {}
    old = _load_array(index_dir, len(meta["keys"])) if old_rows else None
    todo = [k for k in keys if k not in old_rows]
    fresh: dict[str, np.ndarray] = {}
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        latents = scorer.encode_images([key_of[k] for k in chunk])
        fresh.update({k: z.numpy().astype(np.float16) for k, z in zip(chunk, latents)})
        advance(len(chunk))
    rows = [old[old_rows[k]] if k in old_rows else fresh[k] for k in keys]
    shape = (len(keys), *scorer.latent_shape)
    array = np.stack(rows) if rows else np.zeros(shape, np.float16)
    grid = [[c.timestep, c.level] for c in scorer.conditions]
    empty = _empty_errors(index_dir, scorer, array, keys, meta, grid)
    _atomic_save(index_dir, array, empty,
                 {"keys": keys, "fingerprint": scorer.parts.fingerprint, "model": scorer.parts.name,
                  "resolution": scorer.parts.resolution, "empty": {"conditions": grid, "seed": scorer.config.seed}})
    return {"encoded": len(todo), "reused": len(keys) - len(todo), "dropped": len(set(old_rows) - set(keys))}


def _empty_errors(index_dir: Path, scorer: Any, array: np.ndarray, keys: list[str], meta: dict[str, Any] | None,
                  grid: list[list]) -> np.ndarray:
    """e(x, ∅) per stored latent on the scorer's grid: reused where the last build made it on the same
    grid and seed, else one empty-prompt pass per image and condition."""
    import torch

    old = _stored_empty(index_dir, meta, scorer, grid)
    out = np.zeros((len(keys), len(grid)), np.float32)
    todo = [i for i, k in enumerate(keys) if k not in old]
    for i, k in enumerate(keys):
        if k in old:
            out[i] = old[k]
    for start in range(0, len(todo), 64):
        rows = todo[start:start + 64]
        latents = torch.from_numpy(np.asarray(array[rows], dtype=np.float32))
        with torch.inference_mode():
            out[rows] = scorer.empty_errors(latents, scorer.conditions).numpy()
    return out


def _stored_empty(index_dir: Path, meta: dict[str, Any] | None, scorer: Any, grid: list[list]) -> dict[str, np.ndarray]:
    """key -> stored empty-prompt errors, when the store has them for this model, grid and seed."""
    if not _compatible(meta, scorer) or not (index_dir / EMPTY).is_file():
        return {}
    info = meta.get("empty") or {}
    if info.get("conditions") != grid or info.get("seed") != scorer.config.seed:
        return {}
    values = _load_empty(index_dir, len(meta["keys"]))
    return {} if values is None else {k: np.asarray(values[i]) for i, k in enumerate(meta["keys"])}


def _load_empty(index_dir: Path, rows: int) -> np.ndarray | None:
    """empty.npy: [rows, conditions]."""
    return _load_rows(index_dir, EMPTY, 2, rows)


def _atomic_save(index_dir: Path, array: np.ndarray, empty: np.ndarray, meta: dict[str, Any]) -> None:
    """Unique temp names (a crashed or concurrent writer never collides), removed on any failure.

    The caller holds the index's writer lock (`index build --latents`)."""
    from index.store import atomic_path

    with atomic_path(index_dir / ARRAY) as tmp_array, atomic_path(index_dir / EMPTY) as tmp_empty, \
            atomic_path(index_dir / META) as tmp_meta:
        for tmp, values in ((tmp_array, array), (tmp_empty, empty)):
            with open(tmp, "wb") as handle:
                np.save(handle, values)
        tmp_meta.write_text(json.dumps(meta))


def seed_from_store(scorer: Any, index_dir: str | Path, paths: Sequence[str | Path]) -> int:
    """Put the stored latents of `paths` (and their empty-prompt errors, when stored for the scorer's seed)
    into the scorer's caches; returns how many were found."""
    from discff_cli.engine.preprocess import image_key

    index_dir = Path(index_dir)
    meta = _read_meta(index_dir)
    if not _compatible(meta, scorer):
        return 0
    row_of = {k: i for i, k in enumerate(meta["keys"])}
    array = _load_array(index_dir, len(meta["keys"]))
    if array is None:
        return 0
    found = {}
    for path in paths:
        key = image_key(path)
        if key in row_of:
            found[key] = np.asarray(array[row_of[key]], dtype=np.float32)
    scorer.seed_latents(found)
    _seed_empty(scorer, index_dir, meta, found, row_of)
    return len(found)


def _seed_empty(scorer: Any, index_dir: Path, meta: dict[str, Any], latents: dict[str, np.ndarray],
                row_of: dict[str, int]) -> None:
    """The stored e(x, ∅) of the found latents, keyed as the scorer keys them (by the float32 latent)."""
    import torch

    info = meta.get("empty") or {}
    if not latents or info.get("seed") != scorer.config.seed or not (index_dir / EMPTY).is_file():
        return
    values = _load_empty(index_dir, len(meta["keys"]))
    if values is None or not isinstance(info.get("conditions"), list) or values.shape[1] != len(info["conditions"]):
        return  # a damaged empty.npy: the scorer computes e(x, ∅) itself
    conditions = [(int(t), float(s)) for t, s in info["conditions"]]
    for key, latent in latents.items():
        scorer.seed_empty_errors(torch.from_numpy(latent), conditions, np.asarray(values[row_of[key]]).tolist())
