"""One exception type for everything a user can fix; the CLI prints it as one line."""

from __future__ import annotations


class AlignlabError(Exception):
    """A user-facing error: what went wrong, where, and how to fix it.

    ``str(err)`` is the single line the CLI prints.
    """

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        parts = [f"{where}: {what}" if where else what]
        if fix:
            parts.append(fix)
        super().__init__(" — ".join(parts))


# the exit code of a process that stopped because another process of its multi-process run failed: the launcher
# (alignlab.train.launch) names the process that failed on its own, not this one
PEER_STOPPED = 3
