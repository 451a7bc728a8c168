"""Errors that are the user's to fix: the command line prints them as one line, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf import MissingMandatoryValue


class UserError(Exception):
    """An error that is the user's to fix: every command prints it as one ``error:`` line, exit status 1."""


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message names the key and what it accepts."""


class NonFiniteLossError(RuntimeError):
    """Training diverged: a loss became NaN or infinite. The message names the loss and the batch."""


class CheckpointError(ConfigError):
    """A checkpoint is missing, unreadable, from another model, or names code outside the project."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM stopped training; the message says where the run can resume from."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        # The shell's convention for a process stopped by a signal: 128 + its number.
        self.exit_code = 130 if signal_name == "SIGINT" else 143


def user_error(err: BaseException) -> UserError | None:
    """The user's error inside ``err`` (through Hydra's ``InstantiationException`` wrappers), or None for a bug."""
    from hydra.errors import InstantiationException

    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err if isinstance(err, UserError) else None


@contextmanager
def user_errors() -> Iterator[None]:
    """The error boundary of a command: a user's error ends it with one ``error:`` line and exit status 1;
    anything else (a bug) keeps its traceback."""
    try:
        yield
    except Exception as err:
        if (shown := user_error(err)) is None:
            raise
        print(f"error: {shown}", file=sys.stderr)
        raise SystemExit(1) from None


@contextmanager
def checkpoint_command_errors(command: str) -> Iterator[None]:
    """For the commands that read a checkpoint (``src.generate``, ``src.evaluate``): a missing
    ``ckpt_path`` or a bad checkpoint or value ends the command with one ``error:`` line, exit 1."""
    try:
        yield
    except MissingMandatoryValue:
        print(f"error: give the checkpoint: python -m {command} ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as err:  # a user's error (CheckpointError, ConfigError, ...): one line; a bug: its traceback
        if (shown := user_error(err)) is None:
            raise
        print(f"error: {shown}", file=sys.stderr)
        raise SystemExit(1) from None
