"""The bundled demo diffusion model: loads offline through SD's classes and follows its text."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from discff_cli.engine.models import DEMO_MODEL_DIR, resolve_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def parts():
    """Each component loaded the way Stable Diffusion's are, with the hub switched off."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    d = str(DEMO_MODEL_DIR)
    text_encoder, info = CLIPTextModel.from_pretrained(d, subfolder="text_encoder", output_loading_info=True)
    out = {
        "vae": AutoencoderKL.from_pretrained(d, subfolder="vae").eval(),
        "unet": UNet2DConditionModel.from_pretrained(d, subfolder="unet").eval(),
        "text_encoder": text_encoder.eval(),
        "text_info": info,
        "tokenizer": CLIPTokenizer.from_pretrained(d, subfolder="tokenizer"),
        "scheduler": DDIMScheduler.from_pretrained(d, subfolder="scheduler"),
    }
    yield out
    mp.undo()


def test_demo_name_resolves_to_the_bundled_directory():
    assert resolve_model("demo") == str(DEMO_MODEL_DIR)
    index = json.loads((DEMO_MODEL_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]


def test_bundled_weights_fit_the_package_budget():
    total = sum(p.stat().st_size for p in DEMO_MODEL_DIR.rglob("*") if p.is_file())
    assert total < 60e6  # issue 12's package budget for the demo model


def test_components_load_offline_in_fp32_with_every_weight(parts):
    # fp16 files on disk, but the CPU engine must compute in fp32, and no weight may be left random.
    assert parts["vae"].dtype == parts["unet"].dtype == parts["text_encoder"].dtype == torch.float32
    info = parts["text_info"]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_architecture_is_sd21_shaped(parts):
    unet, te, vae, sched = parts["unet"], parts["text_encoder"], parts["vae"], parts["scheduler"]
    assert unet.config.cross_attention_dim == te.config.hidden_size
    assert unet.config.use_linear_projection
    assert "CrossAttnDownBlock2D" in unet.config.down_block_types
    assert unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1) == 64
    n_attn2 = sum(1 for name, _ in unet.named_modules() if name.endswith("attn2"))
    assert n_attn2 == 11
    assert (sched.config.beta_schedule, sched.config.set_alpha_to_one, sched.config.steps_offset) == (
        "scaled_linear", False, 1)
    assert sched.config.prediction_type == "epsilon"


def test_tokenizer_gives_open_clip_token_ids(parts):
    import open_clip

    caption = "a red circle to the left of a blue square"
    # 77 positions for a text encoder trained from scratch (SD's length); 16 for the frozen demo-CLIP tower.
    length = parts["text_encoder"].config.max_position_embeddings
    assert parts["tokenizer"].model_max_length == length
    ids = parts["tokenizer"](caption, padding="max_length", max_length=length).input_ids
    ref = open_clip.get_tokenizer("ViT-B-32")([caption])[0].tolist()
    n = ids.index(49407) + 1
    assert ids[:n] == ref[:n]
    assert len(ids) == length


def _world_batch(n: int):
    from training.world import make_split

    exs = make_split("test", n, seed=0)
    x = torch.from_numpy(np.stack([np.array(e.image) for e in exs])).permute(0, 3, 1, 2).float() / 127.5 - 1
    return exs, x


def test_scaling_factor_gives_unit_variance_latents(parts):
    vae = parts["vae"]
    _, x = _world_batch(32)
    with torch.inference_mode():
        z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    assert 0.7 < float(z.std()) < 1.4


def test_vae_reconstructions_pass_the_world_checker(parts):
    from PIL import Image

    from training.world import check_image

    vae = parts["vae"]
    exs, x = _world_batch(16)
    with torch.inference_mode():
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    ok = [check_image(Image.fromarray(r), e.scene)["ok"] for r, e in zip(rec, exs)]
    assert sum(ok) >= 15


def test_true_caption_denoises_better_than_a_replaced_attribute(parts):
    """The text reaches the U-Net: with shared noise, the true caption predicts it better
    than the same caption with one colour or shape replaced (Diffusion-Classifier test)."""
    from training.world import captions, hard_negatives, iter_split

    vae, unet, te, tok = parts["vae"], parts["unet"], parts["text_encoder"], parts["tokenizer"]
    ac = parts["scheduler"].alphas_cumprod
    ts = torch.linspace(100, 900, 8).long()
    a = ac[ts].view(-1, 1, 1, 1)
    rng = random.Random(0)
    wins = []
    for _, ex in iter_split("test", 16, 0, n_objects=1):
        caps = captions(ex.scene)
        j = caps.index(ex.caption)
        negs = hard_negatives(ex.scene)["replaced_attribute"]
        neg = negs[rng.randrange(len(negs) // len(caps)) * len(caps) + j]
        x = torch.from_numpy(np.array(ex.image)).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.inference_mode():
            z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
            eps = torch.randn((len(ts),) + z.shape[1:], generator=torch.Generator().manual_seed(0))
            zt = a.sqrt() * z + (1 - a).sqrt() * eps
            ids = tok([ex.caption, neg], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
            enc = te(ids)[0]
            pred = unet(zt.repeat(2, 1, 1, 1), ts.repeat(2), enc.repeat_interleave(len(ts), 0)).sample
            loss = ((pred - eps.repeat(2, 1, 1, 1)) ** 2).mean(dim=(1, 2, 3)).view(2, -1).mean(1)
        wins.append(bool(loss[0] < loss[1]))
    assert sum(wins) >= 13, wins
