"""Writing files safely: the project's one writable-folder probe and its one atomic write.

probe_writable(folder)            # OSError now, not after minutes of work
with atomic_write(path) as f:     # a kill leaves the old file or the new one, never half of one
    torch.save(obj, f)
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def probe_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` if it is missing and open a temporary file in it; raise the OSError if either fails."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass


def temporary_name(path: Path) -> Path:
    """The hidden file beside ``path`` that ``atomic_write`` writes first (unique per process and call)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` only once written whole: a temporary file beside
    it, fsynced, renamed into place, and the rename fsynced. On any error (or a kill between
    steps) ``path`` keeps its previous contents and the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    # O_EXCL: never write through someone else's file; 0o666 less the umask, as open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename itself durable (POSIX); a no-op where folders can't be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
