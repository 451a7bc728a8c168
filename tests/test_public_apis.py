"""The project's code, its tests and its benchmarks reach Lightning and Hydra through their public APIs only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
# Attribute access to a private name on the objects Lightning and Hydra hand us, and imports of
# their private modules. (torch's documented `_foreach_*` ops and our own `self._x` are fine.)
PRIVATE = re.compile(
    r"\b(trainer|callback|fit_loop|epoch_loop|strategy|logger|job_return|hydra_cfg|pl_module)\._[a-z]"
    r"|\b(lightning|hydra)(\.\w+)*\._\w+"
    r"|_logger_connector|_batches_that_stepped|_internal\b"
)


@pytest.mark.parametrize("folder", ["src", "tests", "bench"])
def test_no_private_lightning_or_hydra_api(folder):
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != Path(__file__).resolve()  # this file names the patterns it looks for
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if PRIVATE.search(line.split("#")[0])
    ]
    assert found == []


def test_the_pattern_catches_what_it_is_for():
    for line in (
        "trainer._logger_connector.should_update_logs",
        "x = trainer.fit_loop.epoch_loop._batches_that_stepped",
        "from hydra._internal.utils import _locate",
        "callback._save_last_checkpoint(trainer)",
        "job_return._return_value",
    ):
        assert PRIVATE.search(line), line
    for line in ("torch._foreach_mul_(params, decay)", "self._sigint_pending = True", "trainer.save_checkpoint(path)"):
        assert not PRIVATE.search(line), line
