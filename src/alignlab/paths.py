"""Where alignlab keeps converted models and other cached files."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """alignlab's cache directory: ``$ALIGNLAB_HOME`` or ``~/.cache/alignlab``."""
    root = os.environ.get("ALIGNLAB_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "alignlab")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
