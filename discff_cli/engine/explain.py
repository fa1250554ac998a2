"""Where in the image a caption helps: per-position maps whose sum is the very score `score` prints.

One image, one caption, the scorer's own grid, seeded noise and layers. For every (timestep,
level) condition the U-Net runs twice, as the score does: under the caption y and under the
empty prompt ∅. Instead of summing the readings over the latent, they are kept per position:

- ``denoise``: (e_∅(p) − e_y(p)) / D, e(p) = Σ_channels (ε̂ − s·ε)² at latent position p and D the
  latent's elements (DiffusionITM's empty-prompt normalisation, per position). Summed over p and
  averaged over conditions it is the `denoise` score exactly.
- ``attention``: the Eq. 4 LogSumExp over tokens of each query position, mean over heads (or the
  tuned head weights), nearest-upsampled from each layer's resolution onto the latent grid (which
  keeps a layer's mean), mean over the selected layers, divided by the latent positions: it sums
  to the `attention` score.
- ``diffusion_itm``: the error gap per position. The gap ‖ε − ε̂_∅‖₂ − ‖ε − ε̂_y‖₂ =
  √e_∅ − √e_y = (e_∅ − e_y)/(√e_∅ + √e_y) is linear in the per-position differences, so
  (e_∅(p) − e_y(p))/(√e_∅ + √e_y) sums to it exactly.
- ``discffusion``: ½(attention map under y + attention map under ∅, read on the empty-prompt pass)
  plus the ``diffusion_itm`` map: the authors' score of one pair (engine/scores.py), spread the same way.

Per word (DAAM, Tang et al. 2023): the softmax attention each word's tokens receive at each
query position, mean over heads, bilinearly upsampled onto the latent grid, mean over layers
and conditions; SOS, EOS and padding are left out. The maps are read through the scorer's own
attention processors (their `logit_hook`, the extension point they offer), never by patching
diffusers.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

MAPPED = ("attention", "denoise", "diffusion_itm", "discffusion")  # families this module can spread over the image


@dataclass
class Word:
    """One word of the caption: its text, its token positions and its attention map [h, w]."""

    text: str
    tokens: list[int]
    map: np.ndarray


@dataclass
class Explanation:
    """Maps on the latent grid [h, w]; each family's map sums to that family's score."""

    caption: str
    maps: dict[str, np.ndarray]
    words: list[Word] = field(default_factory=list)
    conditions: int = 0

    def score(self, family: str) -> float:
        """The score the map explains: the sum of its map."""
        return float(self.maps[family].astype(np.float64).sum())

    @property
    def caption_attention(self) -> np.ndarray:
        """The attention the caption's words receive together (the sum of the word maps)."""
        if not self.words:
            return np.zeros_like(next(iter(self.maps.values())))
        return np.sum([w.map for w in self.words], axis=0)


def caption_words(tokenizer: Any, caption: str) -> list[tuple[str, list[int]]]:
    """(word, token positions) for the caption's words; position 0 is SOS, so words start at 1.

    CLIP's BPE marks the last token of a word with `</w>`; tokens beyond the 77-token limit are
    dropped, as the text encoder drops them."""
    ids = tokenizer(caption, truncation=True, max_length=tokenizer.model_max_length).input_ids
    pieces = tokenizer.convert_ids_to_tokens(ids[1:-1])  # without SOS and EOS
    words: list[tuple[str, list[int]]] = []
    current: list[int] = []
    for position, piece in enumerate(pieces, start=1):
        current.append(position)
        if piece.endswith("</w>") or position == len(pieces):
            text = tokenizer.convert_tokens_to_string([pieces[p - 1] for p in current]).replace("</w>", " ").strip()
            words.append((text, current))
            current = []
    return words


class AttentionCapture:
    """A logit hook for the scorer's selected cross-attention processors: accumulates the per-position
    LSE map and the per-token attention onto the latent grid, over layers and conditions."""

    def __init__(self, scorer: Any, token_positions: list[int], grid: tuple[int, int]) -> None:
        self.scorer = scorer
        self.tokens = torch.tensor(token_positions, dtype=torch.long)
        self.grid = grid
        self.lse = torch.zeros(grid, dtype=torch.float64)
        self.per_token = torch.zeros((len(token_positions), *grid), dtype=torch.float64)
        self.calls = 0  # layer x item readings accumulated

    def __call__(self, name: str, logits: torch.Tensor) -> torch.Tensor:
        config = self.scorer.config
        mask = self.scorer.sink.token_mask
        scaled = logits.float() * config.lse_lambda
        if mask is not None:
            scaled = scaled.masked_fill(~mask[:, None, None, :], float("-inf"))
        lse = torch.logsumexp(scaled, dim=-1) / config.lse_lambda  # [b, heads, n]
        self.lse += self._onto_grid(self._head_mean(name, lse), "nearest").sum(dim=0)
        if len(self.tokens):  # the empty prompt's capture reads only the LSE map
            probs = logits.float().softmax(dim=-1)[..., self.tokens.to(logits.device)].mean(dim=1)  # [b, n, k]
            self.per_token += self._onto_grid(probs.transpose(1, 2), "bilinear").sum(dim=0)
        self.calls += logits.shape[0]
        return logits

    def _head_mean(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """[b, heads, n] -> [b, n]: uniform mean, or the tuned head weights as the score uses them."""
        weights = self.scorer.head_weights.get(name)
        if weights is None:
            return values.mean(dim=1)
        w = weights.to(values.device, values.dtype)
        return (values * w[None, :, None]).sum(dim=1) / w.sum()

    def _onto_grid(self, values: torch.Tensor, mode: str) -> torch.Tensor:
        """[b, (k,) n] with n = h·w of the layer -> [b, (k,) H, W] on the latent grid, in float64."""
        side = math.isqrt(values.shape[-1])
        squeeze = values.dim() == 2
        maps = values.reshape(values.shape[0], -1, side, side)
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        up = F.interpolate(maps.float(), size=self.grid, mode=mode, **kwargs).double().cpu()
        return up[:, 0] if squeeze else up


@contextmanager
def hooked(scorer: Any, capture: AttentionCapture) -> Iterator[None]:
    """Install `capture` as the logit hook of every selected processor; restore the previous hooks."""
    procs = [scorer.processors[name] for name in scorer.selected]
    before = [p.logit_hook for p in procs]
    for proc in procs:
        proc.logit_hook = capture
    try:
        yield
    finally:
        for proc, hook in zip(procs, before):
            proc.logit_hook = hook


def explain_pair(scorer: Any, image: Any, caption: str) -> Explanation:
    """Every family's map (and the word maps) for one (image, caption) under the scorer's config."""
    scorer._ensure_installed()
    latent = scorer.encode_images([image])[0]
    text, token_mask = scorer.encode_texts([caption])
    empty, empty_mask = scorer.empty_state(), scorer.encode_texts([""])[1]
    words = caption_words(scorer.parts.tokenizer, caption)
    grid = tuple(latent.shape[-2:])
    capture = AttentionCapture(scorer, [p for _, tokens in words for p in tokens], grid)
    empty_capture = AttentionCapture(scorer, [], grid)  # A(x, ∅) per position, for discffusion
    conditions = list(scorer.conditions)
    noise = {c.timestep: scorer.noise_for(c.timestep) for c in conditions}
    gaps = torch.zeros(grid, dtype=torch.float64)
    gap_norm = torch.zeros(grid, dtype=torch.float64)
    with torch.inference_mode():
        for chunk in scorer._chunks(conditions):
            noisy, eps, timesteps = scorer._noisy(latent[None].expand(len(chunk), -1, -1, -1), chunk, noise)
            with hooked(scorer, capture):
                err_y = _position_errors(scorer, noisy, eps, timesteps, text, token_mask, record=True)
            with hooked(scorer, empty_capture):
                err_0 = _position_errors(scorer, noisy, eps, timesteps, empty, empty_mask, record=True)
            diff = err_0 - err_y  # [b, H, W]
            gaps += diff.sum(dim=0)
            roots = err_0.flatten(1).sum(1).clamp_min(0).sqrt() + err_y.flatten(1).sum(1).clamp_min(0).sqrt()
            gap_norm += (diff / roots.clamp_min(1e-30)[:, None, None]).sum(dim=0)
    return _assemble(caption, words, capture, empty_capture, gaps, gap_norm, latent, len(conditions))


def _position_errors(scorer: Any, noisy: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor,
                     context: torch.Tensor, token_mask: torch.Tensor | None, record: bool) -> torch.Tensor:
    """(ε̂ − s·ε)² summed over channels, per item and latent position [b, H, W], in float64.

    `record` runs the pass with the attention processors reading A (as the attention score's pass,
    and the empty-prompt pass that discffusion reads A(x, ∅) from, do)."""
    batch = noisy.shape[0]
    sink = scorer.sink
    was_active = sink.active
    sink.active = record
    sink.clear()
    sink.token_mask = token_mask.expand(batch, -1).to(scorer.device) \
        if record and token_mask is not None and scorer.config.mask_padding else None
    try:
        out = scorer.family.predict(noisy.to(scorer.device, scorer.dtype), timesteps.to(scorer.device),
                                    context.expand(batch, -1, -1).to(scorer.device, scorer.dtype))
    finally:
        sink.active = was_active
    scorer.unet_passes += batch
    return (out.float() - eps.to(out.device)).pow(2).sum(dim=1).double().cpu()


def _assemble(caption: str, words: list[tuple[str, list[int]]], capture: AttentionCapture,
              empty_capture: AttentionCapture, gaps: torch.Tensor, gap_norm: torch.Tensor, latent: torch.Tensor,
              n_conditions: int) -> Explanation:
    """Means over conditions and layers, scaled so each family's map sums to its score."""
    layers = capture.calls / n_conditions  # selected layers, each read once per condition
    positions = capture.grid[0] * capture.grid[1]
    attention = capture.lse / (n_conditions * layers * positions)
    empty_attention = empty_capture.lse / (n_conditions * layers * positions)
    itm = gap_norm / n_conditions
    maps = {"denoise": gaps / (n_conditions * latent.numel()),
            "attention": attention,
            "diffusion_itm": itm,
            "discffusion": 0.5 * (attention + empty_attention) + itm}
    per_token = capture.per_token / (n_conditions * layers)
    out_words, start = [], 0
    for text, tokens in words:
        out_words.append(Word(text, tokens, per_token[start:start + len(tokens)].sum(dim=0).numpy()))
        start += len(tokens)
    return Explanation(caption, {k: v.numpy() for k, v in maps.items()}, out_words, n_conditions)
