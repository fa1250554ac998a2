"""Which model family a diffusers pipeline is, and which of its parts the engine loads.

A diffusers pipeline directory (or hub repo) names its pipeline class and its components in
``model_index.json``; that file alone decides the family, so any standard
StableDiffusionPipeline, StableDiffusionXLPipeline or StableDiffusion3Pipeline directory
loads, whoever saved it. A directory without the file (older exports) is read as SD 1/2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from discff_cli.errors import DiscffError

FAMILY_OF_PIPELINE = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
}
# (subfolder, required) in load order; the denoiser is always loaded into SDParts.unet
COMPONENTS = {
    "sd": [("vae", True), ("unet", True), ("text_encoder", True), ("tokenizer", True), ("scheduler", True)],
    "sdxl": [("vae", True), ("unet", True), ("text_encoder", True), ("tokenizer", True), ("text_encoder_2", True),
             ("tokenizer_2", True), ("scheduler", True)],
    "sd3": [("vae", True), ("transformer", True), ("text_encoder", True), ("tokenizer", True),
            ("text_encoder_2", True), ("tokenizer_2", True), ("text_encoder_3", False), ("tokenizer_3", False),
            ("scheduler", True)],
}
REFUSED = {
    "FluxPipeline": "Flux is guidance-distilled: its transformer takes the guidance scale as an input and was never "
                    "trained to predict an unconditional (empty-prompt) velocity, so the empty-prompt normalisation "
                    "the denoise and discffusion scores rest on has no meaning for it",
    "StableDiffusionXLImg2ImgPipeline": "the SDXL refiner is an image-to-image model with one text encoder and "
                                        "aesthetic-score conditioning, not a text-to-image base model",
}
SUPPORTED = "SD 1.x/2.x (StableDiffusionPipeline), SDXL (StableDiffusionXLPipeline) or SD3/SD3.5 " \
            "(StableDiffusion3Pipeline)"


def read_local_index(path: Path) -> dict[str, Any]:
    """model_index.json of a local directory, {} when it has none; a broken one is one sentence."""
    file = path / "model_index.json"
    if not file.is_file():
        return {}
    try:
        index = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise DiscffError(f"Model '{path}' is broken: '{file}' is not readable JSON ({exc}).") from None
    if not isinstance(index, dict):
        raise DiscffError(f"Model '{path}' is broken: '{file}' is not a JSON object.")
    return index


def family_of(index: dict[str, Any], name: str) -> str:
    """'sd', 'sdxl' or 'sd3' from a model_index.json; other pipelines are one sentence."""
    if not index:
        return "sd"
    pipeline = str(index.get("_class_name", ""))
    if pipeline in FAMILY_OF_PIPELINE:
        return FAMILY_OF_PIPELINE[pipeline]
    if pipeline in REFUSED:
        raise DiscffError(f"'{name}' is a {pipeline}, which discff cannot score: {REFUSED[pipeline]}; use {SUPPORTED}.")
    raise DiscffError(f"'{name}' is a {pipeline or 'pipeline of unknown kind'}; discff scores with {SUPPORTED}.")


def components(index: dict[str, Any], family: str) -> list[tuple[str, bool]]:
    """The (subfolder, required) parts to load: optional ones only where the index names a class."""
    listed = {key for key, value in index.items() if isinstance(value, list) and value and value[0]}
    return [(sub, required) for sub, required in COMPONENTS[family]
            if required or sub in listed]


def component_class(index: dict[str, Any], sub: str, family: str) -> Any:
    """The class that loads subfolder `sub`: the scheduler the family's grid needs, else the index's class."""
    import importlib

    if sub == "scheduler":
        from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler if family == "sd3" else DDIMScheduler
    library, cls = (index.get(sub) or [None, None])[:2] if index else (None, None)
    if not library:
        library, cls = _DEFAULT_CLASSES[sub]
    try:
        return getattr(importlib.import_module(library), cls)
    except (ImportError, AttributeError):
        raise DiscffError(f"model_index.json names '{library}.{cls}' for '{sub}', which this environment does not "
                          "have.") from None


_DEFAULT_CLASSES = {"vae": ("diffusers", "AutoencoderKL"), "unet": ("diffusers", "UNet2DConditionModel"),
                    "text_encoder": ("transformers", "CLIPTextModel"), "tokenizer": ("transformers", "CLIPTokenizer")}
