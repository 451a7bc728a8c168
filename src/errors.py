"""Errors that are the user's to fix: the command line prints them as one line, no traceback."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and what it accepts."""


class NonFiniteLossError(RuntimeError):
    """Training diverged: a loss became NaN or infinite. The message names the loss and the batch."""


class CheckpointError(ConfigError):
    """A checkpoint is missing, unreadable, from another model, or names code outside the project."""
