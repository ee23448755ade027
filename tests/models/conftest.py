"""Fixtures of the model tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def hf_log():
    """What transformers logs (its load report among it), seen through a handler on its logger."""
    import logging

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    keep = Keep()
    logging.getLogger("transformers").addHandler(keep)
    yield keep.lines
    logging.getLogger("transformers").removeHandler(keep)
