"""Resolve model names, load base models with LoRA adapters, move adapters in and out."""

from alignlab.models.registry import REGISTRY, resolve_model
from alignlab.models.loading import load_base, load_tokenizer, load_for_inference, pick_device

__all__ = ["REGISTRY", "resolve_model", "load_base", "load_tokenizer", "load_for_inference", "pick_device"]
