"""Discffusion scoring: image latents + text embeddings -> one matching score per pair.

The pipeline of docs/architecture.md "The scores": deterministic VAE latents encoded once,
a seeded ε per timestep shared by every candidate, noisy latents over a DDIM grid × relative
noise levels, cross-attention logits LSE-pooled inside the processor, averaged over heads,
layers and conditions. Every pair is scored independently, so a pair's score does not depend
on what else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from discff_cli.engine.batching import auto_batch_size
from discff_cli.engine.condition_weights import WeightedReadings, weights_for
from discff_cli.engine.config import EngineConfig
from discff_cli.engine.families import family_for
from discff_cli.engine.layers import select_layers
from discff_cli.engine.processor import ScoreSink
from discff_cli.engine.scores import Readings, needs
from discff_cli.engine.models import SDParts, load_sd

ImageInput = Any  # str | Path | PIL.Image.Image
Progress = Callable[[int, int], None]  # progress(done, total) of the U-Net items; the caller draws it (render/progress.py)


def _no_progress(done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class Condition:
    """One (timestep, relative noise level) point of the grid."""

    step_index: int
    timestep: int
    level: float


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        from discff_cli.errors import DiscffError

        raise DiscffError("--device cuda was asked for but no CUDA device is available; use --device cpu.")
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU; bf16 on GPUs that have it, else fp16."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Scorer:
    """Scores image-text pairs with a frozen Stable Diffusion; caches latents and text embeddings."""

    def __init__(self, parts: SDParts, config: EngineConfig, device: torch.device | None = None) -> None:
        self.parts = parts
        self.config = config
        self.device = device or next(parts.unet.parameters()).device
        self.dtype = next(parts.unet.parameters()).dtype
        self.sink = ScoreSink()
        self.family = family_for(parts)  # engine/families: SD 1/2, SDXL or SD3
        self.layer_names = self.family.attention_layers()
        self.selected = select_layers(self.layer_names, config.layers)
        self.processors = self._install_processors()
        self.head_weights: dict[str, torch.Tensor] = {}  # layer -> [heads]; uniform when absent (tuning sets them)
        self.condition_weights: dict[tuple[int, float], float] = {}  # (t, s) -> weight; uniform when empty
        self.conditions = self._conditions()
        self._latents: dict[str, torch.Tensor] = {}
        self._texts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._empty: dict[tuple[bytes, int, float], float] = {}  # (latent key, t, s) -> e(x, ∅)
        self._empty_attention: dict[tuple[bytes, int, float], float] = {}  # (latent key, t, s) -> A(x, ∅)
        self._empty_state: torch.Tensor | None = None
        self.weights_version = 0  # bumped by `invalidate` when deltas change the weights
        self.unet_passes = 0      # every U-Net item run, empty-prompt passes included
        self.empty_passes = 0     # of which under the empty prompt

    # ----- set-up -------------------------------------------------------------------------

    def _install_processors(self) -> dict[str, torch.nn.Module]:
        modules = dict(self.parts.unet.named_modules())
        processors = {}
        for name in self.layer_names:
            proc = self.family.make_processor(name, self.sink, self.config.lse_lambda, name in self.selected)
            modules[name].set_processor(proc)
            processors[name] = proc
        return processors

    def _ensure_installed(self) -> None:
        """Re-attach our processors if another Scorer on the same U-Net replaced them."""
        for name, proc in self.processors.items():
            module = self.parts.unet.get_submodule(name)
            if module.processor is not proc:
                module.set_processor(proc)

    def _conditions(self) -> list[Condition]:
        if self.config.timesteps:
            timesteps = list(self.config.timesteps)
        else:
            timesteps = self.family.timesteps(self.config.steps)
        return [Condition(i, t, s) for i, t in enumerate(timesteps) for s in self.config.levels]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = int(self.parts.unet.config.sample_size)
        return (int(self.parts.unet.config.in_channels), size, size)

    def noise_for(self, timestep: int) -> torch.Tensor:
        """ε_t: seeded by (seed, t) alone, so every candidate and every grid containing t share it."""
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(timestep))
        return torch.randn(self.latent_shape, generator=generator)

    # ----- encoders (cached) --------------------------------------------------------------

    def encode_images(self, images: Sequence[ImageInput], keys: Sequence[str] | None = None) -> torch.Tensor:
        """z = (E(x).latent_dist.mean − shift_factor) × scaling_factor, one VAE pass per distinct image
        (shift_factor is 0 except for SD3's VAE, whose config sets it, as its pipeline subtracts it).

        `keys` are the images' content keys when the caller already has them (no second hash);
        an image that cannot be decoded raises index.imageio.ImageDecodeError."""
        latents, bad = self.encode_readable(images, keys)
        if bad:
            raise next(iter(bad.values()))
        return latents

    def encode_readable(self, images: Sequence[ImageInput], keys: Sequence[str] | None = None
                        ) -> tuple[torch.Tensor, dict[int, Exception]]:
        """Latents of the images that decode ([readable, C, h, w], in input order) and, by input
        position, why the others did not: the decode the VAE needs anyway is the readability check."""
        from discff_cli.engine.preprocess import image_key, load_pixels
        from index.imageio import ImageDecodeError

        keys = list(keys) if keys is not None else [image_key(img) for img in images]
        bad: dict[int, Exception] = {}
        todo = {k: img for k, img in zip(keys, images) if k not in self._latents}
        pixels: dict[str, torch.Tensor] = {}
        for key, img in todo.items():
            try:
                pixels[key] = load_pixels(img, self.parts.resolution)
            except (ImageDecodeError, OSError) as exc:
                bad.update({i: exc for i, k in enumerate(keys) if k == key})
        self._encode_pixels(pixels)
        good = [k for i, k in enumerate(keys) if i not in bad]
        shape = (0, *self.latent_shape)
        return (torch.stack([self._latents[k] for k in good]) if good else torch.zeros(shape)), bad

    def _encode_pixels(self, pixels: dict[str, torch.Tensor]) -> None:
        items = list(pixels.items())
        for start in range(0, len(items), 8):
            chunk = items[start:start + 8]
            with torch.inference_mode():
                batch = torch.stack([p for _, p in chunk]).to(self.device, self.dtype)
                dist = self.parts.vae.encode(batch).latent_dist
                shift = getattr(self.parts.vae.config, "shift_factor", None) or 0.0
                latents = (dist.mean - shift) * self.parts.vae.config.scaling_factor
            for (key, _), z in zip(chunk, latents):
                self._latents[key] = z.float().cpu()

    def seed_latents(self, latents: dict[str, "np.ndarray"]) -> None:
        """Fill the latent cache from a persistent store (keys from preprocess.image_key)."""
        for key, z in latents.items():
            self._latents[key] = torch.from_numpy(np.asarray(z, dtype=np.float32))

    def encode_texts(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text encoder hidden states [N, m, d] and the token mask [N, m] (True = real token)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if todo:
            with torch.inference_mode():
                hidden, masks = self.family.encode(todo, self.device)
            for text, h, mask in zip(todo, hidden, masks):
                self._texts[text] = (h.float().cpu(), mask)
        return (torch.stack([self._texts[t][0] for t in texts]), torch.stack([self._texts[t][1] for t in texts]))

    # ----- scoring ------------------------------------------------------------------------

    def rank(self, images: Sequence[ImageInput], texts: Sequence[str], families: Sequence[str] | None = None,
             prune: bool | None = None, keys: Sequence[str] | None = None, progress: Progress | None = None):
        """Score pair i = (images[i], texts[i]) with each family: the one pair-level entry point.

        Every command and the Python API come here (engine/rank.py): the full grid, or successive
        halving among the pairs as one query's candidates when `prune` (default `config.prune`).
        Returns a `Ranking`: mean scores per family, the pairs that could not be decoded, and the
        U-Net passes actually spent."""
        from discff_cli.engine.rank import rank_pairs

        return rank_pairs(self, images, texts, tuple(families or (self.config.score,)),
                          self.config.prune if prune is None else prune, keys, progress)

    def score_latents(self, latents: torch.Tensor, text_states: torch.Tensor, token_mask: torch.Tensor | None = None,
                      conditions: Sequence[Condition] | None = None, progress: Progress | None = None) -> torch.Tensor:
        """Mean over conditions of the per-condition score: [N] (differentiable when grad is on)."""
        per_condition = self.score_conditions(latents, text_states, token_mask, conditions, progress)
        return per_condition.mean(dim=1)

    def score_conditions(self, latents: torch.Tensor, text_states: torch.Tensor, token_mask: torch.Tensor | None = None,
                         conditions: Sequence[Condition] | None = None, progress: Progress | None = None,
                         family: str | None = None) -> torch.Tensor:
        """`family` (default `config.score`) of every pair under every condition: [N, len(conditions)], float32."""
        family = family or self.config.score
        readings = self.read_conditions(latents, text_states, token_mask, conditions, (family,), progress)
        return readings.score(family)

    def read_conditions(self, latents: torch.Tensor, text_states: torch.Tensor, token_mask: torch.Tensor | None = None,
                        conditions: Sequence[Condition] | None = None, families: Sequence[str] = ("attention",),
                        progress: Progress | None = None) -> Readings:
        """Every reading the score `families` need for every pair under every condition, from one set of passes."""
        conditions = list(conditions or self.conditions)
        n_pairs, n_cond = latents.shape[0], len(conditions)
        items = [(p, c) for p in range(n_pairs) for c in conditions]
        flat = self.read_items(items, latents, text_states, token_mask, families, progress)
        return WeightedReadings(error=flat.error.view(n_pairs, n_cond), elements=flat.elements,
                        weights=weights_for(self.condition_weights, conditions),
                        **{name: None if value is None else value.view(n_pairs, n_cond)
                           for name, value in (("attention", flat.attention), ("empty_error", flat.empty_error),
                                               ("empty_attention", flat.empty_attention))})

    def read_items(self, items: Sequence[tuple[int, Condition]], latents: torch.Tensor, text_states: torch.Tensor,
                   token_mask: torch.Tensor | None, families: Sequence[str], progress: Progress | None = None) -> Readings:
        """Readings of arbitrary (pair index, condition) items, each [len(items), 1]: what pruning asks for."""
        self._ensure_installed()
        want = needs(list(families))
        if want.attention and not self.layer_names:
            from discff_cli.errors import DiscffError

            raise DiscffError(f"'{self.parts.name}' has no text-image attention layers, so it has no attention term "
                              f"and cannot give the {', '.join(families)} score(s); use --score denoise.")
        items = list(items)
        noise = {c.timestep: self.noise_for(c.timestep) for _, c in items}
        attention, error = [], []
        done, report = 0, progress or _no_progress
        report(done, len(items))
        self.sink.active = want.attention
        try:
            for chunk in self._chunks(items):
                pooled, err = self._score_items(chunk, latents, text_states, token_mask, noise)
                attention.append(pooled)
                error.append(err)
                done += len(chunk)
                report(done, len(items))
        finally:
            self.sink.active = True
        empty = self.empty_readings(latents, items, want.empty_attention) if want.empty else (None, None)
        column = (len(items), 1)
        weights = weights_for(self.condition_weights, [c for _, c in items])
        return WeightedReadings(error=torch.cat(error).view(column) if error else torch.zeros(column),
                        weights=None if weights is None else weights.view(column),
                        attention=torch.cat(attention).view(column) if want.attention and attention else
                        (torch.zeros(column) if want.attention else None),
                        empty_error=None if empty[0] is None else empty[0].view(column),
                        empty_attention=None if empty[1] is None else empty[1].view(column),
                        elements=int(np.prod(self.latent_shape)))

    def _chunks(self, items: list) -> list[list]:
        """Equal chunks of at most the batch size (no small tail)."""
        batch = self.config.batch_size or auto_batch_size(self.parts.unet, self.latent_shape, self.device, self.dtype)
        batch = -(-len(items) // -(-len(items) // batch)) if items else batch
        return [items[start:start + batch] for start in range(0, len(items), batch)]

    def _noisy(self, latents: torch.Tensor, conds: list[Condition],
               noise: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The family's x_t for each (latent, condition) from s·ε_t, the prediction's target, and t.

        SD 1/2 and SDXL: z_t = √ᾱ_t·z + √(1−ᾱ_t)·(s·ε_t); SD3: (1 − σ)·z + σ·(s·ε_t) (engine/families)."""
        timesteps = torch.tensor([c.timestep for c in conds])
        eps = torch.stack([noise[c.timestep] * c.level for c in conds])
        noisy, target = self.family.noisy(latents, timesteps, eps)
        return noisy, target, timesteps

    def _unet_error(self, noisy: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
                    context: torch.Tensor) -> torch.Tensor:
        """One batched denoiser call; ‖prediction − target‖² per item (the processors fill the sink).

        The target is the family's training target: s·ε_t (ε-prediction), the v of v-prediction, or
        SD3's flow velocity s·ε_t − z."""
        out = self.family.predict(noisy.to(self.device, self.dtype), timesteps.to(self.device),
                                  context.to(self.device, self.dtype))
        self.unet_passes += noisy.shape[0]
        return (out.float() - target.to(out.device)).pow(2).flatten(1).sum(dim=1).cpu()

    def _score_items(self, chunk: list[tuple[int, Condition]], latents: torch.Tensor, text_states: torch.Tensor,
                     token_mask: torch.Tensor | None,
                     noise: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pair_idx = torch.tensor([p for p, _ in chunk])
        noisy, eps, timesteps = self._noisy(latents[pair_idx], [c for _, c in chunk], noise)
        self.sink.clear()
        self.sink.token_mask = None if token_mask is None or not self.config.mask_padding \
            else token_mask[pair_idx].to(self.device)
        error = self._unet_error(noisy, eps, timesteps, text_states[pair_idx])
        pooled = self._aggregate().float().cpu() if self.sink.active else torch.zeros(len(chunk))
        return pooled, error

    # ----- the empty-prompt pass (one per image and condition, cached) ----------------------

    def empty_errors(self, latents: torch.Tensor, conditions: Sequence[Condition]) -> torch.Tensor:
        """e(x, ∅) of every latent under every condition [N, C] (see `empty_readings`)."""
        items = [(p, c) for p in range(latents.shape[0]) for c in conditions]
        return self.empty_readings(latents, items, attention=False)[0].view(latents.shape[0], len(conditions))

    def empty_readings(self, latents: torch.Tensor, items: Sequence[tuple[int, Condition]],
                       attention: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """e(x, ∅) and, when `attention`, A(x, ∅) of each (latent row, condition) item: [len(items)] each.

        Computed once per (image, condition): keyed by the latent's bytes, so every path to a latent
        (file, PIL image, index store, tuning cache) shares one entry. A(x, ∅) is read on the same
        empty-prompt pass (the authors' [∅; y] batch has it); an entry cached without it is run again
        the first time a score needs it. Never differentiable: a per-image baseline. Dropped whenever
        the weights change (deltas applied or removed, `invalidate`).
        """
        keys = {p: latent_key(latents[p]) for p in dict.fromkeys(p for p, _ in items)}
        wanted = [(keys[p], c.timestep, c.level) for p, c in items]
        todo = list(dict.fromkeys(k for k in wanted
                                  if k not in self._empty or (attention and k not in self._empty_attention)))
        if todo:
            first = {key: p for p, key in reversed(list(keys.items()))}
            self._compute_empty(todo, latents, first, attention)
        errors = torch.tensor([self._empty[k] for k in wanted], dtype=torch.float32)
        pooled = torch.tensor([self._empty_attention[k] for k in wanted], dtype=torch.float32) if attention else None
        return errors, pooled

    def _compute_empty(self, todo: list[tuple[bytes, int, float]], latents: torch.Tensor,
                       row_of: dict[bytes, int], attention: bool) -> None:
        noise = {t: self.noise_for(t) for _, t, _ in todo}
        empty_state = self.empty_state()
        empty_mask = self.encode_texts([""])[1]
        was_active = self.sink.active
        self.sink.active = attention  # the empty prompt's attention term only when a score reads it
        try:
            with torch.no_grad():
                for chunk in self._chunks(todo):
                    rows = torch.tensor([row_of[key] for key, _, _ in chunk])
                    conds = [Condition(0, t, s) for _, t, s in chunk]
                    noisy, eps, timesteps = self._noisy(latents[rows].detach(), conds, noise)
                    self.sink.clear()
                    self.sink.token_mask = empty_mask.expand(len(chunk), -1).to(self.device) \
                        if self.config.mask_padding else None
                    error = self._unet_error(noisy, eps, timesteps, empty_state.expand(len(chunk), -1, -1))
                    self.empty_passes += len(chunk)
                    pooled = self._aggregate().float().cpu().tolist() if attention else [None] * len(chunk)
                    for key, value, a in zip(chunk, error.tolist(), pooled):
                        self._empty[key] = value
                        if a is not None:
                            self._empty_attention[key] = a
        finally:
            self.sink.active = was_active

    def empty_state(self) -> torch.Tensor:
        """The family's unconditional text state [1, rows, width] (SDXL: zeros), encoded once."""
        if self._empty_state is None:
            with torch.inference_mode():
                self._empty_state = self.family.encode_empty(self.device)[0].float().cpu()
        return self._empty_state

    def seed_empty_errors(self, latent: torch.Tensor, conditions: Sequence[tuple[int, float]],
                          values: Sequence[float], attention: Sequence[float] | None = None) -> None:
        """Fill the empty-prompt cache from a persistent store (engine/latent_store.py)."""
        if self.weights_version:
            return  # the store was made with the base weights; deltas change e(x, ∅)
        key = latent_key(latent)
        for j, ((timestep, level), value) in enumerate(zip(conditions, values)):
            self._empty[(key, int(timestep), float(level))] = float(value)
            if attention is not None:
                self._empty_attention[(key, int(timestep), float(level))] = float(attention[j])

    def invalidate(self) -> None:
        """The weights changed (deltas): cached empty-prompt errors no longer hold."""
        self._empty.clear()
        self._empty_attention.clear()
        self.weights_version += 1

    def _aggregate(self) -> torch.Tensor:
        """Head-weighted mean per layer, then mean over the selected layers: [batch]."""
        per_layer = []
        for name in self.selected:
            pooled = self.sink.pooled[name]  # [batch, heads]
            weights = self.head_weights.get(name)
            if weights is None:
                per_layer.append(pooled.mean(dim=1))
            else:
                w = weights.to(pooled.device, pooled.dtype)
                per_layer.append((pooled * w).sum(dim=1) / w.sum())
        return torch.stack(per_layer, dim=1).mean(dim=1)


def latent_key(latent: torch.Tensor) -> bytes:
    """A digest of a latent's float32 bytes: the empty-prompt cache's key."""
    import hashlib

    data = latent.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).digest()


def load_scorer(model: str, config: EngineConfig, deltas: str | Path | None = None) -> Scorer:
    """Load the model named by --model onto --device and wrap it in a Scorer (with --deltas applied)."""
    device = resolve_device(config.device)
    parts = load_sd(model, device=str(device), dtype=default_dtype(device))
    scorer = Scorer(parts, config, device)
    if deltas:
        from discff_cli.engine.deltas import apply_deltas_file

        apply_deltas_file(scorer, deltas)
    return scorer

