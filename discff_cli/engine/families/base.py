"""The interface every model family gives the scorer, and the helpers the families share."""

from __future__ import annotations

from typing import Any, Sequence

import torch


class Family:
    """One kind of denoiser, seen by the scorer as five operations (see families/__init__.py).

    Text states travel through the engine (caches, tuning, pruning) as one tensor per text,
    [m, d] for SD 1/2. Families with a pooled text vector (SDXL, SD3) append it as one extra
    row ([m + 1, max(d, p)], `pack_pooled`), so a text's whole conditioning is indexed,
    cached and batched like SD's hidden states and only the family unpacks it.
    """

    name = "base"

    def __init__(self, parts: Any) -> None:
        self.parts = parts

    # ----- the grid -------------------------------------------------------------------------

    def timesteps(self, steps: int) -> list[int]:
        """The integer timesteps of a `steps`-point inference grid, from the family's scheduler."""
        raise NotImplementedError

    def noisy(self, latents: torch.Tensor, timesteps: torch.Tensor,
              noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(denoiser input x_t, the training target of its prediction) for latents z and scaled noise s·ε."""
        raise NotImplementedError

    # ----- text -----------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states [N, rows, width] and the token mask [N, m] over the context tokens (True = real)."""
        raise NotImplementedError

    def encode_empty(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The family's unconditional (empty-prompt) state, [1, rows, width] and its mask."""
        return self.encode([""], device)

    # ----- the denoiser ---------------------------------------------------------------------

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """One batched denoiser forward: the prediction compared with `noisy`'s target."""
        raise NotImplementedError

    def attention_layers(self) -> list[str]:
        """Names of the modules whose text-image attention the attention term reads, in forward order."""
        raise NotImplementedError

    def make_processor(self, name: str, sink: Any, lse_lambda: float, record: bool) -> torch.nn.Module:
        """The attention processor installed on layer `name` (diffusers' extension point)."""
        raise NotImplementedError

    def fingerprint_modules(self) -> dict[str, Any]:
        """The modules whose weights name the model (deltas refuse other weights)."""
        raise NotImplementedError


def pack_pooled(hidden: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """[N, m, d] hidden states and [N, p] pooled vectors -> [N, m + 1, max(d, p)], pooled as the last row."""
    width = max(hidden.shape[-1], pooled.shape[-1])
    hidden = torch.nn.functional.pad(hidden, (0, width - hidden.shape[-1]))
    pooled = torch.nn.functional.pad(pooled, (0, width - pooled.shape[-1]))
    return torch.cat([hidden, pooled[:, None, :]], dim=1)


def unpack_pooled(states: torch.Tensor, hidden_dim: int, pooled_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `pack_pooled`: ([N, m, hidden_dim], [N, pooled_dim])."""
    return states[:, :-1, :hidden_dim], states[:, -1, :pooled_dim]


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int | None = None) -> Any:
    """Pad to the tokenizer's length and truncate, as every diffusers pipeline does."""
    return tokenizer(list(texts), padding="max_length", truncation=True,
                     max_length=max_length or tokenizer.model_max_length, return_tensors="pt")
