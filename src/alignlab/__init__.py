"""alignlab: shape a small open LLM's behaviour through preference and reinforcement feedback."""

__version__ = "0.1.0"
