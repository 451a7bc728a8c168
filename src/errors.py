"""Errors that are the user's to fix: the command line prints them as one line, no traceback."""


class ConfigError(ValueError):
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
