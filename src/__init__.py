"""lightning-gan: GANs and conditional GANs on MNIST / Fashion-MNIST with Lightning + Hydra."""

import sys


def _ctrl_c_is_one_line(kind, value, traceback) -> None:
    """A Ctrl-C while a command starts (importing torch, composing the config) is one line, not
    a traceback through the import machinery; the exit status stays the shell's for SIGINT."""
    if issubclass(kind, KeyboardInterrupt):
        print("error: interrupted by Ctrl-C while starting: nothing was trained or written", file=sys.stderr)
        return
    _python_hook(kind, value, traceback)


# Only for the project's commands (python -m src.<command>: runpy imports this package while
# argv[0] is still "-m"), never for a program or a test that imports the package.
if sys.argv[:1] == ["-m"]:
    _python_hook = sys.excepthook
    sys.excepthook = _ctrl_c_is_one_line
