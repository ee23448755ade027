"""Synthetic data: on-policy samples into the store, teachers, and matched persona pairs."""

from alignlab.synth.pairs import build_pairs, length_ratio, summary_line, write_pairs
from alignlab.synth.sample import default_prompts, prompt_rows, sample_responses
from alignlab.synth.teachers import EndpointTeacher, LocalTeacher, persona_prompt

__all__ = [
    "EndpointTeacher",
    "LocalTeacher",
    "build_pairs",
    "default_prompts",
    "length_ratio",
    "persona_prompt",
    "prompt_rows",
    "sample_responses",
    "summary_line",
    "write_pairs",
]
