"""The files and folders a command will write, checked before its work: a failure after minutes
of training, sampling or scoring would lose that work.

    check_output_dir(run_dir)                          # a run folder that can be written
    check_output_files([png, npz], "output")           # names, existing folders, read-only files, the command's inputs
    check_optuna_storage("sqlite:///outputs/search.db")
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from src.errors import ConfigError
from src.files import probe_writable

_NAME_MAX, _PATH_MAX = 255, 4096  # Linux's, where the file system does not say


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to look up, a loop of links, ...
        return False


def _limit(path: Path, name: str, default: int) -> int:
    """The file system's limit ``name`` (``PC_NAME_MAX``, ``PC_PATH_MAX``) where ``path`` would be created."""
    folder = path.parent
    while not _exists(folder) and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default


def _short(name: str) -> str:
    return name if len(name) <= 40 else f"{name[:24]}...{name[-12:]}"


def check_output_files(
    paths: Iterable[str | os.PathLike],
    key: str | None = "output",
    temporary_suffix: str = "",
    inputs: Iterable[str | os.PathLike | None] = (),
) -> None:
    """Refuse, in one line and before anything is written, output files that can't be written
    (and create their missing folders).

    ``key``: the setting that names them (``output``, ``--output``); None for a default name
    beside the input, whose fix is to give ``output=``. ``temporary_suffix``: the writer writes
    ``<name><suffix>`` first and renames it into place (that name must fit too; a read-only file is
    replaced, not opened). ``inputs``: files the command reads, which an output must not overwrite.
    """
    paths = [Path(p) for p in paths]
    read = {Path(p).resolve() for p in inputs if p and _exists(Path(p))}
    shorter, other = (
        ("give a shorter output=PATH", "give output=<another path>") if key is None else (f"choose a shorter {key}", f"choose another {key}")
    )
    for path in paths:
        brief = Path(*(_short(part) for part in path.parts)) if path.parts else path  # a 300-byte name need not be shown whole
        shown = f"the output {brief}" if key is None else (f"{key} {brief}" if key.startswith("-") else f"{key}={brief}")
        name_max, path_max = _limit(path, "PC_NAME_MAX", _NAME_MAX), _limit(path, "PC_PATH_MAX", _PATH_MAX)
        for index, part in enumerate(path.parts):
            size = len(os.fsencode(part))
            suffix = temporary_suffix if index == len(path.parts) - 1 else ""
            if size + len(os.fsencode(suffix)) > name_max:
                written = f" ({size + len(os.fsencode(suffix))} with the suffix {suffix} of the temporary file written first)" if suffix else ""
                raise ConfigError(
                    f"{shown} can't be written: the name {_short(part)!r} is {size} bytes{written}, "
                    f"over the file system's limit of {name_max} bytes per name: {shorter}"
                )
        if len(os.fsencode(str(path) + temporary_suffix)) >= path_max:
            raise ConfigError(
                f"{shown} can't be written: the path is {len(os.fsencode(str(path)))} bytes, over the limit of {path_max - 1}: {shorter}"
            )
        if _exists(path) and path.is_dir():
            raise ConfigError(f"{shown} can't be written: it is an existing folder: {other}, or move that folder away")
        if _exists(path) and path.resolve() in read:
            raise ConfigError(f"{shown} is one of the command's own input files, which writing it would overwrite: {other}")
        if not temporary_suffix and _exists(path) and path.is_file() and not os.access(path, os.W_OK):
            raise ConfigError(f"{shown} can't be written: the file exists and is read-only: {other}, or make it writable (chmod u+w)")
    for path in paths:  # only now: this one creates the missing parent folders
        check_output_file(path, "the output beside the checkpoint" if key is None else key)


def check_output_file(path: str | os.PathLike, key: str = "output") -> None:
    """Fail before the work, not after it, if a command's output file can't be written there."""
    folder = Path(path).parent
    try:
        probe_writable(folder)
    except OSError as err:
        raise ConfigError(f"{key}={path} can't be written: {folder} is not a writable folder ({err.strerror or err})") from None


def check_output_dir(path: str | os.PathLike) -> None:
    """Fail before training, not at the first checkpoint, if the run folder can't be written."""
    try:
        probe_writable(path)
    except OSError as err:
        raise ConfigError(f"output folder {path} is not writable ({err.strerror or err})") from None


def check_optuna_storage(url: str | None) -> None:
    """An Optuna ``storage=sqlite:///<file>`` must be an SQLite database, or a new file in a folder
    that can be written: refused in one line before the search opens it (SQLAlchemy's traceback otherwise)."""
    if not url or not str(url).startswith("sqlite:///"):
        return
    path = Path(str(url)[len("sqlite:///") :].split("?", 1)[0])
    key = "hydra.sweeper.storage"
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"{key}={url}: {path} is not a file; give the path of an Optuna SQLite file")
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                db.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as err:
            raise ConfigError(
                f"{key}={url}: {path} is not an SQLite database ({err}); give another file, or delete this one to start a new study"
            ) from None
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{key}={url}: {path} can't be written; give a file the search can write")
        return
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        what = "is not a folder" if folder.exists() else "does not exist"
        if not folder.exists() or folder.is_file():
            what = "is a file, not a folder" if folder.is_file() else what
        else:
            what = "can't be written"
        raise ConfigError(f"{key}={url}: {folder} {what}; give a path in a writable folder (e.g. sqlite:///outputs/search.db)")
