"""Crash-safe files: what a user relies on is never half-written, and a kill never leaves it missing.

- ``write_text`` / ``write_bytes`` / ``write_json``: write to a temporary name in the same directory, fsync,
  rename over the target, fsync the directory. A reader sees the old file or the new one, never a mix.
- ``replace_dir``: put a finished directory (written aside, e.g. ``.adapter.tmp``) in place of another.
  On Linux the two are swapped in one ``renameat2(RENAME_EXCHANGE)`` call, so the target name always holds
  a complete directory; elsewhere the old one is renamed aside first and ``recover_dir`` puts it back if a
  kill landed between the two renames.
- ``append_jsonl``: append one JSON line, first cutting off a torn last line a kill left behind, so a
  resumed run never glues its first record onto half of an old one.
- ``read_jsonl``: every complete record; a torn last line is skipped with a note, a bad line elsewhere is
  one clear error with file:line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from alignlab.errors import AlignlabError


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_in_the_way(path: str | Path) -> Path | None:
    """The first of ``path`` and its parents that exists as a file, so no directory can be made there; None if none."""
    path = Path(path)
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def claim_dir(path: str | Path, command: str, writes: str, force: bool = False) -> Path:
    """``path`` as a workflow's own output folder (created, and marked as ``command``'s): refused in one line when a
    file is in the way, or when it already holds files ``command`` did not write (a project: its data, reward spec and
    runs would be overwritten or replaced) unless ``force``."""
    path = Path(path)
    if (blocker := file_in_the_way(path)) is not None:
        raise AlignlabError(f"{blocker} is a file, so {path} cannot be made", fix="pass a new --out directory")
    mark = path / f".alignlab-{command}"
    if path.is_dir() and any(path.iterdir()) and not mark.exists() and not force:
        held = ", ".join(sorted(p.name for p in path.iterdir())[:4])
        raise AlignlabError(f"{path} holds files `alignlab {command}` did not write ({held}, ...); it writes {writes} "
                            "there, over what is there", fix="pass a new --out directory, or --force to write there")
    path.mkdir(parents=True, exist_ok=True)
    mark.touch()
    return path


def check_out(path: str | Path) -> Path:
    """``path`` as an output file: refused in one line when it names a directory, lies under a file, or is there as
    something else than a regular file (a FIFO, a device, a socket: renaming a file over it replaced it), before any
    work is done. A symbolic link is judged by what it points to, which is what gets written."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    if real.is_dir():
        raise AlignlabError(f"{path} is a directory, not a file to write", fix=f"give a file path, e.g. {path / 'out.jsonl'}")
    if real.exists() and not real.is_file():
        shown = f"{path} (a link to {real})" if path.is_symlink() else str(path)
        kind = "a FIFO" if real.is_fifo() else "a socket" if real.is_socket() else "a device"
        raise AlignlabError(f"{shown} is {kind}, not a regular file: writing the output would replace it",
                            fix="give the path of a regular file")
    if (blocker := file_in_the_way(real.parent)) is not None:
        raise AlignlabError(f"cannot write {path}: {blocker} is a file, not a directory", fix="give another output path")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_modes(path: str | Path) -> None:
    """Give ``path`` (a file, or a directory and everything in it) the modes a plain ``open`` or ``mkdir`` would:
    temporary names (``mkstemp``, ``mkdtemp``) are created 0600 / 0700, so a finished file renamed into place
    kept them (an exported model another user or a container could not read)."""
    path, mask = Path(path), _umask()
    if path.is_dir():
        path.chmod(0o777 & ~mask)
        for sub in path.rglob("*"):
            sub.chmod((0o777 if sub.is_dir() else 0o666) & ~mask)
    else:
        path.chmod(0o666 & ~mask)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data`` (temp name, fsync, rename, fsync of the directory). Through a
    symbolic link, the file it points to is replaced and the link kept (renaming over the link replaced the link
    and left its target as it was)."""
    path = check_out(path)
    real = Path(os.path.realpath(path))
    real.parent.mkdir(parents=True, exist_ok=True)  # a link's target folder: callers make the link's own
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=str(real.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        usual_modes(tmp)
        os.replace(tmp, real)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(real.parent)
    return path


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return write_bytes(path, text.encode(encoding))


def write_json(path: str | Path, data: Any, **kwargs) -> Path:
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("default", str)
    return write_text(path, json.dumps(data, **kwargs))


def write_with(path: str | Path, writer: Callable[[str], Any]) -> Path:
    """Atomically produce ``path`` with a library writer that takes a file name (``safetensors.save_file``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        writer(str(tmp))
        fsync_tree(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_tree(path: str | Path) -> None:
    """fsync every file under ``path`` (or the file itself) and the directories holding them."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(root)


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange)
    return rc == 0


def recover_dir(target: str | Path) -> None:
    """Undo a replacement a kill interrupted: the target missing but its old copy aside -> put it back."""
    target = Path(target)
    old = _aside(target)
    if old.is_dir() and not target.exists():
        os.replace(old, target)
        fsync_dir(target.parent)
    elif old.exists() and target.is_dir():
        shutil.rmtree(old, ignore_errors=True)


def _placed(new: Path, target: Path) -> bool:
    """Rename ``new`` to the absent ``target``; False when another process put one there first (then it is replaced)."""
    import errno

    try:
        os.replace(new, target)
        return True
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise


def replace_dir(new: str | Path, target: str | Path) -> Path:
    """Put the finished directory ``new`` at ``target`` (files fsynced first); the old one goes only after.

    At every moment ``target`` names either the old complete directory or the new one (on Linux); elsewhere
    a kill between the two renames leaves the old one at ``.<name>.old``, which ``recover_dir`` restores.
    """
    new, target = Path(new), Path(target)
    usual_modes(new)
    fsync_tree(new)
    recover_dir(target)
    if not target.exists() and _placed(new, target):
        fsync_dir(target.parent)
        return target
    if _exchange(new, target):  # target is now the new directory, ``new`` holds the old one
        fsync_dir(target.parent)
        shutil.rmtree(new, ignore_errors=True)
        return target
    old = _aside(target)
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(new, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)
    return target


def _cut_torn_tail(fh) -> None:
    """``fh`` open in 'a+b' / 'r+b': drop bytes after the last newline (a line a kill cut short)."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return
    pos, chunk = size, 4096
    while pos > 0:
        start = max(0, pos - chunk)
        fh.seek(start)
        block = fh.read(pos - start)
        i = block.rfind(b"\n")
        if i >= 0:
            fh.truncate(start + i + 1)
            return
        pos = start
    fh.truncate(0)


def append_jsonl(path: str | Path, *records: dict) -> None:
    """Append records as JSON lines, flushed; a torn last line left by a kill is cut off first."""
    data = b"".join((json.dumps(r, default=str) + "\n").encode("utf-8") for r in records)
    with open(path, "a+b") as fh:
        _cut_torn_tail(fh)
        fh.seek(0, os.SEEK_END)
        fh.write(data)
        fh.flush()


def read_jsonl(path: str | Path, note: Callable[[str], Any] | None = None) -> list[dict]:
    """Every JSON object in a log file; a torn last line (a kill mid-write) is skipped with a note."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    complete = lines[-1] == ""  # the file ends with a newline: the last line was written whole
    out = []
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    for k, (i, line) in enumerate(numbered):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            if k == len(numbered) - 1 and not complete:
                if note is None:
                    from alignlab.progress import console

                    def note(m):
                        console.print(f"[yellow]{m}[/]")

                note(f"{path}:{i}: skipped a torn last line (the run was stopped while writing it)")
                break
            raise AlignlabError(f"invalid JSON in a log line ({err.msg})", where=f"{path}:{i}",
                                fix="delete or repair that line") from err
    return out


def rewrite_jsonl(path: str | Path, records: list[dict]) -> None:
    """Atomically replace a JSONL file with ``records``."""
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in records))


def sweep_stale(parent: str | Path, prefix: str, older_than_s: float = 3600.0) -> int:
    """Remove ``parent``'s directories named ``prefix``* untouched for ``older_than_s``: the temp directories a process
    killed mid-conversion or mid-export left (hundreds of MB each); a younger one may be another process's, at work.
    Returns how many went."""
    import time

    parent, gone = Path(parent), 0
    if not parent.is_dir():
        return 0
    for d in parent.glob(prefix + "*"):
        try:
            if d.is_dir() and not d.is_symlink() and time.time() - d.stat().st_mtime > older_than_s:
                shutil.rmtree(d, ignore_errors=True)
                gone += 1
        except OSError:
            continue
    return gone


@contextlib.contextmanager
def exclusive(lock_file: str | Path, what: str):
    """Hold an exclusive lock on ``lock_file`` for the block; a second process asking for it gets one clear error
    instead of working beside the first (the kernel lets the lock go with the process, so a kill leaves none)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no guard
        yield
        return
    from alignlab.errors import AlignlabError

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlignlabError(f"{what} is already running here ({lock_file.parent})",
                                fix="wait for it to finish or stop it first") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def building(target: Path, doing: str):
    """Hold the lock of building ``target`` (a converted model, a trained persona scorer): a second process building
    the same one waits for the first, then finds its result; the kernel lets the lock go with a killed process. The
    lock file goes when done, so nothing is left beside what was built: one who waited on it finds the result (or,
    after a failure, tries again beside a newcomer, which costs time only). ``doing`` says what the first process is
    doing while the second waits ("converting into")."""
    from alignlab.paths import home, home_error

    path = target.parent / f".{target.name}.lock"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = _open_lock(path)
    except OSError as err:
        if not os.access(target.parent, os.W_OK):
            if not target.resolve().is_relative_to(home().resolve()):  # a project's own cache, not ALIGNLAB_HOME's
                raise AlignlabError(f"cannot write {target.parent} ({err.strerror or err})",
                                    fix=f"make {target.parent} writable") from err
            raise home_error(err, target.parent) from err
        lock = None  # a lock file this user cannot open (mode 000) in a directory it can write: no guard, as before
    if lock is None:
        yield
        return
    try:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): no guard
            yield
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            from alignlab.progress import console

            console.print(f"[alignlab] waiting for another process {doing} {target}", markup=False)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):  # another user's lock file in a shared (sticky) directory stays
                if os.stat(path).st_ino == os.fstat(lock).st_ino:  # not a newcomer's lock file
                    path.unlink()
    finally:
        os.close(lock)


def _open_lock(path: Path) -> int:
    """The lock file, read-only: flock needs no write access, so one left by another user in a shared models directory
    (mode 1777) serves as well ("a+" was refused, and named ALIGNLAB_HOME unwritable). An existing one is opened without
    O_CREAT, which protected_regular refuses on another user's file in a sticky directory."""
    while True:
        with contextlib.suppress(FileNotFoundError):
            return os.open(path, os.O_RDONLY)
        with contextlib.suppress(FileExistsError):  # made by another process between the two opens
            return os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o666)
