"""How many U-Net items fit in one forward pass under a memory budget."""

from __future__ import annotations

from typing import Any

import torch

CPU_BUDGET_BYTES = 2 * 1024**3   # activations on CPU: leave the rest of RAM to the user
GPU_BUDGET_FRACTION = 0.6        # of the free device memory
MAX_BATCH = 256


def per_item_bytes(unet: Any, latent_shape: tuple[int, int, int], dtype: torch.dtype) -> int:
    """Peak activation estimate of one item: the widest feature map times a safety factor.

    The largest live tensors in inference are the first block's feature maps (channels × h × w)
    and the attention logits; 48 such maps covers both on SD 2.1 with room to spare.
    """
    _, h, w = latent_shape
    bytes_per = torch.finfo(dtype).bits // 8
    if "block_out_channels" not in unet.config:
        return transformer_item_bytes(unet, h, w, bytes_per)
    channels = int(unet.config.block_out_channels[0])
    return 48 * channels * h * w * bytes_per


def transformer_item_bytes(transformer: Any, h: int, w: int, bytes_per: int) -> int:
    """SD3's MMDiT: 48 token × width maps plus one head's [tokens, tokens] attention, per item.

    SDPA never holds all heads' maps at once; the 333 text tokens are counted with the image's.
    """
    config = transformer.config
    tokens = (h // int(config.patch_size)) * (w // int(config.patch_size)) + 333
    width = int(config.num_attention_heads) * int(config.attention_head_dim)
    return (48 * tokens * width + tokens * tokens) * bytes_per


def auto_batch_size(unet: Any, latent_shape: tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> int:
    """Items per call: budget / per-item estimate, clamped to [1, MAX_BATCH]."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * GPU_BUDGET_FRACTION)
    else:
        budget = CPU_BUDGET_BYTES
    return max(1, min(MAX_BATCH, budget // per_item_bytes(unet, latent_shape, dtype)))
