"""Stable Diffusion 2.1-base shaped configs, as data, and random-weight models built from them.

Tests and benchmarks need SD's architecture (block types, linear projection, cross-attention in
down, mid and up blocks: 16 attn2 layers) without its 5 GB of weights. `build_random_sd` writes a
diffusers-format directory that `discff_cli.engine.models.load_sd` loads exactly like real weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SD21_UNET = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],  # diffusers' historical name: these are head counts in SD 2.x
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "sample_size": 64,
    "use_linear_projection": True,
}
SD21_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD21_TEXT = {  # OpenCLIP ViT-H/14 text tower as CLIPTextModel
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "hidden_act": "gelu",
    "projection_dim": 512,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}
SD21_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

# Same block types and layer counts, widths small enough to run in milliseconds on a CPU.
TINY_UNET = {**SD21_UNET, "attention_head_dim": [2, 4, 4, 4], "block_out_channels": [32, 64, 64, 64],
             "cross_attention_dim": 32, "sample_size": 8}
TINY_VAE = {**SD21_VAE, "block_out_channels": [16, 32, 32, 32], "norm_num_groups": 8, "sample_size": 64,
            "layers_per_block": 1}
TINY_TEXT = {**SD21_TEXT, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
             "num_hidden_layers": 2, "projection_dim": 32}


def sd21_configs(size: str = "tiny", sample_size: int | None = None) -> dict[str, dict[str, Any]]:
    """Configs for `size` 'tiny' (tests) or 'full' (SD 2.1-base widths); `sample_size` is the latent size."""
    unet, vae, text = (TINY_UNET, TINY_VAE, TINY_TEXT) if size == "tiny" else (SD21_UNET, SD21_VAE, SD21_TEXT)
    unet = dict(unet)
    vae = dict(vae)
    if sample_size:
        unet["sample_size"] = sample_size
        vae["sample_size"] = sample_size * 2 ** (len(vae["block_out_channels"]) - 1)
    return {"unet": unet, "vae": vae, "text_encoder": dict(text), "scheduler": dict(SD21_SCHEDULER)}


def build_random_sd(out_dir: str | Path, configs: dict[str, dict[str, Any]] | None = None, seed: int = 0) -> Path:
    """Write a random-weight Stable Diffusion in diffusers format (vae, unet, text_encoder, tokenizer, scheduler)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from training.demo_models.tokenizer import write_clip_tokenizer

    configs = configs or sd21_configs("tiny")
    out = Path(out_dir)
    torch.manual_seed(seed)
    AutoencoderKL(**configs["vae"]).save_pretrained(out / "vae")
    UNet2DConditionModel(**configs["unet"]).save_pretrained(out / "unet")
    CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])).save_pretrained(out / "text_encoder")
    DDIMScheduler(**configs["scheduler"]).save_pretrained(out / "scheduler")
    write_clip_tokenizer(out / "tokenizer", max_length=configs["text_encoder"]["max_position_embeddings"])
    write_model_index(out)
    return out


def write_model_index(out: Path) -> None:
    """model_index.json as StableDiffusionPipeline.save_pretrained writes it (no safety checker)."""
    import diffusers

    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
