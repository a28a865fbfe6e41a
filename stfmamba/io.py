"""Atomic file writes: the one place that knows how a file reaches disk without a torn state.

A killed stage must leave either the old file or the new one, never half of one, and no temporary
files lying about. Every writer in the package goes through :func:`atomic_path`:

1. the new content is written to a temporary file *in the same folder* (so the final rename never
   crosses a file system),
2. the temporary file is flushed to disk (``fsync``),
3. it replaces the target with ``os.replace`` (atomic on POSIX and Windows),
4. the folder entry is flushed (``fsync`` of the directory, where the OS allows it),
5. on any error, including ``KeyboardInterrupt``, the temporary file is removed and the target is
   left as it was.

The temporary name keeps the target's suffix (``.a.npz`` → ``.a.npz.<random>.tmp.npz``) because
some writers choose the format from it (``cv2.imwrite``, ``np.savez``, ``matplotlib``). The file
gets the permissions a plain ``open()`` would give it (``0666`` minus the umask), not ``mkstemp``'s
``0600``.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

_UMASK = os.umask(0)   # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)

__all__ = ["atomic_path", "atomic_open", "write_bytes", "write_text", "write_json", "fsync_path"]


def fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    """Flush ``path`` (a file, or a folder entry with ``directory=True``) to disk."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open folders; the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it atomically becomes ``path``.

    Use it with writers that take a file name::

        with atomic_path(out / "model.pt") as tmp:
            torch.save(obj, tmp)

    Args:
        path: the final file. Its folder is created if missing.

    Yields:
        The temporary file's path (same folder, same suffix). The caller writes it; if the block
        raises, the temporary file is deleted and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600; give the file the mode open() would
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer did not create {tmp} (for {path})")
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent, directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing that atomically replaces ``path`` when the block ends.

    Args:
        path: the final file.
        mode: ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``.
        **kwargs: passed to :func:`open` (``newline=""`` for the csv module).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Atomically write ``obj`` as JSON with a trailing newline (``NaN`` stays as the caller made it)."""
    write_text(path, json.dumps(obj, indent=indent) + "\n")
