"""Feedback: the SQLite store of prompts, responses and judgements, its exporters, and the terminal rater."""
