"""Scoring through SD 1/2, SDXL and SD3: every score equals a direct computation from the model.

The reference side loads each tiny model with diffusers' own pipeline class (from_pretrained),
encodes prompts with the pipeline's `encode_prompt` (SDXL's zeroed empty prompt, SD3's three
encoders), and reads the text-image attention logits with forward hooks on diffusers' default
processors, so it shares no code with the engine beyond the latent preprocessing and the spec's
seeded noise.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from conftest_tune import one_thread  # noqa: F401
from discff_cli.engine.config import EngineConfig

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = EngineConfig(steps=2, levels=(0.5,), device="cpu", batch_size=4)
TEXTS = ["a red cube left of a ball", "two blue spheres"]
SCORES = ("attention", "denoise", "diffusion_itm", "discffusion")


@pytest.fixture(params=["sd", "sdxl", "sd3", "sd3-t5"])
def model_dir(request):
    return request.getfixturevalue({"sd": "tiny_sd_dir", "sdxl": "tiny_sdxl_dir", "sd3": "tiny_sd3_dir",
                                    "sd3-t5": "tiny_sd3_t5_dir"}[request.param])


@functools.lru_cache(maxsize=None)
def _pipeline(model_dir):
    import json

    from diffusers import DiffusionPipeline

    index = json.loads((model_dir / "model_index.json").read_text())
    missing = {k: None for k, v in index.items() if isinstance(v, list) and v[0] is None and k.endswith("_3")}
    pipe = DiffusionPipeline.from_pretrained(str(model_dir), torch_dtype=torch.float32, **missing)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _prompt(pipe, text: str) -> tuple:
    """(cond states, cond pooled, empty states, empty pooled) as the pipeline conditions a sampler."""
    out = pipe.encode_prompt(text, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True) \
        if type(pipe).__name__ == "StableDiffusionPipeline" else \
        pipe.encode_prompt(prompt=text, prompt_2=None, **({"prompt_3": None} if hasattr(pipe, "transformer") else {}),
                           device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True)
    return (out[0], None, out[1], None) if len(out) == 2 else (out[0], out[2], out[1], out[3])


def _logit_hooks(pipe, store: list):
    """Pre-hooks that compute LSE-pooled Q_img·K_textᵀ of every text-image attention, [heads] per item."""
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    joint = hasattr(pipe, "transformer")

    def hook(attn, args, kwargs):
        hidden, context = kwargs.get("hidden_states", args[0] if args else None), kwargs["encoder_hidden_states"]
        heads = attn.heads
        q = attn.to_q(hidden)
        k = attn.add_k_proj(context) if joint else attn.to_k(context)
        q = q.view(q.shape[0], -1, heads, q.shape[-1] // heads).transpose(1, 2)
        k = k.view(k.shape[0], -1, heads, k.shape[-1] // heads).transpose(1, 2)
        if joint:
            q, k = attn.norm_q(q) if attn.norm_q is not None else q, \
                attn.norm_added_k(k) if attn.norm_added_k is not None else k
        logits = q @ k.transpose(-1, -2) * attn.scale
        store.append(torch.logsumexp(logits, dim=-1).mean(dim=-1).mean(dim=-1))  # [batch]

    handles = []
    for name, module in denoiser.named_modules():
        if (joint and name.startswith("transformer_blocks.") and name.endswith(".attn")) or \
                (not joint and name.endswith("attn2")):
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    return handles


def _forward(pipe, x, t, states, pooled):
    if hasattr(pipe, "transformer"):
        return pipe.transformer(hidden_states=x, timestep=torch.tensor([float(t)]), encoder_hidden_states=states,
                                pooled_projections=pooled).sample
    added = None
    if pooled is not None:
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        added = {"text_embeds": pooled, "time_ids": torch.tensor([[size, size, 0, 0, size, size]], dtype=x.dtype)}
    return pipe.unet(x, torch.tensor([t]), encoder_hidden_states=states, added_cond_kwargs=added).sample


def _noisy(pipe, z, t, eps):
    if hasattr(pipe, "transformer"):
        sigma = t / pipe.scheduler.config.num_train_timesteps
        return (1 - sigma) * z + sigma * eps, eps - z
    alpha = pipe.scheduler.alphas_cumprod[t]
    return alpha.sqrt() * z + (1 - alpha).sqrt() * eps, eps


def direct_scores(model_dir, image, text, scorer) -> dict[str, float]:
    """Every score of one pair computed from the pipeline's own parts, condition by condition."""
    from discff_cli.engine.preprocess import load_pixels

    pipe = _pipeline(model_dir)
    res = pipe.unet.config.sample_size * pipe.vae_scale_factor if hasattr(pipe, "unet") else \
        pipe.transformer.config.sample_size * pipe.vae_scale_factor
    with torch.no_grad():
        mean = pipe.vae.encode(load_pixels(image, res)[None]).latent_dist.mean
        z = (mean - (pipe.vae.config.shift_factor or 0.0)) * pipe.vae.config.scaling_factor
        cond, pooled, empty, empty_pooled = _prompt(pipe, text)
        per = {s: [] for s in SCORES}
        for c in scorer.conditions:
            x, target = _noisy(pipe, z, c.timestep, scorer.noise_for(c.timestep)[None] * c.level)
            store: list = []
            handles = _logit_hooks(pipe, store)
            e_y = (_forward(pipe, x, c.timestep, cond, pooled) - target).pow(2).sum()
            a = torch.stack(store).mean()
            store.clear()
            e_0 = (_forward(pipe, x, c.timestep, empty, empty_pooled) - target).pow(2).sum()
            a_0 = torch.stack(store).mean() if store else torch.zeros(())  # A(x, ∅) on the empty pass
            for h in handles:
                h.remove()
            per["attention"].append(float(a))
            per["denoise"].append(float((e_0 - e_y) / z.numel()))
            per["diffusion_itm"].append(float(e_0.sqrt() - e_y.sqrt()))
            per["discffusion"].append(float(0.5 * (a + a_0) + e_0.sqrt() - e_y.sqrt()))
    return {s: float(np.mean(v)) for s, v in per.items()}


def engine_scores(scorer, images, texts) -> dict[str, np.ndarray]:
    ranking = scorer.rank(images, texts, SCORES, prune=False)
    return {s: np.asarray(ranking.scores[s], dtype=np.float64) for s in SCORES}


@pytest.fixture()
def scorer(model_dir):
    from discff_cli.engine.scorer import load_scorer

    return load_scorer(str(model_dir), CONFIG)


def test_every_score_equals_a_direct_computation_from_the_pipeline(model_dir, scorer, sample_image):
    got = engine_scores(scorer, [sample_image], [TEXTS[0]])
    want = direct_scores(model_dir, sample_image, TEXTS[0], scorer)
    for score in SCORES:
        np.testing.assert_allclose(got[score][0], want[score], rtol=1e-4, atol=1e-6, err_msg=score)


def test_a_pair_alone_scores_as_in_a_batch_and_the_seed_decides(model_dir, scorer, sample_image, tmp_path):
    from PIL import Image

    from discff_cli.engine.scorer import load_scorer

    other = tmp_path / "other.png"
    Image.fromarray((np.random.RandomState(1).rand(50, 40, 3) * 255).astype("uint8")).save(other)
    batch = engine_scores(scorer, [sample_image, other, other], [TEXTS[0], TEXTS[1], TEXTS[0]])
    alone = engine_scores(load_scorer(str(model_dir), CONFIG), [other], [TEXTS[1]])
    again = engine_scores(load_scorer(str(model_dir), CONFIG), [other], [TEXTS[1]])
    reseeded = engine_scores(load_scorer(str(model_dir), EngineConfig(**{**CONFIG.to_dict(), "seed": 7})),
                             [other], [TEXTS[1]])
    for score in SCORES:
        np.testing.assert_allclose(alone[score][0], batch[score][1], rtol=1e-5, atol=1e-5)  # fp32 batched convs; norm gaps
        assert alone[score][0] == again[score][0]
        assert reseeded[score][0] != alone[score][0]


def test_the_family_comes_from_model_index(tiny_sd_dir, tiny_sdxl_dir, tiny_sd3_dir):
    from discff_cli.engine.models import load_sd

    assert [load_sd(str(d)).family for d in (tiny_sd_dir, tiny_sdxl_dir, tiny_sd3_dir)] == ["sd", "sdxl", "sd3"]


def test_flux_and_unknown_pipelines_are_refused_in_one_sentence(tmp_path):
    import json

    from discff_cli.errors import DiscffError
    from discff_cli.engine.models import load_sd

    for name, words in (("FluxPipeline", "guidance-distilled"), ("KandinskyPipeline", "discff scores with")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model_index.json").write_text(json.dumps({"_class_name": name}))
        with pytest.raises(DiscffError) as info:
            load_sd(str(folder))
        assert words in str(info.value) and "StableDiffusion3Pipeline" in str(info.value)


def test_a_denoiser_without_text_image_attention_refuses_the_attention_term(tmp_path, sample_image):
    from discff_cli.engine.scorer import load_scorer
    from discff_cli.errors import DiscffError
    from training.demo_models.sd_configs import build_random_sd, sd21_configs

    configs = sd21_configs("tiny")
    configs["unet"].update(down_block_types=["DownBlock2D"] * 4, up_block_types=["UpBlock2D"] * 4,
                           mid_block_type=None)
    scorer = load_scorer(str(build_random_sd(tmp_path / "no-attn", configs)), CONFIG)
    assert np.isfinite(scorer.rank([sample_image], [TEXTS[0]], ["denoise"]).scores["denoise"]).all()
    with pytest.raises(DiscffError, match="no text-image attention layers.*--score denoise"):
        scorer.rank([sample_image], [TEXTS[0]], ["attention"])
