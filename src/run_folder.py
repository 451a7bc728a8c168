"""A run folder is one run's: which files show a run there, what ``overwrite=true`` may delete,
the folder's lock, and Hydra's bookkeeping kept for a refused command.

Hydra runs :class:`CheckOutputDir` (``conf/hydra/default.yaml``) before it creates the run or
sweep folder; ``src/train.py`` calls the rest.
"""

from __future__ import annotations

import json
import os
import socket
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError, release_stderr, user_errors
from src.preflight.outputs import check_optuna_storage, check_output_dir

# The files a run of this project writes into its folder, by name; overwrite=true deletes these and
# nothing else, each only if its content is of the kind the name promises (``_written_by_a_run``).
# A checkpoint: our callbacks' names (and AtomicCheckpointIO's temporary files of them).
RUN_FILES = {
    "checkpoints": ("last*.ckpt", "best*.ckpt", ".last*.ckpt.*.tmp", ".best*.ckpt.*.tmp"),
    "tensorboard": ("events.out.tfevents.*", "hparams.yaml"),
    "samples": ("epoch_[0-9]*.png", "final.png", "interpolation_epoch_[0-9]*.png", "interpolation_final.png"),
    ".": ("metrics.json", "job_result.json", "error.txt"),
}
# What shows that a run already wrote into a folder (Hydra's own .hydra/ and train.log don't count).
RUN_MARKERS = ("checkpoints/last*.ckpt", "checkpoints/best*.ckpt", "tensorboard/events.out.tfevents.*", "metrics.json")
_PNG = b"\x89PNG\r\n\x1a\n"


def _written_by_a_run(path: Path) -> bool:
    """A regular file (not a link) whose content is of the kind its name promises."""
    if path.is_symlink() or not path.is_file():
        return False
    suffix = path.suffix
    try:
        if suffix == ".ckpt":
            return zipfile.is_zipfile(path)  # torch's checkpoint format
        if suffix == ".png":
            with open(path, "rb") as f:
                return f.read(len(_PNG)) == _PNG
        if suffix == ".json":
            return isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return False
    return True  # TensorBoard events, hparams.yaml, error.txt, temporary checkpoint files: their names are the project's


def existing_run(folder: str | os.PathLike) -> str | None:
    """The first file in ``folder`` that a run of this project wrote (relative), or None for a
    folder that holds no run (a user's own ``checkpoints/model.ckpt`` is not one)."""
    folder = Path(folder)
    for pattern in RUN_MARKERS:
        found = [path for path in sorted(folder.glob(pattern)) if _written_by_a_run(path)]
        if found:
            return str(found[0].relative_to(folder))
    return None


def run_outputs(folder: str | os.PathLike) -> list[Path]:
    """The files a run of this project wrote in ``folder`` (what ``overwrite=true`` deletes)."""
    folder = Path(folder)
    found: list[Path] = []
    for sub, patterns in RUN_FILES.items():
        place = folder / sub
        if place.is_symlink() or not place.is_dir():
            continue
        for pattern in patterns:
            found += [path for path in sorted(place.glob(pattern)) if _written_by_a_run(path)]
    return found


class FolderTaken(ConfigError):
    """The folder belongs to another run (it holds one, or one is using it): a command refused
    for this writes nothing there, not even its error (``src/train.py``)."""


def check_fresh_run_dir(folder: str | os.PathLike, ckpt_path: str | None, overwrite: bool) -> None:
    """Refuse to start a run over another run's files, unless resuming it or asked to overwrite.

    A resume in the same folder (``ckpt_path=last``, or a checkpoint inside it) continues that
    run; ``overwrite=true`` deletes its outputs first (``clear_run_dir``), never with a resume,
    and never through a link that leads out of the folder.
    """
    if overwrite and ckpt_path is not None:
        raise ConfigError(
            f"overwrite=true deletes the run's checkpoints and ckpt_path={ckpt_path} resumes from one: "
            "drop overwrite=true to resume, or ckpt_path to start over"
        )
    found = existing_run(folder)
    if found is None:
        return
    if overwrite:
        links = [sub for sub in RUN_FILES if sub != "." and (Path(folder) / sub).is_symlink()]
        if links:
            raise ConfigError(
                f"{Path(folder) / links[0]} is a symbolic link: overwrite=true deletes only what a run wrote inside its own folder; "
                "remove the link, or start over in another folder (hydra.run.dir=...)"
            )
        return
    if ckpt_path == "last" or (ckpt_path and Path(folder).resolve() in Path(ckpt_path).resolve().parents):
        return
    raise FolderTaken(
        f"{folder} already holds a run ({found}): resume it with ckpt_path=last, or start over in another folder "
        "(hydra.run.dir=...) or here with overwrite=true (deletes the run's checkpoints, TensorBoard events, samples and metrics.json)"
    )


def clear_run_dir(folder: str | os.PathLike) -> list[Path]:
    """``overwrite=true``: delete the files an earlier run of this project wrote in ``folder``
    (``run_outputs``), and the run's subfolders if that empties them; nothing where no run is,
    nothing of anyone else's, nothing through a link. Returns what was deleted."""
    if existing_run(folder) is None:
        return []
    deleted = run_outputs(folder)
    for path in deleted:
        path.unlink()
    for sub in RUN_FILES:
        place = Path(folder) / sub
        if sub != "." and place.is_dir() and not place.is_symlink() and not any(place.iterdir()):
            place.rmdir()
    return deleted


_HELD_LOCKS: dict[Path, FileLock] = {}


def _owner_file(folder: Path) -> Path:
    return folder / ".run.owner"


def acquire_run_lock(folder: str | os.PathLike, key: str = "hydra.run.dir") -> bool:
    """Lock the run folder for this process (a no-op if it holds it already); False if it did.

    A second run started into the same folder is refused with a line naming the first one's
    process. The lock is the operating system's (``filelock``): it ends with the process, so a
    killed run leaves no stale lock.
    """
    folder = Path(folder).resolve()
    if folder in _HELD_LOCKS:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".run.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = _owner_file(folder).read_text().strip() if _owner_file(folder).is_file() else "another process"
        raise FolderTaken(f"another run is using {folder} ({owner}): wait for it to end, or choose another folder ({key}=...)") from None
    _HELD_LOCKS[folder] = lock
    _owner_file(folder).write_text(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return True


def release_run_lock(folder: str | os.PathLike) -> None:
    folder = Path(folder).resolve()
    lock = _HELD_LOCKS.pop(folder, None)
    if lock is not None:  # the lock files go too: a finished run leaves only its own files
        _owner_file(folder).unlink(missing_ok=True)
        Path(lock.lock_file).unlink(missing_ok=True)
        lock.release()


@contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the run folder's lock for the block (unless this process holds it already: then keep it)."""
    acquired = acquire_run_lock(folder)
    try:
        yield
    finally:
        if acquired:
            release_run_lock(folder)


# Hydra's own bookkeeping in a run folder, which it rewrites as a job starts: kept as it was when
# the command is refused (``keep_run_folder`` / ``restore_refused_run``).
HYDRA_FILES = (".hydra/*", "*.log")
_KEPT: dict[Path, dict[str, tuple[bytes, int, int] | None]] = {}


def keep_run_folder(folder: str | os.PathLike) -> None:
    """Before Hydra writes into an existing folder: remember its bookkeeping files (bytes, times)."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        return
    kept: dict[str, tuple[bytes, int, int] | None] = {".hydra": None} if not (folder / ".hydra").is_dir() else {}
    for pattern in HYDRA_FILES:
        for path in folder.glob(pattern):
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                kept[str(path.relative_to(folder))] = (path.read_bytes(), stat.st_atime_ns, stat.st_mtime_ns)
    _KEPT[folder] = kept


def run_folder_in_use(folder: str | os.PathLike) -> None:
    """The command passed every check and starts its work: what Hydra wrote stays."""
    _KEPT.pop(Path(folder).resolve(), None)


def restore_refused_run(folder: str | os.PathLike) -> None:
    """A refused command leaves an existing run folder as it found it: Hydra's rewritten
    ``.hydra/`` files and log get their bytes and times back, the files it added go, and the
    folder's lock is released."""
    folder = Path(folder).resolve()
    release_run_lock(folder)
    kept = _KEPT.pop(folder, None)
    if kept is None:
        return
    for pattern in HYDRA_FILES:
        for path in folder.glob(pattern):
            name = str(path.relative_to(folder))
            if name not in kept and path.is_file() and not path.is_symlink():
                path.unlink()
    for name, content in kept.items():
        if content is None:
            continue
        data, atime, mtime = content
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(atime, mtime))
    if ".hydra" in kept and (folder / ".hydra").is_dir() and not any((folder / ".hydra").iterdir()):
        (folder / ".hydra").rmdir()


def restore_refused_runs() -> None:
    """``restore_refused_run`` for every folder this process keeps or holds (Ctrl-C while starting)."""
    for folder in {*_KEPT, *_HELD_LOCKS}:
        restore_refused_run(folder)


def sweep_overrides(overrides: list[str]) -> list[str]:
    """What defines a sweep's jobs: its command-line overrides without the resume switch."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("ckpt_path", "overwrite")]


def check_sweep_resume(folder: Path, config: DictConfig) -> None:
    """``ckpt_path=last`` into a sweep folder that holds runs resumes that sweep (``src.sweeps.resume_job``
    decides per job): only the same grid, with the same overrides, and not an Optuna search (its
    trials are numbered from 0 again in each folder: it resumes from its ``storage=`` into a new folder)."""
    sweeper = OmegaConf.select(config, "hydra.sweeper") or {}
    if "optuna" in str(sweeper.get("_target_", "")).lower():
        raise ConfigError(
            f"an Optuna search resumes from its study, not its folder: run the same command with the same "
            f"hydra.sweeper.storage and study_name into a new hydra.sweep.dir (not {folder}), without ckpt_path=last"
        )
    saved = folder / "multirun.yaml"
    before = sweep_overrides(list(OmegaConf.select(OmegaConf.load(saved), "hydra.overrides.task") or [])) if saved.is_file() else None
    now = sweep_overrides(list(config.hydra.overrides.task))
    if before is not None and sorted(before) != sorted(now):
        raise ConfigError(
            f"hydra.sweep.dir {folder} holds a sweep started with other overrides ({' '.join(before) or 'none'}): "
            "resume it with exactly those and ckpt_path=last, or choose another hydra.sweep.dir"
        )


class CheckOutputDir(HydraCallback):
    """Hydra creates the run folder and writes its config there before ``main`` runs: check the
    folder first (writable, not another run's, not in use), for a one-line error and nothing
    written; and keep an existing folder's bookkeeping, for a command refused later
    (``restore_refused_run``). Only on rank zero: the other ranks of a DDP run share rank zero's folder.

    A sweep holds its folder's lock for the whole sweep: a second sweep into the same folder at
    the same time is refused before it starts a job (its jobs' refusals used to land in the first
    sweep's job folders and mark them failed)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        release_stderr()  # the config is composed: Hydra's own errors are behind us
        folder = self._resolve(config, "hydra.run.dir")
        with user_errors():  # the commands' one error boundary: one line, exit status 1
            check_output_dir(folder)
            if rank_zero_only.rank == 0:
                check_fresh_run_dir(folder, config.get("ckpt_path"), bool(config.get("overwrite")))
                acquire_run_lock(folder)  # held to the end of the process
                keep_run_folder(folder)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_run_lock(self._resolve(config, "hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        release_stderr()
        folder = self._resolve(config, "hydra.sweep.dir")
        with user_errors():
            check_output_dir(folder)
            check_optuna_storage(OmegaConf.select(config, "hydra.sweeper.storage"))
            if rank_zero_only.rank == 0:
                acquire_run_lock(folder, key="hydra.sweep.dir")  # held to the end of the sweep; first: a sweep in use is the news
                runs = [job for job in sorted(Path(folder).iterdir()) if job.is_dir() and existing_run(job)]
                try:
                    if runs and config.get("ckpt_path") == "last":
                        check_sweep_resume(Path(folder), config)
                    elif runs and not config.get("overwrite"):
                        raise ConfigError(
                            f"hydra.sweep.dir {folder} already holds the runs of a sweep ({runs[0].name}, ...): resume it with the same "
                            "overrides and ckpt_path=last, choose another hydra.sweep.dir, or add overwrite=true to replace them"
                        )
                except ConfigError:
                    release_run_lock(folder)
                    raise

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_run_lock(self._resolve(config, "hydra.sweep.dir"))

    @staticmethod
    def _resolve(config: DictConfig, key: str) -> str:
        """The folder's path. Its ``${hydra:runtime.choices.model}`` needs Hydra's HydraConfig, which
        Hydra sets only as the job starts, after this callback: set it from the same config as
        Hydra's own ``show_cfg`` does (writable afterwards). Resolving on that same object also
        caches its ``${now:...}``, so the folder checked is the folder Hydra then creates."""
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)
            OmegaConf.set_readonly(config.hydra, None)
        return str(OmegaConf.select(config, key))
