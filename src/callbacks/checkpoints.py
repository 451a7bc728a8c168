"""The run's checkpoints while it trains: where they go, what they hold, how they are written, and
the one written when the run is interrupted. Reading them back safely is ``src/checkpoint.py``'s.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from src.checkpoint import MODEL_CONFIG_KEY, plain_config
from src.data.loaders import batches_in
from src.errors import CheckpointError
from src.files import atomic_write
from src.gan_module import GAN


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` quiet about a folder that already holds checkpoints.

    A ranked ModelCheckpoint warns at setup that its folder "exists and is not empty"; resuming
    with ``ckpt_path=last`` in the same run folder (as the README shows) is that case by design,
    and Lightning only learns that it is resuming after this check. It is the only case left: a
    fresh run into a folder that holds another run's checkpoints is refused before this
    (``src.run_folder.check_fresh_run_dir``), and ``overwrite=true`` empties the folder first.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)

    @property
    def state_key(self) -> str:
        # Lightning reads state_key on every callback hook call (to name a profiler section), ~16
        # times per batch here (two of them, eight hook rounds), and ModelCheckpoint formats it from
        # five settings each time: those settings are fixed at construction, so format it once.
        if "_state_key" not in self.__dict__:
            self.__dict__["_state_key"] = super().state_key
        return self.__dict__["_state_key"]


class StoreModelConfig(L.Callback):
    """Writes the composed model config (resolved to plain containers) into every checkpoint."""

    def __init__(self, model_config: DictConfig | Mapping[str, Any]) -> None:
        self.model_config = plain_config(model_config)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[MODEL_CONFIG_KEY] = self.model_config


def newest_checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The run's ModelCheckpoint that keeps the newest state (``last.ckpt``), whatever its place.

    Not ``trainer.checkpoint_callback``: that is the first one, which is the best-checkpoint
    callback here (conf/callbacks/default.yaml says why it comes first).
    """
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and (callback.save_last or (callback.monitor is None and callback.save_top_k == 1)):
            return callback
    return None


class CheckpointOnInterrupt(L.Callback):
    """On Ctrl-C or SIGTERM during fit, writes the last checkpoint (``last.ckpt``) before the run exits.

    Lightning already turns both into a clean stop (SIGTERM: its signal connector raises
    ``SIGTERMException`` at the end of the current batch; Ctrl-C: ``KeyboardInterrupt``, which this
    callback also defers to the end of the batch, then ``sys.exit(1)``) and calls ``on_exception``; what it does not do by default is save. ``ModelCheckpoint``'s own
    ``save_on_exception`` would also save on any error, e.g. a diverged run's NaN weights over the
    last good ``last.ckpt``: this saves on an interruption only. The checkpoint is mid-epoch, so
    resuming from it continues the run but is not bit-exact (end-of-epoch checkpoints are).
    """

    def __init__(self) -> None:
        self.signal: str | None = None  # "SIGINT" or "SIGTERM" once interrupted
        self.saved_path: str | None = None
        self.diverged: list[str] = []  # "G", "D": not saved, their weights had become non-finite
        self._sigint_pending = False
        self._handler_installed = False

    # Ctrl-C. Python raises KeyboardInterrupt at whatever bytecode runs when SIGINT arrives. Inside
    # torch.save (an epoch-end checkpoint) it breaks the zip writer, whose cleanup then raises
    # "RuntimeError: unexpected pos", so the run ended in a traceback with no interrupt checkpoint
    # (seen in tests/test_reliability.py's SIGINT test). So, as Lightning does for SIGTERM, the
    # handler only notes the signal, and the KeyboardInterrupt is raised at the end of the current
    # batch; a second Ctrl-C raises at once.

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._note_sigint)
            self._handler_installed = True

    def _note_sigint(self, signum: int, frame: Any) -> None:
        if self._sigint_pending:
            raise KeyboardInterrupt
        self._sigint_pending = True

    def _raise_if_interrupted(self) -> None:
        if self._sigint_pending:
            self._sigint_pending = False
            raise KeyboardInterrupt

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._raise_if_interrupted()

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._raise_if_interrupted()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._handler_installed and signal.getsignal(signal.SIGINT) == self._note_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self._handler_installed = False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal = "SIGINT"
        elif isinstance(exception, SIGTERMException):
            self.signal = "SIGTERM"
        else:
            return
        callback = newest_checkpoint_callback(trainer)
        if callback is None:
            return
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or trainer.fast_dev_run:
            return
        # Ctrl-C reaches every DDP rank at a different point, and saving meets at a barrier: only
        # SIGTERM, which Lightning broadcasts so that all ranks stop after the same batch, is safe there.
        if trainer.world_size > 1 and self.signal == "SIGINT":
            return
        # Weights that diverged since the last logging step must not replace the last good
        # last.ckpt (every rank holds the same weights, so under DDP all ranks skip together).
        if isinstance(pl_module, GAN) and (diverged := pl_module.diverged_nets()):
            self.diverged = diverged
            return
        # Where that callback keeps the newest state, written through the public
        # trainer.save_checkpoint as Lightning's own OnExceptionCheckpoint does (every rank calls
        # it: SIGTERM reaches them all after the same batch).
        name = callback.CHECKPOINT_NAME_LAST if callback.save_last else callback.filename
        path = Path(callback.dirpath) / f"{name}{callback.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        self.saved_path = str(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside it, fsyncs it, then renames it into place.

    Lightning's own writer goes through an fsspec transaction whose temporary file lies in the
    system temp folder: on another filesystem the final move is a copy that a kill can cut short,
    nothing is fsynced, and a killed write leaves its temporary file behind. Here a kill at any
    moment leaves either the previous checkpoint or the new one, plus at worst a ``.tmp`` file
    in the checkpoint folder.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        try:
            with atomic_write(path) as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as err:
            raise _write_error(err, path) from None


def _write_error(err: BaseException, path: Path) -> CheckpointError:
    """A failed checkpoint write as one line. torch's zip writer turns a full disk into a
    RuntimeError ("file write failed", then "unexpected pos" from its cleanup), not an OSError."""
    context = err.__context__
    full = any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in (err, context)) or "write failed" in str(err)
    intact = "the previous checkpoint is intact" if path.exists() else "nothing was written"
    if full:
        return CheckpointError(f"no space left on device writing {path}; {intact}")
    reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
    return CheckpointError(f"could not write {path} ({reason}); {intact}")


class RunPosition(L.Callback):
    """Where a run is (which epoch, how many of its batches, training or scoring), for the line an
    interruption prints. Lightning acts on a SIGTERM at the next batch boundary, which for one
    that lands while an epoch is scored is after that epoch: its loop counters then read the next
    epoch beside the last one's batch count ("in epoch 1 after 3 batches" for epoch 0's scoring)."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.batches = 0
        self.phase = "starting"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch, self.batches, self.phase = trainer.current_epoch, 0, "training"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches += batches_in(batch)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.epoch is not None:
            self.phase = "scoring"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.phase == "scoring":
            self.phase = "scored"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.phase = "ended"

    def describe(self) -> str:
        """``in epoch 2 after 17 batches``, ``while epoch 0 was scored (its 3 batches trained)``, ..."""
        if self.epoch is None:
            return "before the first batch"
        batches = f"{self.batches} batch{'es' if self.batches != 1 else ''}"
        if self.phase == "scoring":
            return f"while epoch {self.epoch} was scored (its {batches} trained)"
        if self.phase in ("scored", "ended"):
            return f"at the end of epoch {self.epoch} (its {batches} trained)"
        return f"in epoch {self.epoch} after {batches}"
