"""A refused command changes nothing: overwrite deletes only a run's own files, a refusal into a run
or sweep folder leaves every file as it was, and a name the config does not know is refused."""

from __future__ import annotations

import csv
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import folder_files, start_train, tiny_run
from PIL import Image

from src.errors import ConfigError
from src.preflight.outputs import check_optuna_storage
from src.preflight.training import check_config
from src.run_folder import FolderTaken, check_fresh_run_dir, clear_run_dir, existing_run
from src.train import train

REPO = Path(__file__).resolve().parents[1]
ONE_EPOCH = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]


def _users_own_files(folder: Path) -> None:
    """A user's folder that holds no run of this project, but folders of the same names."""
    (folder / "samples").mkdir(parents=True)
    Image.new("L", (4, 4)).save(folder / "samples" / "cat.png")
    (folder / "samples" / "notes.txt").write_text("mine\n")
    (folder / "checkpoints").mkdir()
    torch.save({"weights": torch.zeros(2)}, folder / "checkpoints" / "model.ckpt")


def test_overwrite_where_no_run_is_deletes_nothing(cfg_factory, tmp_path):
    _users_own_files(tmp_path)
    before = folder_files(tmp_path)
    assert existing_run(tmp_path) is None
    train(cfg_factory(*ONE_EPOCH, "overwrite=true"))
    after = folder_files(tmp_path)
    assert {name: after[name] for name in before if name in after} == before  # the user's files are as they were
    assert (tmp_path / "checkpoints" / "model.ckpt").is_file() and (tmp_path / "samples" / "notes.txt").is_file()


def test_overwrite_deletes_the_runs_own_files_and_nothing_else(cfg_factory, tmp_path):
    train(cfg_factory(*ONE_EPOCH))
    run_files = set(folder_files(tmp_path))
    (tmp_path / "samples" / "mine.png").write_bytes((tmp_path / "samples" / "final.png").read_bytes())
    (tmp_path / "checkpoints" / "keep.ckpt").write_bytes((tmp_path / "checkpoints" / "last.ckpt").read_bytes())
    (tmp_path / "tensorboard" / "README").write_text("mine\n")
    deleted = clear_run_dir(tmp_path)
    assert {str(path.relative_to(tmp_path)) for path in deleted} == {name for name in run_files if not name.startswith(".")}
    assert sorted(folder_files(tmp_path)) == ["checkpoints/keep.ckpt", "samples/mine.png", "tensorboard/README"]


def test_overwrite_with_a_resume_is_refused_before_anything_is_deleted(cfg_factory, tmp_path):
    train(cfg_factory(*ONE_EPOCH))
    before = folder_files(tmp_path)
    for ckpt in ("last", str(tmp_path / "checkpoints" / "last.ckpt")):
        with pytest.raises(ConfigError, match=rf"^overwrite=true deletes the run's checkpoints and ckpt_path={ckpt} resumes from one: drop"):
            train(cfg_factory(*ONE_EPOCH, "overwrite=true", f"ckpt_path={ckpt}"))
    assert folder_files(tmp_path) == before


def test_overwrite_never_follows_a_link_out_of_the_run_folder(cfg_factory, tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    train(cfg_factory(*ONE_EPOCH, output_dir=run))
    (run / "checkpoints").rename(elsewhere)
    (run / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    (run / "metrics.json").write_text("{}\n")  # still a run: it has its metrics
    before = folder_files(elsewhere)
    with pytest.raises(ConfigError, match=r"checkpoints is a symbolic link: overwrite=true deletes only what a run wrote inside its own folder"):
        check_fresh_run_dir(run, None, overwrite=True)
    assert folder_files(elsewhere) == before
    assert all(path.parent.name != "checkpoints" for path in clear_run_dir(run))  # and the deletion itself skips it
    assert folder_files(elsewhere) == before


def test_a_run_folder_taken_by_another_run_is_its_own_kind_of_refusal(cfg_factory, tmp_path):
    train(cfg_factory(*ONE_EPOCH))
    with pytest.raises(FolderTaken, match="already holds a run"):
        check_fresh_run_dir(tmp_path, None, overwrite=False)


@pytest.mark.slow
@pytest.mark.parametrize("override", ["recipe=nope", "recipe=cgan_mnsit"])
def test_an_unknown_recipe_is_refused_like_an_unknown_model(tmp_path, data_root, override):
    """Every model and data set has a default recipe (conf/recipe/default/), so the group is not
    optional and Hydra refuses a name it does not know, as for model=nope (an optional group's
    unknown option was dropped: the run trained with another recipe)."""
    line = _refused(*tiny_run(data_root, tmp_path / "run", *ONE_EPOCH, "model=cgan", "data=mnist", override))
    assert line.startswith(f"error: In 'train': Could not find 'recipe/{override.split('=')[1]}'. Available options in 'recipe': cgan, cgan_mnist,")
    assert not (tmp_path / "run").exists()


def test_an_optuna_storage_that_is_corrupt_or_cannot_be_written_is_one_line(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is no database" * 100)
    with pytest.raises(ConfigError, match=r"junk.db is not an SQLite database \(file is not a database\); give another file"):
        check_optuna_storage(f"sqlite:///{junk}")
    (tmp_path / "plain").write_text("a file where a folder should be\n")
    with pytest.raises(ConfigError, match=r"plain is a file, not a folder; give a path in a writable folder"):
        check_optuna_storage(f"sqlite:///{tmp_path / 'plain' / 'study.db'}")
    with pytest.raises(ConfigError, match=r"is not a file"):
        check_optuna_storage(f"sqlite:///{tmp_path}")
    good = tmp_path / "study.db"
    check_optuna_storage(f"sqlite:///{good}")  # a new file in a writable folder
    sqlite3.connect(good).execute("CREATE TABLE t (x)").connection.commit()
    check_optuna_storage(f"sqlite:///{good}")  # an existing database
    check_optuna_storage(None)
    check_optuna_storage("postgresql://host/db")  # not ours to check


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.generator.hidden_dims=[-5]", r"model.generator.hidden_dims must be a list of positive integers"),
        ("model.discriminator.hidden_dims=[512,0]", r"model.discriminator.hidden_dims must be a list of positive integers"),
        ("model=dcgan model.generator.base_channels=-1", r"model.generator.base_channels must be a positive integer"),
    ],
)
def test_a_layer_width_that_is_not_positive_is_one_line(cfg_factory, override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(cfg_factory(*override.split()))


@pytest.mark.skipif(torch.cuda.is_available(), reason="about machines without a GPU")
def test_a_gpu_accelerator_without_a_gpu_is_one_line(cfg_factory):
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=gpu: torch sees no GPU on this machine; use trainer=cpu"):
        check_config(cfg_factory("trainer.accelerator=gpu"))


def _refused(*args: str) -> str:
    process = start_train(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=300)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert process.returncode == 1 and "Traceback" not in stderr and len(errors) == 1, stderr[-3000:]
    return errors[0]


REFUSALS_INTO_A_RUN = [
    (["model=dcgan", "data=mnist", "ckpt_path=last"], "checkpoint"),  # another model and data set
    (["ckpt_path=last", "model.lr=abc"], "model.lr must be a positive number"),
    (["model.lr=1e-3"], "already holds a run"),
    (["overwrite=true", "ckpt_path=last"], "overwrite=true deletes the run's checkpoints"),
    (["ckpt_path=last", "recipe=nope"], "Could not find 'recipe/nope'"),
    (["ckpt_path=last", "trainer.devices=3"], "needs the project's DDP strategy"),
    (["ckpt_path=last", "+trainer.foo=1"], "trainer (lightning.pytorch.Trainer) refuses its settings"),
    (["ckpt_path=last", "model.generator.hidden_dims=[-5]"], "model.generator.hidden_dims must be"),
    (["ckpt_path=last", "++trainer.gradient_clip_val=1.0"], "does not clip gradients under manual optimization"),
    (["ckpt_path=last", "model.optimizer._target_=torch.optim.SGD"], "refuses its arguments"),
    (["ckpt_path={truncated}"], "truncated"),
    (["ckpt_path={classifier}"], "is a metrics classifier"),
]


@pytest.mark.slow
def test_every_refusal_into_an_existing_run_leaves_its_files_as_they_were(tmp_path, data_root):
    """Names, bytes and modification times of every file, Hydra's .hydra/config.yaml and log included:
    a later resume or evaluate of the run reads the run's own config, not the refused command's."""
    run_dir = tmp_path / "run"
    first = start_train(*tiny_run(data_root, run_dir, *ONE_EPOCH), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert first.wait(timeout=300) == 0, first.communicate()[1][-3000:]
    # Two files to resume from inside the run's folder (so the resume is not refused as a fresh run first).
    truncated = run_dir / "checkpoints" / "truncated.ckpt"
    truncated.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    classifier = run_dir / "checkpoints" / "classifier.pt"
    classifier.write_bytes((REPO / "src" / "metrics" / "weights" / "mnist.pt").read_bytes())
    files = {"truncated": truncated, "classifier": classifier}
    before = folder_files(run_dir)
    time.sleep(0.01)
    for extra, message in REFUSALS_INTO_A_RUN:
        line = _refused(*tiny_run(data_root, run_dir, *ONE_EPOCH, *(arg.format(**files) for arg in extra)))
        assert message in line, (extra, line)
        assert folder_files(run_dir) == before, extra


def _sweep(data_root: Path, sweep_dir: Path, *extra: str) -> list[str]:
    """A tiny one-epoch ``--multirun`` into ``sweep_dir``."""
    args = [a for a in tiny_run(data_root, sweep_dir.parent / "unused", *ONE_EPOCH) if not a.startswith("hydra.run.dir")]
    return ["--multirun", f"hydra.sweep.dir={sweep_dir}", *args, *extra]


@pytest.mark.slow
def test_a_refusal_into_an_existing_sweep_leaves_its_files_as_they_were(tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    first = start_train(*_sweep(data_root, sweep_dir, "model.lr=1e-4"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert first.wait(timeout=300) == 0, first.communicate()[1][-3000:]
    before = folder_files(sweep_dir)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"junk" * 100)
    for extra, message in [
        ([], "already holds the runs of a sweep"),
        (["overwrite=true", "hparams_search=optuna_recipe", f"hydra.sweeper.storage=sqlite:///{junk}"], "is not an SQLite database"),
    ]:
        line = _refused(*_sweep(data_root, sweep_dir, "model.lr=2e-4", *extra))
        assert message in line, (extra, line)
        assert folder_files(sweep_dir) == before, extra


@pytest.mark.slow
def test_a_second_sweep_into_a_sweep_folder_in_use_is_refused_and_writes_nothing_there(tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    # The first sweep's first job trains on (1000 epochs) while the second is started.
    first = start_train(
        *_sweep(data_root, sweep_dir, "model.lr=1e-4,2e-4", "trainer.max_epochs=1000"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not list(sweep_dir.glob("0_*/samples/epoch_000.png")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
        time.sleep(0.1)
    line = _refused(*_sweep(data_root, sweep_dir, "model.lr=1e-4,2e-4"))
    assert line.startswith(f"error: another run is using {sweep_dir.resolve()} (pid {first.pid} ") and "hydra.sweep.dir=..." in line
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=300) == 143, first.communicate()[1][-3000:]
    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # Only the first sweep's own row: its job, interrupted by the signal; nothing of the second's.
    assert [(row["job"], row["status"]) for row in rows] == [("0", "interrupted")], rows
    assert [path.name for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith(".")] == [rows[0]["dir"]]


@pytest.mark.slow
def test_ctrl_c_while_a_run_starts_is_one_line_and_leaves_an_existing_run_as_it_was(tmp_path, data_root):
    run_dir = tmp_path / "run"
    first = start_train(*tiny_run(data_root, run_dir, *ONE_EPOCH), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert first.wait(timeout=300) == 0, first.communicate()[1][-3000:]
    before = folder_files(run_dir)
    process = start_train(
        *tiny_run(data_root, run_dir, "ckpt_path=last", "trainer.max_epochs=1000"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not (run_dir / ".run.owner").is_file():  # the command is past Hydra's start and checks its input
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.01)
    process.send_signal(2)
    _, stderr = process.communicate(timeout=120)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in stderr and len(errors) == 1, stderr[-3000:]
    if "while starting" in errors[0]:  # it landed before the first batch, as it does on most machines
        assert process.returncode == 130 and folder_files(run_dir) == before
    else:  # a fast machine was training already: the interruption's own line, exit 130
        assert errors[0].startswith("error: training interrupted by SIGINT") and process.returncode == 130


@pytest.mark.parametrize("delay", [0.2, 0.5, 0.8, 1.2])
def test_a_ctrl_c_before_the_main_function_is_one_line_too(delay):
    # At any point of importing numpy, torch and Lightning: a KeyboardInterrupt raised inside those
    # imports once surfaced as a RecursionError from a half-imported numpy, or aborted the process.
    process = start_train("--cfg", "job", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(delay)
    process.send_signal(2)
    _, stderr = process.communicate(timeout=120)
    assert stderr.strip() == "error: interrupted by Ctrl-C while starting: nothing was trained or written", stderr[-3000:]
    assert process.returncode == -2


def test_a_sigterm_while_an_epoch_is_scored_names_that_epoch(cfg_factory, tmp_path):
    import os
    import signal

    import lightning as L

    from src.errors import TrainingInterrupted

    class TermWhileScoring(L.Callback):
        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 0 and not trainer.sanity_checking:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = cfg_factory("trainer.max_epochs=2", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1")
    with pytest.raises(TrainingInterrupted) as error:
        train(cfg, extra_callbacks=[TermWhileScoring()])
    assert str(error.value).startswith("training interrupted by SIGTERM at the end of epoch 0 (its 3 batches trained); resume with ckpt_path=")
