"""SD3's joint attention with the text→image block of its logits pooled into a matching score.

An MMDiT block runs one attention over the concatenation [image tokens; text tokens]. The rows
of image queries and the columns of text keys, A = Q_img·K_textᵀ/√d [batch, heads, n, m], are
the block in which text conditions the image: the counterpart of a U-Net's cross-attention.
That block is pooled with paper Eq. 4 (engine/processor.py's `lse_pool`) the moment it exists;
the layer's output is diffusers' JointAttnProcessor2_0 computation unchanged (SDPA over all
keys), so the denoiser's forward is the model's own. Prompt deltas (tuning) are added to the
text key/value projections (`add_k_proj`, `add_v_proj`), SD3's counterpart of attn2's to_k/to_v.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from discff_cli.engine.processor import LSECrossAttnProcessor, lse_pool


class JointLSEProcessor(LSECrossAttnProcessor):
    """JointAttnProcessor2_0 plus the pooled text→image logits in a ScoreSink.

    It keeps the cross-attention processor's sink, delta slots and logit hook (tuning and Eq. 7
    head weighting reach it the same way) and replaces only the attention itself.
    """

    delta_slots = ("delta_k", "delta_v")  # query/output deltas (`tune --deltas-on qkvo`) are U-Net-only

    @staticmethod
    def context_projections(attn: Any) -> tuple[torch.nn.Linear, torch.nn.Linear]:
        """The linear maps the prompt deltas are added to: the text tokens' key and value."""
        return attn.add_k_proj, attn.add_v_proj

    def _heads(self, attn: Any, x: torch.Tensor, head_dim: int) -> torch.Tensor:
        return x.view(x.shape[0], -1, attn.heads, head_dim).transpose(1, 2)

    def _context(self, attn: Any, context: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, ...]:
        key, value = attn.add_k_proj(context), attn.add_v_proj(context)
        if self.delta_k is not None:
            key = key + self.delta_k(context)
        if self.delta_v is not None:
            value = value + self.delta_v(context)
        query, key, value = (self._heads(attn, x, head_dim) for x in (attn.add_q_proj(context), key, value))
        if attn.norm_added_q is not None:
            query = attn.norm_added_q(query)
        if attn.norm_added_k is not None:
            key = attn.norm_added_k(key)
        return query, key, value

    def forward(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **_: Any) -> Any:
        if encoder_hidden_states is None:
            raise ValueError(f"{self.name}: JointLSEProcessor is for joint (image + text) attention only")
        n_image = hidden_states.shape[1]
        head_dim = attn.to_k.out_features // attn.heads
        query, key, value = (self._heads(attn, proj(hidden_states), head_dim) for proj in (attn.to_q, attn.to_k,
                                                                                            attn.to_v))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        c_query, c_key, c_value = self._context(attn, encoder_hidden_states, head_dim)
        if self.record and self.sink.active:
            self._pool(query, c_key, attn.scale)
        out = F.scaled_dot_product_attention(torch.cat([query, c_query], dim=2), torch.cat([key, c_key], dim=2),
                                             torch.cat([value, c_value], dim=2), dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(out.shape[0], -1, attn.heads * head_dim).to(query.dtype)
        image, context = out[:, :n_image], out[:, n_image:]
        if not attn.context_pre_only:
            context = attn.to_add_out(context)
        image = attn.to_out[1](attn.to_out[0](image))
        return image, context

    def _pool(self, image_query: torch.Tensor, text_key: torch.Tensor, scale: float) -> None:
        logits = torch.matmul(image_query * scale, text_key.transpose(-1, -2))  # [b, heads, n_image, m]
        if self.logit_hook is not None:
            logits = self.logit_hook(self.name, logits)
        self.sink.pooled[self.name] = lse_pool(logits, self.lse_lambda, self.sink.token_mask)
