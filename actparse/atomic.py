"""Atomic writes: every artifact and model file is written beside its final name and renamed into
place, so a reader never sees half a file and a failed write leaves the previous file as it was.

Parquet artifacts are written (and validated) by :mod:`actparse.schemas` through the same temporary
files; JSON, checkpoints and other files by :func:`write_json`, :func:`save_torch`,
:func:`write_text` or, for any writer, :func:`write_atomically`.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable


def one_line(exc: BaseException) -> str:
    """An error's text on one line (pyarrow's messages span several and may hold control bytes)."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(exc)).split())


class WriteError(OSError):
    """An artifact could not be written (disk full, no permission...); the previous one, if any,
    is left as it was."""


def write_error(path, exc: BaseException) -> WriteError:
    """A :class:`WriteError` naming ``path`` (the final name, not the temporary file) and the cause."""
    why = getattr(exc, "strerror", None) or one_line(exc)
    err = WriteError(f"{path}: cannot write ({why}); any previous file is unchanged")
    err.errno = getattr(exc, "errno", None)
    return err


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` (of this machine) still runs; this process counts as running."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or no valid id: leave it alone
        return True
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left beside it.

    Only names of this module's own pattern for that artifact count: ``.<name>.<pid>.<8 chars>.tmp``
    whose process ``pid`` is gone, and the pid-less ``.<name>.<8 chars>.tmp`` of older versions.
    A temporary file of a writer that still runs is left alone.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pat = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp$")
    removed = []
    for p in path.parent.iterdir():
        m = pat.match(p.name)
        if m and not (m.group(1) and pid_alive(int(m.group(1)))) and p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:  # another process cleaned it first
                pass
    return removed


def tmp_beside(path: Path) -> Path:
    """A new empty temporary file beside ``path`` (its folder made if need be), named for
    :func:`clean_stale_temps`; a failure is a :class:`WriteError` naming ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from exc
    os.close(fd)
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it to ``path``.

    The file gets the mode any new file gets under the process umask (0644 under the usual 022), not
    the temporary file's 0600, so others can read reports and metrics. An ``OSError`` (disk full, no
    permission...) becomes a :class:`WriteError` naming ``path``; the temporary file never stays behind."""
    path = Path(path)
    tmp = tmp_beside(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:  # disk full...: pyarrow's IO errors are OSErrors too
        raise write_error(path, exc) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json(obj, path: str | os.PathLike, indent: int | None = 2) -> Path:
    """Atomically write a JSON file (metrics, submissions, class lists)."""
    import json

    def dump(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=indent, sort_keys=False)
            fh.write("\n")

    return write_atomically(path, dump)


def save_torch(obj, path: str | os.PathLike) -> Path:
    """Atomically ``torch.save`` a checkpoint: written beside ``path``, then renamed into place."""
    import torch

    return write_atomically(path, lambda tmp: torch.save(obj, tmp))


def write_text(path: str | os.PathLike, text: str, encoding: str | None = None) -> Path:
    """Atomically write a text file."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding=encoding))
