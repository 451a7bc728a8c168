"""src.generate and src.evaluate on checkpoints of tiny training runs, and their one-line errors."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import command_cfg, run_module
from PIL import Image

from src.checkpoint import CheckpointError
from src.errors import ConfigError
from src.evaluate import evaluate
from src.generate import run as generate
from src.metrics.quality import METRIC_NAMES

REPO = Path(__file__).resolve().parents[1]


def test_generate_all_classes_of_a_cgan(checkpoints, tmp_path):
    png, npz = generate(command_cfg("generate", f"ckpt_path={checkpoints['cgan']}", "num_samples=20", "labels=all", f"output={tmp_path / 'out'}"))
    data = np.load(npz)
    assert data["images"].shape == (20, 28, 28) and data["images"].dtype == np.uint8
    assert data["labels"].tolist() == [k for k in range(10) for _ in range(2)]
    assert Image.open(png).size == (2 * 30 + 2, 10 * 30 + 2)  # one row per class, two columns


def test_generate_one_label_is_reproducible_and_seed_dependent(checkpoints, tmp_path):
    def images(seed: int, name: str) -> np.ndarray:
        _, npz = generate(
            command_cfg("generate", f"ckpt_path={checkpoints['cgan']}", "num_samples=8", "label=7", f"seed={seed}", f"output={tmp_path / name}")
        )
        data = np.load(npz)
        assert (data["labels"] == 7).all()
        return data["images"]

    assert np.array_equal(images(1, "a"), images(1, "b"))
    assert not np.array_equal(images(1, "a"), images(2, "c"))


def test_generate_beside_the_checkpoint_for_a_gan(checkpoints):
    png, npz = generate(command_cfg("generate", f"ckpt_path={checkpoints['gan']}", "num_samples=9"))
    assert png.parent == checkpoints["gan"].parent and png.is_file()
    data = np.load(npz)
    assert data["images"].shape == (9, 28, 28) and (data["labels"] == -1).all()


@pytest.mark.parametrize(
    ("model", "overrides", "error", "message"),
    [
        ("cgan", ["label=10"], ConfigError, "label=10 is not one of this model's classes 0..9"),
        ("cgan", ["label=-1"], ConfigError, "label=-1 is not one of this model's classes 0..9"),
        ("cgan", ["labels=some"], ConfigError, "labels=some"),
        (
            "cgan",
            ["labels=all", "num_samples=64"],
            ConfigError,
            r"num_samples=64: .* one grid row each \(labels=all, its default\), so num_samples must be a multiple of 10",
        ),
        ("cgan", ["num_samples=64"], ConfigError, "num_samples must be a multiple of 10; or ask for one class with label=K"),
        ("gan", ["label=3"], ConfigError, "label=3: this model is unconditional"),
        ("gan", ["labels=all"], ConfigError, "labels=all: this model is unconditional"),
        ("gan", ["num_samples=0"], ConfigError, "num_samples must be a positive integer"),
    ],
)
def test_generate_refuses_bad_requests(checkpoints, tmp_path, model, overrides, error, message):
    with pytest.raises(error, match=message):
        generate(command_cfg("generate", f"ckpt_path={checkpoints[model]}", f"output={tmp_path / 'x'}", *overrides))


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        generate(command_cfg("generate", f"ckpt_path={tmp_path / 'missing.ckpt'}"))
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is truncated or corrupt"):
        generate(command_cfg("generate", f"ckpt_path={corrupt}"))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a lightning-gan checkpoint"):
        evaluate(command_cfg("evaluate", f"ckpt_path={foreign}", "data=mnist"))


@pytest.mark.parametrize("model", ["gan", "cgan"])
def test_evaluate_reproduces_the_figures_the_run_logged_for_those_weights(checkpoints, model):
    """The README's promise: with its defaults, ``evaluate`` gives the ``val/*`` of the checkpoint's epoch."""
    result = evaluate(command_cfg("evaluate", f"ckpt_path={checkpoints[model]}", "num_samples=100"))  # the runs' (conftest)
    logged = json.loads((checkpoints[model].parents[1] / "metrics.json").read_text())
    assert result["data"] == "mnist" and result["num_samples"] == 100 and result["classifier"] == "pinned"
    names = [name for name in METRIC_NAMES if f"val/{name}" in logged]
    assert set(names) == set(METRIC_NAMES) - ({"ifid", "cond_acc"} if model == "gan" else set())
    for name in names:
        assert result[name] == pytest.approx(logged[f"val/{name}"], rel=1e-5, abs=1e-6), name


def test_evaluate_repeats_scores_independent_sample_sets_and_gives_their_mean_and_std(checkpoints, tmp_path):
    """repeats=3: three sets from noise seeds 0, 1, 2, the first the callback's; each figure their mean and std."""
    ckpt = checkpoints["cgan"]
    one = evaluate(command_cfg("evaluate", f"ckpt_path={ckpt}", "num_samples=60"))
    result = evaluate(command_cfg("evaluate", f"ckpt_path={ckpt}", "num_samples=60", "repeats=3", f"output={tmp_path / 'r.json'}"))
    sets = result["per_repeat"]
    assert result["repeats"] == 3 and len(sets) == 3
    assert sets[0] == {name: one[name] for name in sets[0]}  # the first set is the single evaluation's
    assert len({figures["fid"] for figures in sets}) == 3  # three different sample sets
    for name in ("fid", "coverage", "cond_acc"):
        values = [figures[name] for figures in sets]
        assert result[name] == pytest.approx(statistics.fmean(values)) and result["std"][name] == pytest.approx(statistics.stdev(values))
    with pytest.raises(ConfigError, match="repeats must be a positive integer"):
        evaluate(command_cfg("evaluate", f"ckpt_path={ckpt}", "repeats=0"))


def test_generate_writes_latent_walks(checkpoints, tmp_path):
    png, npz = generate(
        command_cfg("generate", f"ckpt_path={checkpoints['gan']}", "interpolate=true", "rows=3", "steps=5", f"output={tmp_path / 'walk'}")
    )
    assert Image.open(png).size == (5 * 30 + 2, 3 * 30 + 2)
    walk = np.load(npz)
    assert walk["images"].shape == (15, 28, 28) and (walk["labels"] == -1).all()
    png, npz = generate(command_cfg("generate", f"ckpt_path={checkpoints['cgan']}", "interpolate=true", "steps=4"))
    assert png.name == "last_interp_r10_s4_all_seed0.png" and Image.open(png).size == (4 * 30 + 2, 10 * 30 + 2)
    assert np.load(npz)["labels"].tolist() == [c for c in range(10) for _ in range(4)]  # one walk, a row per class
    _, npz = generate(
        command_cfg(
            "generate", f"ckpt_path={checkpoints['cgan']}", "interpolate=true", "rows=2", "steps=3", "label=4", f"output={tmp_path / 'fours'}"
        )
    )
    assert np.load(npz)["labels"].tolist() == [4] * 6
    with pytest.raises(ConfigError, match=r"steps must be at least 2 \(a walk has two ends\), got 1"):
        generate(command_cfg("generate", f"ckpt_path={checkpoints['gan']}", "interpolate=true", "steps=1"))
    with pytest.raises(ConfigError, match="this model is unconditional"):
        generate(command_cfg("generate", f"ckpt_path={checkpoints['gan']}", "interpolate=true", "label=3"))


def test_evaluate_needs_to_know_the_data_of_a_moved_checkpoint(checkpoints, tmp_path):
    moved = tmp_path / "moved.ckpt"
    moved.write_bytes(checkpoints["gan"].read_bytes())
    with pytest.raises(ConfigError, match="add data=mnist or data=fashion_mnist"):
        evaluate(command_cfg("evaluate", f"ckpt_path={moved}"))


@pytest.mark.slow
def test_commands_end_to_end(checkpoints):
    result = run_module("src.evaluate", f"ckpt_path={checkpoints['cgan']}", "num_samples=50")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout)
    written = json.loads(checkpoints["cgan"].with_name("last_metrics.json").read_text())
    assert printed == written and 0.0 <= printed["cond_acc"] <= 1.0
    result = run_module("src.generate", f"ckpt_path={checkpoints['cgan']}", "num_samples=10", "label=3")
    assert result.returncode == 0 and "wrote" in result.stdout, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("src.generate", ["label=12"], "error: label=12 is not one of this model's classes 0..9"),
        ("src.generate", ["ckpt_path=/nonexistent/x.ckpt"], "error: checkpoint /nonexistent/x.ckpt not found"),
        ("src.evaluate", ["ckpt_path=/nonexistent/x.ckpt"], "error: checkpoint /nonexistent/x.ckpt not found"),
        ("src.evaluate", ["ckpt_path=???"], "error: give the checkpoint: python -m src.evaluate ckpt_path="),
    ],
)
def test_command_errors_are_one_line(checkpoints, module, args, message):
    result = run_module(module, f"ckpt_path={checkpoints['cgan']}", *args)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
