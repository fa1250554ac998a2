"""The Discffusion engine: Stable Diffusion cross-attention scores as an image-text matcher."""

from discff_cli.engine.config import DEFAULT_MODEL, EngineConfig

__all__ = ["DEFAULT_MODEL", "EngineConfig"]
