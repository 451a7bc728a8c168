"""Errors that are the user's to fix: the command line prints them as one line, no traceback."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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
        # The shell's convention for a process stopped by a signal: 128 + its number.
        self.exit_code = 130 if signal_name == "SIGINT" else 143


def root_cause(err: BaseException) -> BaseException:
    """``err`` with Hydra's ``InstantiationException`` wrappers taken off: what the built class raised."""
    from hydra.errors import InstantiationException

    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def user_error(err: BaseException) -> UserError | None:
    """The user's error inside ``err`` (through Hydra's wrappers), or None for a bug."""
    err = root_cause(err)
    return err if isinstance(err, UserError) else None


@contextmanager
def user_errors(command: str | None = None) -> Iterator[None]:
    """The error boundary of every command (``src.generate``, ``src.evaluate``, the classifier and
    quality commands; ``src.train``'s ``main`` decides with the same ``user_error``): a user's
    error ends it with one ``error:`` line and exit status 1; anything else (a bug) keeps its
    traceback. ``command``: the module, for the line that asks for a missing ``ckpt_path``."""
    try:
        yield
    except MissingMandatoryValue:
        if command is None:
            raise
        print(f"error: give the checkpoint: python -m {command} ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as err:
        if (shown := user_error(err)) is None:
            raise
        print(f"error: {shown}", file=sys.stderr)
        raise SystemExit(1) from None


_HYDRA_STDERR: list = []  # (the real stderr, the buffer) while Hydra composes the config
_DETAIL_LINES = ("full_key:", "object_type=", "reference_type=", "Set the environment variable HYDRA_FULL_ERROR")


def hydra_error_line(text: str) -> str:
    """Hydra's multi-line report of a composition error (an unknown key, a bad override) as one
    line: its sentences joined, a list of options after "...:" inlined, the search path left out."""
    parts: list[str] = []
    for raw in text.strip().splitlines():
        line = raw.strip()
        if line.startswith("Config search path"):
            break
        if not line or line.startswith(_DETAIL_LINES):
            continue
        if raw[:1].isspace() and parts and parts[-1].endswith((":", ",")):  # an indented list item
            parts[-1] += f" {line},"
            continue
        if parts and parts[-1].endswith(","):
            parts[-1] = parts[-1][:-1] + "."
        parts.append(line if line.endswith((".", ":", "?")) else line + ".")
    if parts and parts[-1].endswith(","):
        parts[-1] = parts[-1][:-1] + "."
    return " ".join(parts)


def release_stderr() -> None:
    """Hydra has composed the config: stderr is the terminal's again (with what was held back)."""
    if _HYDRA_STDERR:
        real, buffer = _HYDRA_STDERR.pop()
        sys.stderr = real
        real.write(buffer.getvalue())


def run_entry_point(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` entry point so that Hydra's own errors are one ``error:`` line.

    Hydra reports a bad command line (``trainer.foo=1``, an unparsable override) on several
    lines and exits before the task runs; no hook comes earlier. So stderr is held back until
    the config is composed (``release_stderr``: the first thing each task, and the run-folder
    check, does), and a failure before that is condensed to one line.
    """
    real, buffer = sys.stderr, io.StringIO()
    _HYDRA_STDERR.append((real, buffer))
    sys.stderr = buffer
    try:
        main()
    except SystemExit as exit_:
        if _HYDRA_STDERR and exit_.code not in (0, None) and buffer.getvalue().strip():
            _HYDRA_STDERR.clear()
            sys.stderr = real
            print(f"error: {hydra_error_line(buffer.getvalue())}", file=real)
            raise SystemExit(exit_.code) from None
        raise
    finally:
        release_stderr()


def _error_classes(base: type) -> list[type]:
    return [base, *(sub for cls in base.__subclasses__() for sub in _error_classes(cls))]


def worker_error(err: BaseException) -> Exception | None:
    """The project's error that a spawned DDP worker raised (torch's ``ProcessRaisedException``),
    rebuilt in the parent; None for others.

    torch sends only the worker's formatted traceback across the process boundary, whose last
    line is ``module.Class: message``: so a diverged ``trainer=ddp_cpu`` run ends in the same
    one-line error as a single-process one, and a sweep goes on past it.
    """
    known = {f"{cls.__module__}.{cls.__qualname__}": cls for cls in (NonFiniteLossError, *_error_classes(UserError))}
    lines = str(err).strip().splitlines()
    name, _, message = (lines[-1] if lines else "").partition(": ")
    return known[name](message) if name in known else None
