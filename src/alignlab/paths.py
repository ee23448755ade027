"""Where alignlab keeps converted models and other cached files."""

from __future__ import annotations

import os
from pathlib import Path

from alignlab.errors import AlignlabError


def home() -> Path:
    """alignlab's cache directory: ``$ALIGNLAB_HOME`` or ``~/.cache/alignlab``. A ``~`` in the variable is expanded
    (a quoted '~/x' made a folder named '~' in the working directory); one that cannot be made is one line naming it."""
    value = os.environ.get("ALIGNLAB_HOME")
    path = Path(value).expanduser() if value else Path(os.path.expanduser("~")) / ".cache" / "alignlab"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise home_error(err, path) from err
    return path


def home_error(err: OSError, path: Path) -> AlignlabError:
    """A place under alignlab's cache directory that cannot be written (a file in the way, a read-only or someone
    else's place), said with the variable that chose it."""
    value = os.environ.get("ALIGNLAB_HOME")
    why = "a file is in the way" if isinstance(err, (FileExistsError, NotADirectoryError)) else err.strerror
    return AlignlabError(f"{'ALIGNLAB_HOME=' + value + ': ' if value else ''}cannot write {path} ({why})",
                         fix="point ALIGNLAB_HOME at a writable directory")
