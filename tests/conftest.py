"""Fixtures: the real Hydra config composed against small data written in the real IDX format."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from src.data.idx import write_idx
from src.data.provision import RAW_FILES, raw_folder

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
MODELS = ["gan", "cgan"]
DATASETS = ["mnist", "fashion_mnist"]
TRAIN_SIZE, TEST_SIZE = 240, 60


def write_tiny_dataset(root: Path, name: str, seed: int = 0) -> Path:
    """Every class present, images with class-dependent brightness so a label is learnable."""
    rng = np.random.default_rng(seed)
    folder = raw_folder(name, root)
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", TRAIN_SIZE), ("test", TEST_SIZE)):
        labels = np.arange(size, dtype=np.uint8) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(size, 28, 28), dtype=np.uint8)
        images[:, 10:18, 10:18] = (labels[:, None, None] * 25).astype(np.uint8)
        write_idx(folder / RAW_FILES[f"{split}_images"], images)
        write_idx(folder / RAW_FILES[f"{split}_labels"], labels)
    return folder


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name in DATASETS:
        write_tiny_dataset(root, name)
    return root


def make_cfg(overrides: list[str], output_dir: Path, data_root: Path) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "trainer=cpu",
                f"paths.data_dir={data_root}",
                f"paths.output_dir={output_dir}",
                "data.sources=[local]",
                "data.batch_size=32",
                "data.val_batch_size=30",
                "trainer.log_every_n_steps=1",
                "callbacks.sample_quality.num_samples=100",  # the tiny test split has 60 images; 10,000 fakes would only cost time
                "+trainer.enable_model_summary=false",
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


@pytest.fixture
def cfg_factory(tmp_path, data_root):
    def factory(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return make_cfg(list(overrides), output_dir or tmp_path, data_root)

    return factory


REPO = Path(__file__).resolve().parents[1]
_STARTED: list[subprocess.Popen] = []


def start_module(module: str, *args: str, **popen) -> subprocess.Popen:
    """``python -m MODULE ARGS`` from the repository root, as a user starts it (the one runner of the CLI tests)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}
    # Tests started in the background (`cmd &` in a script, nohup) inherit SIGINT ignored, and an
    # ignored signal stays ignored across exec: the Ctrl-C test's run would never see its signal
    # and train on. A handler, unlike SIG_IGN, is reset to the default on exec.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env, text=True, **popen)
    finally:
        signal.signal(signal.SIGINT, previous)
    _STARTED.append(process)
    return process


def run_module(module: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``start_module`` to the end, its output captured."""
    process = start_module(module, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m src.train ARGS``, output captured."""
    return run_module("src.train", *args)


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    """A test that fails while its run trains on (1000 epochs) must not leave it eating the CPU."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()
