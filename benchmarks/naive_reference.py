"""Discffusion scored the way the paper's reference implementation does it: the benchmark's baseline.

What makes the reference slow, reproduced on purpose (and nothing else, so its scores equal ours):
- one (image, text) pair per call, one U-Net call per (timestep, noise level);
- the image is re-encoded by the VAE at every (timestep, noise level);
- an attention-store processor on *every* attention layer: self-attention and cross-attention
  are computed explicitly (QKᵀ, softmax) and every logits tensor and softmaxed map is kept for
  the whole forward (4096×4096 per head for self-attention at 64×64 latents);
- the U-Net runs on the batch [empty prompt; caption] at every (timestep, noise level), as the
  authors' pipeline does (pipeline_dsd.py), so the empty prompt is paid again for every pair.
Both halves feed the score, as in the authors' code: their `ascore` is the LogSumExp mean over the
whole [∅; y] batch (unet_2d_condition.py around L880–894), so at one caption it is ½(A(x, y) +
A(x, ∅)), read here from the two halves of the stored cross-attention logits; the denoising errors
come from the two halves of the output. One pair per call, so their batch-mean never mixes
captions. The families are the engine's (discff_cli/engine/scores.py), so the scores must equal it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


class AttentionStore:
    """Every attention map of one forward, as prompt-to-prompt style controllers keep them."""

    def __init__(self) -> None:
        self.logits: dict[str, torch.Tensor] = {}
        self.maps: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.logits.clear()
        self.maps.clear()


class StoreAllAttnProcessor:
    """Explicit attention (no SDPA) that stores logits and softmaxed maps of its layer."""

    def __init__(self, name: str, store: AttentionStore) -> None:
        self.name = name
        self.store = store

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        logits = torch.matmul(query, key.transpose(-1, -2)) * attn.scale
        probs = logits.softmax(dim=-1)
        self.store.logits[self.name] = logits
        self.store.maps[self.name] = probs
        out = torch.matmul(probs, value)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def lse_score(logits: torch.Tensor, lse_lambda: float) -> torch.Tensor:
    """Eq. 4 on one item's full map [heads, n, m] -> [heads]."""
    return (torch.logsumexp(logits.float() * lse_lambda, dim=-1) / lse_lambda).mean(dim=-1)


class NaiveReference:
    """Scores pairs one at a time, reference-style, on the same SD parts and grid as a Scorer."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer  # borrowed for its grid, seeded noise, layer choice and preprocessing only
        self.parts = scorer.parts
        self.store = AttentionStore()
        self.unet_passes = 0

    def _install(self) -> dict[str, Any]:
        unet = self.parts.unet
        saved = dict(unet.attn_processors)
        unet.set_attn_processor({key: StoreAllAttnProcessor(key.rsplit(".processor", 1)[0], self.store)
                                 for key in saved})
        return saved

    def _text(self, text: str) -> torch.Tensor:
        tokenizer = self.parts.tokenizer
        ids = tokenizer(["", text], padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids
        return self.parts.text_encoder(ids.to(self.scorer.device))[0]

    def _latent(self, image: Any) -> torch.Tensor:
        from discff_cli.engine.preprocess import load_pixels

        pixels = load_pixels(image, self.parts.resolution)[None].to(self.scorer.device, self.scorer.dtype)
        return self.parts.vae.encode(pixels).latent_dist.mean * self.parts.vae.config.scaling_factor

    def score_pair(self, image: Any, text: str) -> float:
        from discff_cli.engine.scores import Readings

        scorer, unet = self.scorer, self.parts.unet
        context = self._text(text)                           # [uncond, cond]
        alphas = self.parts.scheduler.alphas_cumprod
        attention, error, empty, empty_attention = [], [], [], []
        for cond in scorer.conditions:
            z = self._latent(image).float().cpu()[0]         # VAE again, at every (t, s)
            a, b = alphas[cond.timestep].float().sqrt(), (1 - alphas[cond.timestep].float()).sqrt()
            eps = scorer.noise_for(cond.timestep) * cond.level
            noisy = (a * z + b * eps)[None]
            sample = torch.cat([noisy, noisy]).to(scorer.device, scorer.dtype)
            t = torch.tensor([cond.timestep] * 2, device=scorer.device)
            self.store.reset()
            out = unet(sample, t, encoder_hidden_states=context).sample.float().cpu()
            self.unet_passes += 2
            halves = [[lse_score(self.store.logits[name][half], scorer.config.lse_lambda).mean()
                       for name in scorer.selected] for half in (0, 1)]  # [∅; y]
            empty_attention.append(float(torch.stack(halves[0]).mean()))
            attention.append(float(torch.stack(halves[1]).mean()))
            empty.append(float(((out[0] - eps) ** 2).sum()))
            error.append(float(((out[1] - eps) ** 2).sum()))
        self.store.reset()
        readings = Readings(error=torch.tensor([error]), attention=torch.tensor([attention]),
                            empty_error=torch.tensor([empty]), elements=int(np.prod(scorer.latent_shape)),
                            empty_attention=torch.tensor([empty_attention]))
        return float(readings.score(scorer.config.score).mean())

    def score_pairs(self, images: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
        saved = self._install()
        try:
            with torch.no_grad():
                return np.array([self.score_pair(img, txt) for img, txt in zip(images, texts)])
        finally:
            self.parts.unet.set_attn_processor(saved)
