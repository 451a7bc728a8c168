"""Faults of the outside reliability battery (issue 24) in the commands that read a checkpoint or a split.

A. Every output file is checked before the work: a name over the file system's limit, a path that is
   a folder, an output that is the command's own input; one line, nothing written.
B. Every reader of a split (``src.evaluate``, the metrics' classifier) goes through training's data
   checks: a gzipped, truncated or missing file is the line that names it, not torchvision's traceback.
C. Right diagnoses: a pickle that holds code is "holds code ... refused" whatever its protocol or
   container; a metrics classifier given as a checkpoint is named as one.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from conftest import command_cfg, make_cfg, run_module, write_tiny_dataset
from omegaconf import OmegaConf

import src.evaluate
import src.generate
import src.metrics.classifier as clf
from src.checkpoint import check_resumable, load_model, read_checkpoint
from src.data.datamodule import MNISTDataModule
from src.data.provision import RAW_FILES
from src.errors import CheckpointError, user_error
from src.evaluate import evaluate
from src.generate import run as generate
from src.metrics.extractor import pinned_path
from src.train import train

ONE_EPOCH = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]
TINY = clf.Recipe(channels=(4, 8), feature_dim=8, epochs=1, batch_size=64)


@pytest.fixture(scope="module")
def gan_ckpt(tmp_path_factory, data_root) -> Path:
    """last.ckpt of a two-batch GAN run, in a run folder with its .hydra/config.yaml (as src.evaluate expects)."""
    run_dir = tmp_path_factory.mktemp("gan")
    cfg = make_cfg(["data=mnist", *ONE_EPOCH], run_dir, data_root)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture
def no_work(monkeypatch):
    """Sampling and scoring fail the test if they start: every refusal here must come before them."""

    def work(*args, **kwargs):
        raise AssertionError("the work started before the refusal")

    for module in (src.generate, src.evaluate):
        monkeypatch.setattr(module, "generate", work)
    monkeypatch.setattr(src.evaluate, "QualityMetrics", work)
    monkeypatch.setattr(clf, "fit_classifier", work)


def _one_line(caught: pytest.ExceptionInfo, *fragments: str) -> str:
    shown = user_error(caught.value)  # what every command prints as its `error:` line
    assert shown is not None, caught.value
    assert "\n" not in str(shown) and all(f in str(shown) for f in fragments), str(shown)
    return str(shown)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# --- A. Output files, checked before the work ----------------------------------------------------


LONG = "a" * 300  # over Linux's 255 bytes a name


@pytest.mark.parametrize(
    ("command", "extra", "output", "fragments"),
    [
        ("generate", [], LONG, ["over the file system's limit of 255 bytes per name: choose a shorter output"]),
        ("generate", ["interpolate=true"], LONG, ["is 304 bytes"]),  # with .png
        ("generate", [], f"{LONG}/out", ["over the file system's limit"]),  # a folder's name
        ("generate", [], "é" * 126, ["is 256 bytes"]),  # 130 characters with .png, but bytes are what counts
        ("generate", [], "grid", ["grid.png can't be written: it is an existing folder"]),
        ("generate", [], "images", ["images.npz can't be written: it is an existing folder"]),  # the second file too
        ("evaluate", [], LONG, ["over the file system's limit of 255 bytes per name"]),
        ("evaluate", [], "folder", ["can't be written: it is an existing folder: choose another output"]),
    ],
)
def test_an_output_that_cannot_be_opened_is_refused_before_the_work(gan_ckpt, tmp_path, no_work, command, extra, output, fragments):
    (tmp_path / "grid.png").mkdir()
    (tmp_path / "images.npz").mkdir()
    (tmp_path / "folder").mkdir()
    run = generate if command == "generate" else evaluate
    with pytest.raises(Exception) as caught:
        run(command_cfg(command, f"ckpt_path={gan_ckpt}", "num_samples=10", f"output='{tmp_path / output}'", *extra))
    _one_line(caught, f"output={tmp_path}", *fragments)
    assert _files(tmp_path) == []


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_a_default_output_name_over_the_limit_is_refused_before_the_work(gan_ckpt, tmp_path, no_work, command):
    """The default name is the checkpoint's plus a suffix: a checkpoint name that fits can make one that does not."""
    ckpt = tmp_path / "run" / "checkpoints" / f"{'c' * 245}.ckpt"  # 250 bytes; with "_metrics.json", 258
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(gan_ckpt.read_bytes())
    (tmp_path / "run" / ".hydra").mkdir()
    (tmp_path / "run" / ".hydra" / "config.yaml").write_bytes((gan_ckpt.parents[1] / ".hydra" / "config.yaml").read_bytes())
    run = generate if command == "generate" else evaluate
    with pytest.raises(Exception) as caught:
        run(command_cfg(command, f"ckpt_path={ckpt}", "num_samples=10"))
    _one_line(caught, f"the output {ckpt.parent}", "over the file system's limit of 255 bytes per name: give a shorter output=PATH")
    assert [p.name for p in _files(tmp_path / "run" / "checkpoints")] == [ckpt.name]


def test_evaluate_refuses_to_write_its_json_over_its_own_checkpoint(gan_ckpt, tmp_path, no_work):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(gan_ckpt.read_bytes())
    with pytest.raises(Exception) as caught:
        evaluate(command_cfg("evaluate", f"ckpt_path={ckpt}", f"output={ckpt}", "data=mnist", "num_samples=10"))
    _one_line(caught, "is one of the command's own input files, which writing it would overwrite")
    assert ckpt.read_bytes() == gan_ckpt.read_bytes()


def test_the_classifier_output_is_checked_with_its_temporary_name_before_training(tmp_path, no_work):
    """``train`` writes ``<output>.tmp`` first: a 253-byte name fits, its temporary name does not."""
    write_tiny_dataset(tmp_path / "data", "mnist")
    output = tmp_path / "research" / ("m" * 250 + ".pt")
    with pytest.raises(Exception) as caught:
        clf.train_to("mnist", tmp_path / "data", output, TINY)
    _one_line(caught, f"--output {output.parent}/mmmm", "can't be written", "is 253 bytes (257 with the suffix .tmp", "choose a shorter --output")
    assert not (tmp_path / "research").exists()


# --- B. Every reader of a split goes through training's data checks -------------------------------


def _damage(root: Path, damage: str) -> Path:
    folder = write_tiny_dataset(root, "mnist")
    if damage == "gzipped_images":  # the published file, not unpacked, under the raw name
        images = folder / RAW_FILES["test_images"]
        images.write_bytes(gzip.compress(images.read_bytes()))
    elif damage == "truncated_labels":
        labels = folder / RAW_FILES["test_labels"]
        labels.write_bytes(labels.read_bytes()[:-7])
    elif damage == "missing_labels":
        (folder / RAW_FILES["test_labels"]).unlink()
    elif damage == "labels_of_another_split":
        (folder / RAW_FILES["test_labels"]).write_bytes((folder / RAW_FILES["train_labels"]).read_bytes())
    return folder


DAMAGES = [
    ("gzipped_images", r"t10k-images-idx3-ubyte is gzip-compressed, but the project reads the uncompressed IDX file"),
    ("truncated_labels", r"t10k-labels-idx1-ubyte holds 61 bytes but its header \(60,\) needs 68: the file is truncated or corrupt"),
    ("missing_labels", r"t10k-labels-idx1-ubyte is missing: run `make data` or set data_dir to the folder holding it"),
    ("labels_of_another_split", r"60 test images but 240 labels"),
]


@pytest.mark.parametrize(("damage", "message"), DAMAGES)
def test_evaluate_checks_the_test_split_as_training_does(gan_ckpt, tmp_path, no_work, damage, message):
    _damage(tmp_path / "data", damage)
    with pytest.raises(Exception) as caught:
        evaluate(command_cfg("evaluate", f"ckpt_path={gan_ckpt}", "data=mnist", f"data_dir={tmp_path / 'data'}", f"output={tmp_path / 'm.json'}"))
    shown = _one_line(caught)
    assert re.search(message, shown), shown
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(("damage", "message"), DAMAGES[:2])
def test_training_and_the_classifier_commands_give_the_same_line(tmp_path, no_work, damage, message):
    _damage(tmp_path / "data", damage)
    lines = []
    for read in (
        lambda: MNISTDataModule("mnist", str(tmp_path / "data")).setup("fit"),
        lambda: clf.check("mnist", tmp_path / "data"),
        lambda: clf.train_to("mnist", tmp_path / "data", tmp_path / "out.pt", TINY),
    ):
        with pytest.raises(Exception) as caught:
            read()
        lines.append(_one_line(caught))
    assert len(set(lines)) == 1 and re.search(message, lines[0]), lines


# --- C. Right diagnoses of a checkpoint ---------------------------------------------------------


class _RunsCode:
    """Unpickling it would call os.system: it touches ``marker`` if it ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_pickle(path: Path, how: str, marker: Path) -> None:
    payload = {"state_dict": {"w": torch.ones(2)}, "epoch": 0, "payload": _RunsCode(marker)}
    if how == "pickle_dump":  # a raw pickle, protocol 5
        with open(path, "wb") as f:
            pickle.dump({"state_dict": {}, "payload": _RunsCode(marker)}, f)
    elif how == "pickle_dump_protocol_2":
        with open(path, "wb") as f:
            pickle.dump({"state_dict": {}, "payload": _RunsCode(marker)}, f, protocol=2)
    elif how == "torch_legacy":  # torch's pre-1.6 format (no zip), with pickle.dump's protocol
        torch.save(payload, path, _use_new_zipfile_serialization=False, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    elif how == "torch_zip_protocol_5":
        torch.save(payload, path, pickle_protocol=5)
    elif how == "function_reference":  # no call, only a reference to code
        torch.save({"state_dict": {}, "hook": os.system}, path, _use_new_zipfile_serialization=False, pickle_protocol=4)


@pytest.mark.parametrize("how", ["pickle_dump", "pickle_dump_protocol_2", "torch_legacy", "torch_zip_protocol_5", "function_reference"])
def test_a_pickle_that_holds_code_is_refused_as_code_whatever_its_format(tmp_path, how):
    path, marker = tmp_path / "evil.ckpt", tmp_path / "ran"
    _write_pickle(path, how, marker)
    for read in (read_checkpoint, load_model):  # train's resume reads with the first, generate and evaluate with the second
        with pytest.raises(CheckpointError) as caught:
            read(path)
        _one_line(caught, f"{path} holds code (the pickled global ", "system) and is refused", "weights_only=True", "nothing in them runs")
    assert not marker.exists()


def test_a_plain_pickle_without_code_is_named_as_one(tmp_path):
    path = tmp_path / "plain.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": [1.0, 2.0]}}, f)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    _one_line(caught, "is a plain pickle, not a file written by torch.save or Lightning, and is refused")


def _trained_classifier(tmp_path: Path) -> Path:
    output = tmp_path / "research" / "mnist_tiny.pt"
    clf.save_classifier(clf.DomainClassifier(TINY.channels, TINY.feature_dim), "mnist", TINY, 0.5, output)
    return output


@pytest.mark.parametrize("which", ["pinned", "trained"])
def test_a_metrics_classifier_given_as_a_checkpoint_is_named_as_one(gan_ckpt, tmp_path, which):
    path = pinned_path("mnist") if which == "pinned" else _trained_classifier(tmp_path)
    expected = [f"{path} is a metrics classifier (of mnist", "not a training checkpoint of this project", f"classifier={path}"]
    with pytest.raises(CheckpointError) as caught:  # train's resume: read_checkpoint, then check_resumable
        check_resumable(read_checkpoint(path), path)
    assert "save_weights_only" not in _one_line(caught, *expected)
    with pytest.raises(CheckpointError) as caught:
        generate(command_cfg("generate", f"ckpt_path={path}", f"output={tmp_path / 'out'}"))
    _one_line(caught, *expected)
    with pytest.raises(CheckpointError) as caught:
        evaluate(command_cfg("evaluate", f"ckpt_path={path}", "data=mnist", f"output={tmp_path / 'out.json'}"))
    _one_line(caught, *expected)


def test_a_training_checkpoint_given_as_the_classifier_is_named_as_one(gan_ckpt, tmp_path, no_work):
    with pytest.raises(Exception) as caught:
        evaluate(command_cfg("evaluate", f"ckpt_path={gan_ckpt}", f"classifier={gan_ckpt}", f"output={tmp_path / 'm.json'}"))
    _one_line(caught, f"{gan_ckpt} is a training checkpoint, not a metrics classifier: give it as ckpt_path=")


def test_a_bare_state_dict_is_not_called_a_weights_only_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(CheckpointError) as caught:
        check_resumable(read_checkpoint(path), path)
    assert "save_weights_only" not in _one_line(caught, "is not a training checkpoint of this project", "checkpoints/last.ckpt")


def test_a_weights_only_checkpoint_says_what_it_lacks_for_each_command(cfg_factory, tmp_path):
    """Lightning calls no callback's on_save_checkpoint for one: it holds no model config to rebuild the model from."""
    train(cfg_factory(*ONE_EPOCH, "+callbacks.model_checkpoint.save_weights_only=true", output_dir=tmp_path / "run"))
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError) as caught:
        check_resumable(read_checkpoint(path), path)
    assert "src.generate and src.evaluate can read it" not in _one_line(caught, "holds weights only (written with save_weights_only=true)")
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    _one_line(caught, "holds weights only (written with save_weights_only=true), without the model config", "checkpoints/last.ckpt")


# --- The command line: one `error:` line, exit status 1 -------------------------------------------


@pytest.mark.slow
def test_the_commands_print_each_fault_as_one_error_line(gan_ckpt, tmp_path):
    (tmp_path / "grid.png").mkdir()
    evil = tmp_path / "evil.ckpt"
    _write_pickle(evil, "pickle_dump", tmp_path / "ran")
    cases = [
        ("src.generate", [f"ckpt_path={gan_ckpt}", f"output={tmp_path / LONG}"], "over the file system's limit of 255 bytes per name"),
        ("src.generate", [f"ckpt_path={gan_ckpt}", f"output={tmp_path / 'grid'}"], "grid.png can't be written: it is an existing folder"),
        ("src.evaluate", [f"ckpt_path={evil}"], "holds code (the pickled global posix.system) and is refused"),
        ("src.evaluate", [f"ckpt_path={pinned_path('mnist')}", "data=mnist"], "is a metrics classifier (of mnist"),
    ]
    for module, args, message in cases:
        result = run_module(module, *args, timeout=300)
        assert result.returncode == 1, (module, args, result.stderr[-2000:])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "ran").exists() and not list(tmp_path.glob("a*"))
