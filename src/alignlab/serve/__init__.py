"""Serving: a base model with persona adapters behind an OpenAI-compatible API, and the rating UI."""
