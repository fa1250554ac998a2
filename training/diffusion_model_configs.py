"""The demo latent diffusion model's architecture and training settings, as data.

The shapes follow Stable Diffusion 2.1-base (AutoencoderKL -> UNet2DConditionModel with
cross-attention and linear projections -> CLIPTextModel, DDIM scheduler with SD's
scaled-linear betas) shrunk to the demo world's 64x64 images, so the bundled model is
loaded by exactly the code that loads SD. Sizes are chosen for the package budget
(~25 MB in fp16) and for CPU reranking speed: the text encoder's 49,408-row token
embedding (the real CLIP BPE ids) is the largest single tensor, so its width stays small.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

IMAGE_SIZE = 64
TEXT_HIDDEN = 96

# 3 encoder blocks -> 2 downsamples -> 4x16x16 latents (SD: 4 blocks, 8x).
VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": IMAGE_SIZE,
    "scaling_factor": 1.0,  # replaced after VAE training by 1 / std of the latents
}

# vocab 49408 and the special-token ids are those of CLIP's BPE (training.tokenizer).
TEXT_CONFIG: dict = {
    "vocab_size": 49408,
    "hidden_size": TEXT_HIDDEN,
    "intermediate_size": 4 * TEXT_HIDDEN,
    "projection_dim": TEXT_HIDDEN,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 0,  # "!" pads, as in SD 2.x
}

# SD 2.1 layout: CrossAttnDown x2 + Down, cross-attention mid, Up + CrossAttnUp x2.
# `attention_head_dim` is diffusers' legacy name for the number of heads (SD 2.1 uses
# [5, 10, 20, 20]); here every head is 16 wide. 11 attn2 layers: 4 down, 1 mid, 6 up.
UNET_CONFIG: dict = {
    "sample_size": IMAGE_SIZE // 4,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [48, 96, 128],
    "layers_per_block": 2,
    "attention_head_dim": [3, 6, 8],
    "cross_attention_dim": TEXT_HIDDEN,
    "use_linear_projection": True,
    "norm_num_groups": 16,
}

# DDIMScheduler as saved with SD 2.1-base (epsilon prediction, 1000 scaled-linear steps).
SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


@dataclass
class TrainConfig:
    """Hyper-parameters of train_diffusion; written to results/diffusion/hparams.json."""

    seed: int = 0
    n_train: int = 120_000         # world scenes rendered once, captions re-phrased each step
    vae_steps: int = 1500
    vae_batch: int = 256
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    unet_steps: int = 7000
    unet_batch: int = 512
    unet_lr: float = 5e-4
    text_lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup: int = 300
    ema_decay: float = 0.999
    caption_dropout: float = 0.1   # empty caption -> classifier-free guidance
    grad_clip: float = 1.0
    time_budget_s: float = 0.0     # 0 = no limit; else stop U-Net training at this wall time
    eval_single: int = 240         # generated images judged by check_image
    eval_two: int = 240
    eval_steps: int = 50           # DDIM steps for the generation check
    guidance: float = 5.0
    sanity_n: int = 200            # Diffusion-Classifier-style caption vs hard-negative test

    def to_dict(self) -> dict:
        return asdict(self)
