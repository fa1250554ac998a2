"""FLOPs of one denoiser pass for SD 2.1-base, SDXL base and SD3/SD3.5-medium, from their configs.

The real configs (as data, below) are instantiated on PyTorch's meta device, so no weights are
needed or allocated, and one forward at each model's native resolution is counted with
torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions; a multiply-add = 2 FLOPs).
The README's device-time rows scale the measured SD 2.1-base rate on an H100 by the FLOP ratio,
which assumes the same hardware utilisation for every model.

    python benchmarks/family_flops.py            # prints JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SDXL_UNET = {  # stabilityai/stable-diffusion-xl-base-1.0, unet/config.json
    "block_out_channels": [320, 640, 1280], "layers_per_block": 2, "sample_size": 128, "in_channels": 4,
    "out_channels": 4, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10], "cross_attention_dim": 2048, "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SD3_MEDIUM = {  # stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "num_layers": 24, "attention_head_dim": 64,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048, "out_channels": 16, "pos_embed_max_size": 192,
}
SD35_MEDIUM = {**SD3_MEDIUM, "pos_embed_max_size": 384, "qk_norm": "rms_norm",  # stable-diffusion-3.5-medium
               "dual_attention_layers": list(range(13))}


def _count(model, *args, **kwargs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(*args, **kwargs)
    return int(counter.get_total_flops())


def unet_flops(config: dict, context: tuple[int, int], added: bool) -> int:
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
        size = config["sample_size"]
        x = torch.randn(1, config["in_channels"], size, size)
        kwargs = {"encoder_hidden_states": torch.randn(1, *context)}
        if added:
            kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 1280), "time_ids": torch.randn(1, 6)}
        return _count(unet, x, torch.tensor([500]), **kwargs)


def sd3_flops(config: dict) -> int:
    import torch
    from diffusers import SD3Transformer2DModel

    with torch.device("meta"):
        model = SD3Transformer2DModel(**config)
        size = config["sample_size"]
        return _count(model, hidden_states=torch.randn(1, config["in_channels"], size, size),
                      encoder_hidden_states=torch.randn(1, 77 + 256, config["joint_attention_dim"]),
                      pooled_projections=torch.randn(1, config["pooled_projection_dim"]),
                      timestep=torch.tensor([500.0]))


def main() -> None:
    from training.demo_models.sd_configs import sd21_configs

    sd21 = unet_flops(sd21_configs("full")["unet"], (77, 1024), added=False)
    rows = {"sd-2.1-base (512², 64² latent)": sd21,
            "sdxl-base (1024², 128² latent)": unet_flops(SDXL_UNET, (77, 2048), added=True),
            "sd3-medium (1024², 4096 image + 333 text tokens)": sd3_flops(SD3_MEDIUM),
            "sd3.5-medium (1024², 4096 image + 333 text tokens)": sd3_flops(SD35_MEDIUM)}
    print(json.dumps({name: {"tflops_per_pass": round(f / 1e12, 3), "vs_sd21": round(f / sd21, 2)}
                      for name, f in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
