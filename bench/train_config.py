"""The training config the bench scripts run (`epoch_time.py`, `host_reads.py`, `lightning_overhead.py`)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def compose_train_config(overrides: list[str], defaults: tuple[str, ...] = (), tmp_prefix: str = "bench-"):
    """`conf/train.yaml` with the script's ``defaults`` (each dropped where the user overrides the
    same key), then the user's ``overrides``. The run's files go to a fresh temporary folder
    unless ``paths.output_dir=...`` is given."""
    from hydra import compose, initialize_config_dir

    given = {_key(override) for override in overrides}
    output = [] if "paths.output_dir" in given else [f"paths.output_dir={tempfile.mkdtemp(prefix=tmp_prefix)}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*(d for d in defaults if _key(d) not in given), *output, *overrides])
