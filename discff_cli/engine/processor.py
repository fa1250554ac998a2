"""The attention processor that turns cross-attention into a matching score.

It replaces diffusers' processor on every attn2 module (the extension point diffusers offers)
and, for each item of the batch, reduces the pre-softmax logits A = QKᵀ/√d to one scalar per
head with LogSumExp pooling (paper Eq. 4) the moment A exists. The full maps are never kept.
The layer's output is computed from the same logits, so the U-Net's forward is unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class ScoreSink:
    """Collects pooled scores of one U-Net forward: layer name -> tensor [batch, heads]."""

    def __init__(self) -> None:
        self.pooled: dict[str, torch.Tensor] = {}
        self.token_mask: torch.Tensor | None = None  # [batch, m] bool, True = token takes part in the LSE
        self.active = True  # False: no score needs the attention term, so every layer runs on SDPA

    def clear(self) -> None:
        self.pooled.clear()


def lse_pool(logits: torch.Tensor, lse_lambda: float, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4: f(A) = mean_i (1/λ) log Σ_j exp(λ A_ij), for logits [batch, heads, n, m] -> [batch, heads]."""
    scaled = logits.float() * lse_lambda
    if token_mask is not None:
        scaled = scaled.masked_fill(~token_mask[:, None, None, :], float("-inf"))
    return (torch.logsumexp(scaled, dim=-1) / lse_lambda).mean(dim=-1)


def lse_and_softmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4 at λ = 1 and softmax(A) from one softmax pass: [batch, heads] pooled, fp32 probabilities.

    The attention output needs softmax(A) anyway; its row maximum p* = exp(max A − LSE) gives
    LSE = max A − log p* exactly (p* ≥ 1/m, so the log is well conditioned), which saves the
    separate logsumexp pass over the [batch, heads, n, m] logits (1.6× faster attn2 tail on CPU).
    The gradient is softmax(A), as for logsumexp.
    """
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    lse = logits.amax(dim=-1).float() - probs.amax(dim=-1).log()
    return lse.mean(dim=-1), probs


class LSECrossAttnProcessor(torch.nn.Module):
    """Cross-attention with explicit logits, pooled per (item, head) into a ScoreSink.

    It is an nn.Module so that prompt deltas (learnable p^k, p^v of paper Eq. 5) attached to it
    become parameters of the U-Net without touching diffusers' Attention class.
    """

    def __init__(self, name: str, sink: ScoreSink, lse_lambda: float = 1.0, record: bool = True) -> None:
        super().__init__()
        self.name = name
        self.sink = sink
        self.lse_lambda = lse_lambda
        self.record = record
        self.delta_k: torch.nn.Module | None = None
        self.delta_v: torch.nn.Module | None = None
        # Beyond the paper (`tune --deltas-on qkvo`): deltas on the query and output projections too.
        self.delta_q: torch.nn.Module | None = None
        self.delta_o: torch.nn.Module | None = None
        # Optional `hook(name, logits) -> logits` run on A before pooling; tuning uses it for Eq. 7.
        self.logit_hook: Any = None

    @staticmethod
    def context_projections(attn: Any) -> tuple[torch.nn.Linear, torch.nn.Linear]:
        """The linear maps the prompt deltas are added to: attn2's key and value (W^k, W^v)."""
        return attn.to_k, attn.to_v

    delta_slots = ("delta_k", "delta_v", "delta_q", "delta_o")  # the slots this processor's forward adds

    def projection(self, attn: Any, slot: str) -> torch.nn.Linear:
        """The linear map a delta slot (delta_q, delta_k, delta_v, delta_o) is added to."""
        key, value = self.context_projections(attn)
        return {"delta_q": attn.to_q, "delta_k": key, "delta_v": value, "delta_o": attn.to_out[0]}[slot]

    def project_kv(self, attn: Any, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V with the prompt deltas added: (W + p)·c = W·c + p·c."""
        key, value = attn.to_k(context), attn.to_v(context)
        if self.delta_k is not None:
            key = key + self.delta_k(context)
        if self.delta_v is not None:
            value = value + self.delta_v(context)
        return key, value

    def forward(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError(f"{self.name}: LSECrossAttnProcessor is for cross-attention only")
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states

        query = attn.to_q(hidden_states)
        if self.delta_q is not None:
            query = query + self.delta_q(hidden_states)
        key, value = self.project_kv(attn, context)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        if self.record and self.sink.active:
            logits = torch.matmul(query * attn.scale, key.transpose(-1, -2))  # [b, heads, n, m]
            if self.logit_hook is not None:
                logits = self.logit_hook(self.name, logits)
            if self.lse_lambda == 1.0 and self.sink.token_mask is None:
                pooled, probs = lse_and_softmax(logits)
            else:
                pooled, probs = lse_pool(logits, self.lse_lambda, self.sink.token_mask), logits.softmax(dim=-1)
            self.sink.pooled[self.name] = pooled
            out = torch.matmul(probs.to(value.dtype), value)
        else:
            out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)

        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        projected = attn.to_out[0](out)
        if self.delta_o is not None:
            projected = projected + self.delta_o(out)
        out = attn.to_out[1](projected)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
