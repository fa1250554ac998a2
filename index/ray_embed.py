"""`index build --ray`: decode and embed the files the scan chose on Ray Data, not in this process.

Why Ray and not a home-made scheduler: Ray Data runs the same code on a laptop (a local Ray
instance) and on a cluster, loads CLIP once per actor (`map_batches` over a callable class,
one GPU per actor when the cluster has GPUs) and streams finished blocks back. The builder stays
the only writer: every block that comes back is recorded, chunked into `pending/` (so an
interrupted build resumes without embedding it again) and published exactly as a local build's
batches, so the index is the same whichever way it was embedded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from index.ray_cluster import ray_session
from index.scan import FileEntry


def decode_batch(batch: dict[str, np.ndarray], root: str, preprocess, max_pixels: int,
                 dct: bool = True, columns: tuple = (None, None)) -> dict[str, np.ndarray]:
    """Ray task (one CPU): decode and preprocess one group of images -- members of one shard, or loose
    files -- exactly as a local build's DataLoader workers do (index/dataset.py); a bad image becomes
    its error, with zero pixels and ok=False."""
    from index.dataset import DecodeDataset
    from index.parquet import remember_columns

    remember_columns(root, *columns)  # parquet columns the build named (this task runs in another process)
    rows = [row for group in batch["group"] for row in json.loads(str(group))]
    entries = [FileEntry(r["rel"], r["size"], r["mtime_ns"], r["shard"], r["offset"],
                         tuple(tuple(s) for s in r["sidecars"]), r["shard_size"]) for r in rows]
    dataset = DecodeDataset(Path(root), entries, preprocess, max_pixels, {r["rel"]: r["hash"] for r in rows}, dct)
    items = [dataset[j] for j in range(len(rows))]
    shape = next((tuple(it["pixels"].shape) for it in items if it["pixels"] is not None), (0,))
    pixels = np.zeros((len(items), *shape), np.float32)
    for j, it in enumerate(items):
        if it["pixels"] is not None:
            pixels[j] = it["pixels"].numpy()
    return {"i": np.array([r["i"] for r in rows], np.int64),
            "ok": np.array([it["pixels"] is not None for it in items], bool), "pixels": pixels,
            "hash": np.array([it["hash"] or "" for it in items], object),
            "width": np.array([-1 if it["width"] is None else it["width"] for it in items], np.int64),
            "height": np.array([-1 if it["height"] is None else it["height"] for it in items], np.int64),
            "error": np.array([it["error"] or "" for it in items], object),
            "caption": np.array([it["caption"] or "" for it in items], object),
            "json": np.array([it["json"] or "" for it in items], object),
            "decode_s": np.array([it["seconds"] for it in items], np.float64)}


def shard_groups(todo: Sequence[FileEntry], hashes: dict, size: int) -> list[dict[str, str]]:
    """The images to embed in groups of up to `size` that never span two shards: each decode task
    then reads one shard front to back (one file open, sequential reads), as a shard is meant to be read."""
    groups, current = [], []
    for i in range(len(todo)):
        entry = todo[i]
        if current and (len(current) == size or current[-1]["shard"] != entry.shard):
            groups.append({"group": json.dumps(current)})
            current = []
        current.append({"i": i, "rel": entry.rel, "size": entry.size, "mtime_ns": entry.mtime_ns,
                        "shard": entry.shard, "offset": entry.offset, "sidecars": entry.sidecars, "shard_size": entry.shard_size,
                        "hash": hashes.get(entry.rel)})
    if current:
        groups.append({"group": json.dumps(current)})
    return groups


class EmbedActor:
    """One Ray actor (one GPU when there are any): CLIP loaded once in __init__, then decoded batches
    -> embeddings. Decoding runs in separate CPU tasks, so it scales with the cluster's cores, not
    with its GPUs (decode, not the GPU, bounds a one-host build: docs/performance.md)."""

    def __init__(self, clip_source: str, device: str) -> None:
        import torch

        from index.clip_model import load_clip

        if device == "cpu":  # one thread per actor: torch's spinning threads would fight the decode tasks
            torch.set_num_threads(1)
        self.clip = load_clip(clip_source, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        ok = np.asarray(batch["ok"], bool)
        tick = time.perf_counter()
        emb = np.zeros((len(ok), self.clip.dim), np.float32)
        if ok.any():
            emb[ok] = self.clip.embed_pixels(torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])))
        seconds = time.perf_counter() - tick
        out = {k: v for k, v in batch.items() if k != "pixels"}
        return {**out, "emb": emb, "embed_s": np.full(len(ok), seconds / max(1, len(ok)), np.float64)}


class RayEmbedder:
    """The builder's `embedder` hook (BuildOptions.embedder) backed by Ray Data.

    `address`: "local" starts a Ray instance on this machine (and stops it afterwards), "auto"
    joins the cluster in RAY_ADDRESS, anything else is a cluster address (ray://host:10001 or
    host:6379). `workers` is the number of embedding actors (default: one per GPU, else one per
    two CPUs); decoding runs in one-CPU Ray tasks beside them.
    """

    def __init__(self, address: str, workers: int | None, clip_source: str, preprocess, device: str = "auto",
                 init_options: dict[str, Any] | None = None) -> None:
        self.address, self.workers, self.clip_source, self.device = address, workers, clip_source, device
        self.preprocess = preprocess  # the driver's CLIP preprocess, shipped to the decode tasks (no weights)
        self.init_options = init_options or {}

    def __call__(self, opts, todo: Sequence, hashes: dict) -> Iterator[tuple[np.ndarray, list[dict], float]]:
        # every core decodes, so a local Ray gets them all (index/ray_cluster.py's default)
        with ray_session(self.address, self.init_options) as ray:
            yield from self._run(ray, opts, todo, hashes)

    def _run(self, ray, opts, todo: Sequence, hashes: dict) -> Iterator[tuple[np.ndarray, list[dict], float]]:
        from ray.data import ActorPoolStrategy, DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False  # the build's own bar counts images
        context.execution_options.preserve_order = True  # the builder records batches in image order
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = self.workers or gpus or max(1, cpus // 2)  # on CPUs, half the cores embed, half decode
        device = self.device if self.device != "auto" else ("cuda" if gpus else "cpu")
        groups = shard_groups(todo, hashes, opts.batch_size)
        actors = min(actors, len(groups))  # an actor with no block to embed would only load CLIP
        ds = ray.data.from_items(groups, override_num_blocks=len(groups)).map_batches(
            decode_batch, batch_size=1, batch_format="numpy", num_cpus=1,
            fn_kwargs={"root": str(opts.root), "preprocess": self.preprocess,
                       "max_pixels": opts.max_pixels, "dct": opts.dct,
                       "columns": (opts.image_column, opts.caption_column)})
        ds = ds.map_batches(
            EmbedActor, batch_size=opts.batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus and device.startswith("cuda") else 0, num_cpus=0,  # the CPUs go to decoding
            fn_constructor_kwargs={"clip_source": self.clip_source, "device": device})
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield _unpack(batch)


def _unpack(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, list[dict], float]:
    """A finished Ray batch as the builder's (embeddings of the good files, meta per file, embed seconds)."""
    ok = np.asarray(batch["ok"], bool)
    meta = [{"i": int(batch["i"][j]), "ok": bool(ok[j]), "hash": str(batch["hash"][j]) or None,
             "width": None if batch["width"][j] < 0 else int(batch["width"][j]),
             "height": None if batch["height"][j] < 0 else int(batch["height"][j]),
             "error": str(batch["error"][j]) or None, "seconds": float(batch["decode_s"][j]),
             "caption": str(batch["caption"][j]) or None, "json": str(batch["json"][j]) or None}
            for j in range(len(ok))]
    emb = np.asarray(batch["emb"], np.float32)[ok]
    return emb, meta, float(np.sum(batch["embed_s"]))
