"""A run folder is one run's: no silent overwrite of another run, one run at a time, and a sweep
that goes on past a job that fails or is interrupted (its row says so)."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import folder_files, start_train, tiny_run

from src.errors import ConfigError
from src.run_folder import acquire_run_lock, release_run_lock
from src.train import train

REPO = Path(__file__).resolve().parents[1]
ONE_EPOCH = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]


def test_a_fresh_run_into_a_folder_holding_a_run_is_refused_and_overwrite_starts_over(cfg_factory, tmp_path):
    train(cfg_factory(*ONE_EPOCH))
    before = folder_files(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"already holds a run \(checkpoints/.*\.ckpt\): resume it with ckpt_path=last, or start over in another folder .* or here with overwrite=true",
    ):
        train(cfg_factory(*ONE_EPOCH))
    assert folder_files(tmp_path) == before  # nothing written, nothing replaced
    train(cfg_factory(*ONE_EPOCH, "trainer.max_epochs=2", "ckpt_path=last"))  # resuming it is fine
    train(cfg_factory(*ONE_EPOCH, "overwrite=true"))  # and so is starting over, when asked
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1  # this run's own
    assert sorted(p.name for p in (tmp_path / "samples").iterdir() if p.name.startswith("epoch_")) == ["epoch_000.png"]
    assert not list(tmp_path.glob(".run.*"))  # the lock goes with the run


HOLD_LOCK = (
    "import sys, time; from src.run_folder import acquire_run_lock; acquire_run_lock(sys.argv[1]); print('locked', flush=True); time.sleep(120)"
)


def test_a_run_into_a_folder_another_run_is_using_is_refused_with_a_line_naming_it(cfg_factory, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            ConfigError,
            match=rf"^another run is using {tmp_path.resolve()} \(pid {holder.pid} on .*, started .*\): wait for it to end, or choose another folder",
        ):
            train(cfg_factory(*ONE_EPOCH))
        assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "tensorboard").exists()
    finally:
        holder.kill()
        holder.wait()
    train(cfg_factory(*ONE_EPOCH))  # a killed run leaves no stale lock


def test_the_run_lock_is_held_once_per_process_and_released():
    folder = Path.cwd() / "outputs" / "lock-test"
    try:
        assert acquire_run_lock(folder) is True
        assert acquire_run_lock(folder) is False  # already this process's: no deadlock, no second owner
    finally:
        release_run_lock(folder)
        assert not list(folder.glob(".run.*"))
        folder.rmdir()


@pytest.mark.slow
def test_the_command_line_refuses_an_existing_run_before_hydra_writes_into_it(tmp_path, data_root):
    run_dir = tmp_path / "run"
    first = start_train(*tiny_run(data_root, run_dir, *ONE_EPOCH), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert first.wait(timeout=300) == 0, first.communicate()[1][-3000:]
    before = folder_files(run_dir)
    second = start_train(*tiny_run(data_root, run_dir, *ONE_EPOCH, "model.lr=1e-3"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 1 and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already holds a run" in errors[0] and "ckpt_path=last" in errors[0], stderr[-3000:]
    assert folder_files(run_dir) == before  # .hydra/config.yaml included: still the first run's


@pytest.mark.slow
def test_a_sigterm_mid_sweep_leaves_the_interrupted_jobs_row(tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    args = [a for a in tiny_run(data_root, tmp_path / "unused", "trainer.max_epochs=1000") if not a.startswith("hydra.run.dir")]
    process = start_train(
        "--multirun", "model.lr=1e-4,2e-4", f"hydra.sweep.dir={sweep_dir}", *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not list(sweep_dir.glob("0_*/samples/epoch_001.png")):  # the first job is training
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(row["job"], row["status"], row["value"]) for row in rows] == [("0", "interrupted", "nan")]
    assert re.match(r"training interrupted by SIGTERM (in|at the end of) epoch ", rows[0]["error"]) and "resume with ckpt_path=" in rows[0]["error"]
    assert not list(sweep_dir.glob("1_*"))  # the signal stops the whole sweep, as it asks


@pytest.mark.slow
def test_a_sweep_into_a_folder_holding_a_sweeps_runs_is_refused(tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    args = [a for a in tiny_run(data_root, tmp_path / "unused", *ONE_EPOCH) if not a.startswith("hydra.run.dir")]
    first = start_train("--multirun", "model.lr=1e-4", f"hydra.sweep.dir={sweep_dir}", *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert first.wait(timeout=300) == 0, first.communicate()[1][-3000:]
    before = folder_files(sweep_dir)
    again = start_train("--multirun", "model.lr=2e-4", f"hydra.sweep.dir={sweep_dir}", *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 1 and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already holds the runs of a sweep" in errors[0] and "overwrite=true" in errors[0], stderr[-3000:]
    assert folder_files(sweep_dir) == before
