"""Bad input at every entry point: one ``error:`` line naming the key, before anything is written."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import command_cfg, make_cfg, write_tiny_dataset

from src.checkpoint import CheckpointError
from src.data.idx import IdxFormatError, write_idx
from src.data.provision import RAW_FILES, DataUnavailableError
from src.errors import ConfigError, user_error
from src.evaluate import evaluate
from src.generate import run as generate
from src.train import train

REPO = Path(__file__).resolve().parents[1]
ONE_EPOCH = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]


def _refused(cfg, out: Path, message: str) -> None:
    with pytest.raises(Exception) as caught:
        train(cfg)
    shown = user_error(caught.value)  # what every entry point prints as its one line
    assert shown is not None and "\n" not in str(shown), caught.value
    assert message in str(shown), str(shown)
    assert not (out / "checkpoints").exists() and not (out / "tensorboard").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["trainer.devices=3"],
            "trainer.devices=3 needs the project's DDP strategy (G and D train in separate backward passes): use trainer=ddp trainer.devices=3 for GPUs, or trainer=ddp_cpu",
        ),
        (
            ["model.optimizer._target_=torch.optim.SGD"],
            "model.optimizer (torch.optim.SGD) refuses its arguments ['betas', 'fused']: SGD.__init__() got an unexpected keyword argument 'betas'; drop the ones it does not take, e.g. ~model.optimizer.betas",
        ),
        (["++trainer.gradient_clip_val=1.0"], "trainer.gradient_clip_val=1.0: Lightning does not clip gradients under manual optimization"),
        (
            ["++trainer.accumulate_grad_batches=2"],
            "trainer.accumulate_grad_batches=2: Lightning does not accumulate under manual optimization (this module's two-optimizer step); raise data.batch_size instead",
        ),
        (["+trainer.foo=1"], "trainer (lightning.pytorch.Trainer) refuses its settings: Trainer.__init__() got an unexpected keyword argument 'foo'"),
        (
            ["+callbacks.sample_grid.colour=red"],
            "callbacks.sample_grid (src.callbacks.grids.SampleGrid) refuses its settings: SampleGrid.__init__() got an unexpected keyword argument 'colour'",
        ),
        (
            ["callbacks.interpolation_grid.steps=1"],
            "callbacks.interpolation_grid.steps must be an integer of at least 2 (a walk has two ends), got 1",
        ),
        (["threads=abc"], "threads must be a positive integer"),
    ],
)
def test_settings_lightning_or_the_module_would_refuse_late_are_refused_first(cfg_factory, tmp_path, overrides, message):
    _refused(cfg_factory(*overrides, *ONE_EPOCH), tmp_path, message)


def test_an_sgd_optimizer_without_adams_arguments_trains(cfg_factory):
    train(cfg_factory("model.optimizer._target_=torch.optim.SGD", "~model.optimizer.betas", *ONE_EPOCH))


def _data_root(tmp_path: Path, damage: str) -> Path:
    root = tmp_path / "data"
    folder = write_tiny_dataset(root, "fashion_mnist")
    if damage == "32x32":
        write_idx(folder / RAW_FILES["train_images"], np.zeros((240, 32, 32), dtype=np.uint8))
    elif damage == "no_train_images":
        write_idx(folder / RAW_FILES["train_images"], np.zeros((0, 28, 28), dtype=np.uint8))
        write_idx(folder / RAW_FILES["train_labels"], np.zeros((0,), dtype=np.uint8))
    return root


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        ("32x32", IdxFormatError, "train-images-idx3-ubyte holds 32x32 images; MNIST and Fashion-MNIST are 28x28"),
        ("no_train_images", IdxFormatError, "train-images-idx3-ubyte holds no images"),
    ],
)
def test_data_files_of_the_wrong_shape_or_empty_are_named(tmp_path, damage, error, message):
    out = tmp_path / "run"
    with pytest.raises(error, match=message):
        train(make_cfg(ONE_EPOCH, out, _data_root(tmp_path, damage)))
    assert not (out / "checkpoints").exists() and not (out / "tensorboard").exists()


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    _refused(
        make_cfg(ONE_EPOCH, tmp_path / "run", tmp_path / "data"),
        tmp_path / "run",
        "the data folder " + str(tmp_path / "data") + " is a file, not a folder",
    )


def test_an_empty_data_folder_that_cant_be_written_says_what_to_do(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and str(dir).startswith(str(tmp_path / "data")):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(
        DataUnavailableError,
        match=r"that folder can't be written to provision it \(Read-only file system\): run `make data DATA_DIR=<a writable folder>`",
    ):
        train(make_cfg(ONE_EPOCH, tmp_path / "run", tmp_path / "data"))


def test_resuming_from_a_weights_only_checkpoint_is_refused(cfg_factory, tmp_path):
    train(cfg_factory(*ONE_EPOCH, "+callbacks.model_checkpoint.save_weights_only=true", output_dir=tmp_path / "first"))
    weights_only = tmp_path / "first" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"holds weights only \(written with save_weights_only=true\): training can't resume from it"):
        train(cfg_factory(*ONE_EPOCH, "trainer.max_epochs=2", f"ckpt_path={weights_only}", output_dir=tmp_path / "second"))
    assert not (tmp_path / "second" / "tensorboard").exists()


BAD_COMMAND_VALUES = [
    (["batch_size=0"], "batch_size must be a positive integer, got 0"),
    (["seed=abc"], "seed must be an integer in [0, 2**32), got 'abc'"),
    (["num_samples=abc"], "num_samples must be a positive integer, got abc"),
    (["threads=0"], "threads must be a positive integer, got 0"),
]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this case is a machine without a GPU")


@pytest.mark.parametrize(
    ("command", "overrides", "message"),
    [
        *[(command, overrides, message) for command in ("generate", "evaluate") for overrides, message in BAD_COMMAND_VALUES],
        ("generate", ["interpolate=true", "rows=0"], "rows must be a positive integer, got 0"),
        pytest.param("generate", ["device=cuda"], "device=cuda: torch sees no GPU on this machine; use device=cpu", marks=NO_GPU),
        pytest.param("evaluate", ["device=cuda"], "device=cuda: torch sees no GPU on this machine; use device=cpu", marks=NO_GPU),
    ],
)
def test_bad_command_values_are_refused_before_the_work(checkpoints, tmp_path, command, overrides, message):  # noqa: F811
    run = generate if command == "generate" else evaluate
    with pytest.raises(ConfigError) as caught:
        run(command_cfg(command, f"ckpt_path={checkpoints['gan']}", f"output={tmp_path / 'out'}", *overrides))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(checkpoints, tmp_path, monkeypatch, command):  # noqa: F811
    (tmp_path / "a_file").write_text("")
    run = generate if command == "generate" else evaluate
    with pytest.raises(ConfigError, match=r"output=.*a_file/out.* can't be written: .*a_file is not a writable folder"):
        run(command_cfg(command, f"ckpt_path={checkpoints['gan']}", f"output={tmp_path / 'a_file' / 'out'}"))


def test_evaluate_with_a_corrupt_run_config_needs_it_only_without_dataset_and_data_dir(checkpoints, tmp_path, data_root):  # noqa: F811
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra" / "config.yaml").write_text("data: [unclosed\n  : : :")
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(checkpoints["gan"].read_bytes())
    with pytest.raises(
        ConfigError, match=r"can't read the run's config .*config\.yaml .*: add data=mnist\|fashion_mnist and data_dir=\.\.\. to score without it"
    ):
        evaluate(command_cfg("evaluate", f"ckpt_path={ckpt}", "num_samples=50"))
    result = evaluate(command_cfg("evaluate", f"ckpt_path={ckpt}", "num_samples=50", "data=mnist", f"data_dir={data_root}"))
    assert result["data"] == "mnist" and result["fid"] is not None


def test_the_readme_quality_and_classifier_commands_run_as_written(tmp_path):
    """README: `python -m src.metrics.quality --data-dir data` and `python -m src.metrics.classifier`
    (the argparse default of a positional list with choices once made the first fail)."""
    root = tmp_path / "data"
    for name in ("mnist", "fashion_mnist"):
        write_tiny_dataset(root, name)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    quality = subprocess.run(
        [sys.executable, "-m", "src.metrics.quality", "--data-dir", str(root), "--num-samples", "50"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert quality.returncode == 0, quality.stderr[-2000:]
    assert [line.split(",")[0] for line in quality.stdout.splitlines()] == ['{"data": "mnist"', '{"data": "fashion_mnist"']
    check = subprocess.run(
        [sys.executable, "-m", "src.metrics.classifier", "check", "--data-dir", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert check.returncode == 0 and check.stdout.count("pinned classifier, SHA-256") == 2, check.stderr[-2000:]
    bad = subprocess.run(
        [sys.executable, "-m", "src.metrics.quality", "--data-dir", str(root), "cifar"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 1 and bad.stderr.strip() == "error: NAME 'cifar' is not one of fashion_mnist, mnist"


def test_the_quality_command_refuses_too_few_samples_before_reading_any_data(tmp_path, capsys):
    """`python -m src.metrics.quality --num-samples 5`: one line, before the classifier or data are
    read (the data folder here does not exist)."""
    from src.metrics.quality import main

    with pytest.raises(SystemExit) as stop:
        main(["--data-dir", str(tmp_path / "nowhere"), "--num-samples", "5", "mnist"])
    assert stop.value.code == 1
    assert capsys.readouterr().err.strip() == "error: --num-samples must be at least 20 (two images of every class), got 5"
