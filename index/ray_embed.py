"""`index build --ray`: decode and embed the files the scan chose on Ray Data, not in this process.

Why Ray and not a home-made scheduler: Ray Data runs the same code on a laptop (a local Ray
instance) and on a cluster, loads CLIP once per actor (`map_batches` over a callable class,
one GPU per actor when the cluster has GPUs) and streams finished blocks back. The builder stays
the only writer: every block that comes back is recorded, chunked into `pending/` (so an
interrupted build resumes without embedding it again) and published exactly as a local build's
batches, so the index is the same whichever way it was embedded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from index.ray_cluster import ray_session


def decode_batch(batch: dict[str, np.ndarray], root: str, preprocess, max_pixels: int) -> dict[str, np.ndarray]:
    """Ray task (one CPU): decode and preprocess a batch of files exactly as a local build's DataLoader
    workers do (index/dataset.py); a bad file becomes its error, with zero pixels and ok=False."""
    from index.dataset import DecodeDataset

    rels = [str(r) for r in batch["rel"]]
    dataset = DecodeDataset(Path(root), rels, preprocess, max_pixels, [str(h) or None for h in batch["hash"]])
    items = [dataset[j] for j in range(len(rels))]
    shape = next((tuple(it["pixels"].shape) for it in items if it["pixels"] is not None), (0,))
    pixels = np.zeros((len(items), *shape), np.float32)
    for j, it in enumerate(items):
        if it["pixels"] is not None:
            pixels[j] = it["pixels"].numpy()
    return {"i": batch["i"], "ok": np.array([it["pixels"] is not None for it in items], bool), "pixels": pixels,
            "hash": np.array([it["hash"] or "" for it in items], object),
            "width": np.array([-1 if it["width"] is None else it["width"] for it in items], np.int64),
            "height": np.array([-1 if it["height"] is None else it["height"] for it in items], np.int64),
            "error": np.array([it["error"] or "" for it in items], object),
            "decode_s": np.array([it["seconds"] for it in items], np.float64)}


class EmbedActor:
    """One Ray actor (one GPU when there are any): CLIP loaded once in __init__, then decoded batches
    -> embeddings. Decoding runs in separate CPU tasks, so it scales with the cluster's cores, not
    with its GPUs (decode, not the GPU, bounds a one-host build: README Performance)."""

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

    def __call__(self, opts, todo: list, hashes: dict) -> Iterator[tuple[np.ndarray, list[dict], float]]:
        # every core decodes, so a local Ray gets them all (index/ray_cluster.py's default)
        with ray_session(self.address, self.init_options) as ray:
            yield from self._run(ray, opts, todo, hashes)

    def _run(self, ray, opts, todo: list, hashes: dict) -> Iterator[tuple[np.ndarray, list[dict], float]]:
        from ray.data import ActorPoolStrategy, DataContext

        DataContext.get_current().enable_progress_bars = False  # the build's own bar counts images
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = self.workers or gpus or max(1, cpus // 2)  # on CPUs, half the cores embed, half decode
        device = self.device if self.device != "auto" else ("cuda" if gpus else "cpu")
        rows = [{"i": i, "rel": e.rel, "hash": hashes.get(e.rel) or ""} for i, e in enumerate(todo)]
        blocks = max(1, min(len(rows), -(-len(rows) // opts.batch_size)))
        actors = min(actors, blocks)  # an actor with no block to embed would only load CLIP
        ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            decode_batch, batch_size=opts.batch_size, batch_format="numpy", num_cpus=1,
            fn_kwargs={"root": str(opts.root), "preprocess": self.preprocess,
                       "max_pixels": opts.max_pixels})
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
             "error": str(batch["error"][j]) or None, "seconds": float(batch["decode_s"][j])}
            for j in range(len(ok))]
    emb = np.asarray(batch["emb"], np.float32)[ok]
    return emb, meta, float(np.sum(batch["embed_s"]))
