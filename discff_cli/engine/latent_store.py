"""Persistent VAE latents in the index directory, so `search --rerank` skips the VAE.

`latents.npy` (float16 [N, C, h, w], memory-mapped: a rerank reads only its candidates' rows),
`empty.npy` (float32 [N, conditions]: each image's empty-prompt noise-prediction error e(x, ∅) on
the build's grid and seed, computed from the stored float16 latent so it is exactly what a
search would compute), `empty_attention.npy` (float32 [N, conditions]: the attention term A(x, ∅)
read on the same empty-prompt pass, which `discffusion` needs, for the build's layers, λ and
padding mask) and `latents.json` (the content keys, row by row, the model fingerprint and
resolution, and the grid, seed and attention settings of the empty-prompt readings). Keys are the
content hashes the index records (index.scan.content_hash), so a renamed file still hits and a
changed file misses. Written to temp files and renamed, like the index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ARRAY, META, EMPTY, EMPTY_ATTENTION = "latents.npy", "latents.json", "empty.npy", "empty_attention.npy"


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
    path_keys = [image_key(p) for p in paths]  # one hash per file
    keys = list(dict.fromkeys(path_keys))
    key_of: dict[str, str | Path] = {}
    for key, path in zip(path_keys, paths):
        key_of.setdefault(key, path)
    meta = _read_meta(index_dir)
    old_rows = {k: i for i, k in enumerate(meta["keys"])} if _compatible(meta, scorer) else {}
    old = _load_array(index_dir, len(meta["keys"])) if old_rows else None
    todo = [k for k in keys if k not in old_rows]
    fresh: dict[str, np.ndarray] = {}
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        latents = scorer.encode_images([key_of[k] for k in chunk], keys=chunk)
        fresh.update({k: z.numpy().astype(np.float16) for k, z in zip(chunk, latents)})
        advance(len(chunk))
    rows = [old[old_rows[k]] if k in old_rows else fresh[k] for k in keys]
    shape = (len(keys), *scorer.latent_shape)
    array = np.stack(rows) if rows else np.zeros(shape, np.float16)
    info = empty_info(scorer)
    empty, attention = _empty_readings(index_dir, scorer, array, keys, meta, info)
    _atomic_save(index_dir, array, empty, attention,
                 {"keys": keys, "fingerprint": scorer.parts.fingerprint, "model": scorer.parts.name,
                  "resolution": scorer.parts.resolution, "empty": info})
    return {"encoded": len(todo), "reused": len(keys) - len(todo), "dropped": len(set(old_rows) - set(keys))}


def empty_info(scorer: Any) -> dict[str, Any]:
    """What the stored empty-prompt readings depend on: grid, seed, and the attention term's settings."""
    config = scorer.config
    return {"conditions": [[c.timestep, c.level] for c in scorer.conditions], "seed": config.seed,
            "attention": {"layers": config.layers, "lse_lambda": config.lse_lambda,
                          "mask_padding": config.mask_padding}}


def _empty_readings(index_dir: Path, scorer: Any, array: np.ndarray, keys: list[str], meta: dict[str, Any] | None,
                    info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """e(x, ∅) and A(x, ∅) per stored latent on the scorer's grid: reused where the last build made
    them with the same settings, else one empty-prompt pass per image and condition."""
    import torch

    old = _stored_empty(index_dir, meta, scorer, info)
    shape = (len(keys), len(info["conditions"]))
    errors, attention = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    todo = [i for i, k in enumerate(keys) if k not in old]
    for i, k in enumerate(keys):
        if k in old:
            errors[i], attention[i] = old[k]
    conditions = scorer.conditions
    for start in range(0, len(todo), 64):
        rows = todo[start:start + 64]
        latents = torch.from_numpy(np.asarray(array[rows], dtype=np.float32))
        items = [(p, c) for p in range(len(rows)) for c in conditions]
        with torch.inference_mode():
            e, a = scorer.empty_readings(latents, items, attention=True)
        errors[rows], attention[rows] = e.view(len(rows), -1).numpy(), a.view(len(rows), -1).numpy()
    return errors, attention


def _stored_empty(index_dir: Path, meta: dict[str, Any] | None, scorer: Any,
                  info: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> stored (e(x, ∅), A(x, ∅)), when the store has both for this model and these settings."""
    if not _compatible(meta, scorer) or meta.get("empty") != info:
        return {}
    rows = len(meta["keys"])
    errors, attention = _load_empty(index_dir, rows), _load_rows(index_dir, EMPTY_ATTENTION, 2, rows)
    if errors is None or attention is None:
        return {}
    return {k: (np.asarray(errors[i]), np.asarray(attention[i])) for i, k in enumerate(meta["keys"])}


def _load_empty(index_dir: Path, rows: int) -> np.ndarray | None:
    """empty.npy: [rows, conditions]."""
    return _load_rows(index_dir, EMPTY, 2, rows)


def _atomic_save(index_dir: Path, array: np.ndarray, empty: np.ndarray, attention: np.ndarray,
                 meta: dict[str, Any]) -> None:
    """Unique temp names (a crashed or concurrent writer never collides), removed on any failure.

    The caller holds the index's writer lock (`index build --latents`)."""
    from index.store import atomic_path

    with atomic_path(index_dir / ARRAY) as tmp_array, atomic_path(index_dir / EMPTY) as tmp_empty, \
            atomic_path(index_dir / EMPTY_ATTENTION) as tmp_attention, atomic_path(index_dir / META) as tmp_meta:
        for tmp, values in ((tmp_array, array), (tmp_empty, empty), (tmp_attention, attention)):
            with open(tmp, "wb") as handle:
                np.save(handle, values)
        tmp_meta.write_text(json.dumps(meta))


def seed_from_store(scorer: Any, index_dir: str | Path, paths: Sequence[str | Path],
                    keys: Sequence[str] | None = None) -> int:
    """Put the stored latents of `paths` (and their empty-prompt readings, when stored for the scorer's
    settings) into the scorer's caches; returns how many were found. `keys`: the files' content keys
    when the caller has them already (one hash per file)."""
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
    for key in (keys if keys is not None else [image_key(p) for p in paths]):
        if key in row_of:
            found[key] = np.asarray(array[row_of[key]], dtype=np.float32)
    scorer.seed_latents(found)
    _seed_empty(scorer, index_dir, meta, found, row_of)
    return len(found)


def _seed_empty(scorer: Any, index_dir: Path, meta: dict[str, Any], latents: dict[str, np.ndarray],
                row_of: dict[str, int]) -> None:
    """The stored e(x, ∅) (and A(x, ∅), when made with the scorer's attention settings) of the found
    latents, keyed as the scorer keys them (by the float32 latent)."""
    import torch

    info = meta.get("empty") or {}
    if not latents or info.get("seed") != scorer.config.seed or not (index_dir / EMPTY).is_file():
        return
    rows = len(meta["keys"])
    values = _load_empty(index_dir, rows)
    if values is None or not isinstance(info.get("conditions"), list) or values.shape[1] != len(info["conditions"]):
        return  # a damaged empty.npy: the scorer computes e(x, ∅) itself
    attention = _load_rows(index_dir, EMPTY_ATTENTION, 2, rows) \
        if info.get("attention") == empty_info(scorer)["attention"] else None
    if attention is not None and attention.shape[1] != values.shape[1]:
        attention = None
    conditions = [(int(t), float(s)) for t, s in info["conditions"]]
    for key, latent in latents.items():
        row = row_of[key]
        scorer.seed_empty_errors(torch.from_numpy(latent), conditions, np.asarray(values[row]).tolist(),
                                 None if attention is None else np.asarray(attention[row]).tolist())
