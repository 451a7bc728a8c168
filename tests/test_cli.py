"""The command line as a user types it: Hydra multirun sweeps and one-line errors (subprocesses)."""

from __future__ import annotations

import pytest
from conftest import run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TINY_RUN = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "data.batch_size=60",
    "data.val_batch_size=30",
    "data.sources=[local]",
]


@pytest.mark.slow
def test_multirun_over_two_learning_rates(tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    result = run_cli("--multirun", "model.lr=1e-4,5e-4", f"data_dir={data_root}", f"hydra.sweep.dir={sweep_dir}", *TINY_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    # One folder per job, named by its number and overrides.
    assert len(jobs) == 2
    assert jobs[0].startswith("0_") and "model.lr=0.0001" in jobs[0]
    assert jobs[1].startswith("1_") and "model.lr=0.0005" in jobs[1]
    for job in jobs:
        job_dir = sweep_dir / job
        assert (job_dir / ".hydra" / "config.yaml").is_file()
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        assert (job_dir / "samples" / "final.png").is_file()
        events = EventAccumulator(str(job_dir / "tensorboard"))
        events.Reload()
        assert "samples" in events.Tags()["images"]
        assert "train/g_loss" in events.Tags()["scalars"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_folders_named_like_the_defaults_are_checked_without_a_warning(tmp_path, data_root, mode):
    # conf/hydra/default.yaml names folders by time, model and data; the output-folder check
    # runs before Hydra sets up what ${hydra:...} reads.
    parent = tmp_path / mode
    name = "${now:%Y-%m-%d_%H-%M-%S}_${hydra:runtime.choices.model}_${hydra:runtime.choices.data}"
    folder_key = "hydra.run.dir" if mode == "run" else "hydra.sweep.dir"
    extra = [] if mode == "run" else ["--multirun", "model.lr=1e-4"]
    result = run_cli(*extra, f"data_dir={data_root}", f"{folder_key}={parent}/{name}", *TINY_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HydraConfig was not set" not in result.stderr and "UserWarning: Callback" not in result.stderr
    (folder,) = parent.iterdir()  # the folder checked is the one Hydra created: no stray empty twin
    assert folder.name.endswith("_gan_fashion_mnist")
    assert list(folder.rglob("last.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "error: data.batch_size must be a positive integer, got 0"),
        ("model.lr=-1", "error: model.lr must be a positive number, got -1"),
        ("threads=0", "error: threads must be a positive integer, got 0"),
        ("callbacks.sample_quality.every_n_epochs=0", "error: callbacks.sample_quality.every_n_epochs must be a positive integer, got 0"),
        ("data.sources=[local]", "not found in"),
    ],
)
def test_bad_input_is_one_line_and_nonzero_exit(tmp_path, override, message):
    result = run_cli(f"data_dir={tmp_path / 'no-data'}", f"hydra.run.dir={tmp_path / 'run'}", override)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_unknown_preset_names_the_choices(tmp_path):
    result = run_cli("model=foo", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert "Could not find 'model/foo'" in result.stderr and "cgan" in result.stderr
