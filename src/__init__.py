"""lightning-gan: GANs and conditional GANs on MNIST / Fashion-MNIST with Lightning + Hydra."""

import os
import signal
import sys

_CTRL_C_SEEN = False


def _note_ctrl_c(signum, frame) -> None:
    """A Ctrl-C while the command imports its libraries is noted, not raised there: raised in the
    middle of importing numpy or torch, a KeyboardInterrupt can be swallowed by a library's
    ``except`` and surface later as another error (a RecursionError from a half-imported numpy),
    or abort the process from inside a C++ extension. ``imports_done`` raises it a moment later;
    a second Ctrl-C raises at once."""
    global _CTRL_C_SEEN
    _CTRL_C_SEEN = True
    signal.signal(signal.SIGINT, signal.default_int_handler)


def imports_done() -> None:
    """The first thing each command does once its imports are done: Python's own Ctrl-C again,
    and the KeyboardInterrupt of a Ctrl-C pressed while importing."""
    if signal.getsignal(signal.SIGINT) is _note_ctrl_c:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _CTRL_C_SEEN:
        raise KeyboardInterrupt


def _ctrl_c_is_one_line(kind, value, traceback) -> None:
    """A Ctrl-C while a command starts (importing torch, composing the config) is one line, not
    a traceback through the import machinery; the exit status stays the shell's for SIGINT."""
    if issubclass(kind, KeyboardInterrupt) or (_CTRL_C_SEEN and not issubclass(kind, SystemExit)):
        print("error: interrupted by Ctrl-C while starting: nothing was trained or written", file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # dies by SIGINT, as an unhandled KeyboardInterrupt does
        return
    _python_hook(kind, value, traceback)


# Only for the project's commands (python -m src.<command>: runpy imports this package while
# argv[0] is still "-m"), never for a program or a test that imports the package.
if sys.argv[:1] == ["-m"]:
    _python_hook = sys.excepthook
    sys.excepthook = _ctrl_c_is_one_line
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored (nohup, `cmd &`)
        signal.signal(signal.SIGINT, _note_ctrl_c)
