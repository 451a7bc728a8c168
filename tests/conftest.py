"""Fixtures and helpers shared by the test modules: the real Hydra config composed against small
data written in the real IDX format, the command-line runners, trained checkpoints and step recorders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from src.data.idx import write_idx
from src.data.provision import RAW_FILES, raw_folder
from src.gan_module import logs_batch
from src.train import train

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
                f"data_dir={data_root}",
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


def start_train(*args: str, **popen) -> subprocess.Popen:
    """``python -m src.train ARGS`` started, not awaited (the signal and lock tests)."""
    return start_module("src.train", *args, **popen)


def tiny_run(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    """The command-line overrides of a small CPU run on the tiny data into ``run_dir``."""
    return [
        "trainer=cpu",
        f"data_dir={data_root}",
        f"hydra.run.dir={run_dir}",
        "data.sources=[local]",
        "data.batch_size=60",
        "data.val_batch_size=60",
        *extra,
    ]


def folder_files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time (to show a refusal touched nothing)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, data_root) -> dict[str, Path]:
    """last.ckpt of a one-epoch (two-batch) run per model, in a run folder with its .hydra/config.yaml."""
    found = {}
    for model in ("gan", "cgan"):
        run_dir = tmp_path_factory.mktemp(model)
        cfg = make_cfg([f"model={model}", "data=mnist", "trainer.max_epochs=1", "+trainer.limit_train_batches=2"], run_dir, data_root)
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        train(cfg)
        found[model] = run_dir / "checkpoints" / "last.ckpt"
    return found


def command_cfg(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(name, overrides=list(overrides))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def bare_trainer(**settings) -> L.Trainer:
    """One CPU epoch without validation, logger, checkpoints or progress bar: the step alone."""
    return L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **settings,
    )


def weights_of(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def weights_changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


class StepRecorder(L.Callback):
    """Records, around every optimizer step, whether G's and D's weights moved."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bool, bool]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        opt_g, opt_d = trainer.optimizers
        for name, opt in (("G", opt_g), ("D", opt_d)):
            opt.register_step_pre_hook(lambda *_: self._before(pl_module))
            opt.register_step_post_hook(lambda *_, name=name: self._after(name, pl_module))

    def _before(self, pl_module) -> None:
        self._g, self._d = weights_of(pl_module.generator), weights_of(pl_module.discriminator)

    def _after(self, name: str, pl_module) -> None:
        self.events.append((name, weights_changed(self._g, pl_module.generator), weights_changed(self._d, pl_module.discriminator)))


class HostReads(L.Callback):
    """Counts the tensor methods that copy a value back to the host: on a GPU each of them waits
    until every queued kernel has run, so a training step should make none it can avoid.

    Counts while ``active``; as a callback, it records each training batch's reads (its step and
    hooks) in ``per_batch`` and notes which batches were logging steps.
    """

    METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch) -> None:
        self.reads: list[str] = []
        self.active = False
        self.per_batch: dict[int, list[str]] = {}
        self.logging_batches: set[int] = set()
        for name in self.METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._counted(name, getattr(torch.Tensor, name)))

    def _counted(self, name, method):
        def counted(tensor, *args, **kwargs):
            if self.active:
                self.reads.append(name)
            return method(tensor, *args, **kwargs)

        return counted

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if logs_batch(trainer, pl_module.steps_trained + 1):
            self.logging_batches.add(batch_idx)
        self.reads, self.active = [], True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.active = False
        self.per_batch[batch_idx] = self.reads
