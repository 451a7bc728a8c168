"""The quality metrics on small synthetic data: FID/KID against itself and noise, class metrics, the classifier cache."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.metrics import classifier as clf
from src.metrics.classifier import DomainClassifier, Recipe, cache_paths, load_classifier
from src.metrics.quality import QualityMetrics, class_metrics
from tests.conftest import write_tiny_dataset

TINY = Recipe(channels=(4, 8), feature_dim=16, epochs=1, batch_size=64)


def structured_images(n: int, seed: int) -> torch.Tensor:
    """uint8 digits-like images: dark background, a bright square whose place depends on a class."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 30, (n, 1, 28, 28), dtype=torch.uint8, generator=generator)
    for i, k in enumerate(torch.arange(n) % 10):
        images[i, :, 2 * k : 2 * k + 8, 6:20] = 230
    return images


@pytest.fixture(scope="module")
def features_net() -> DomainClassifier:
    torch.manual_seed(0)
    return DomainClassifier(TINY.channels, TINY.feature_dim)


def test_fid_and_kid_of_a_set_against_itself_are_zero_and_against_noise_large(features_net):
    real = structured_images(300, seed=0)
    metrics = QualityMetrics(features_net, real, batch_size=128, kid_subset_size=100)
    itself = metrics.compute(real)
    same_kind = metrics.compute(structured_images(300, seed=1))
    noise = metrics.compute(torch.rand(300, 1, 28, 28) * 2 - 1)
    assert abs(itself["fid"]) < 1e-6 and abs(itself["kid"]) < 1e-3
    assert noise["fid"] > 20 * max(same_kind["fid"], 1e-9)
    assert noise["kid"] > 20 * max(same_kind["kid"], 1e-9)
    # Computing again gives the same figures: the fake side is reset, KID's subsets are seeded.
    assert metrics.compute(real) == itself


def test_kid_leaves_the_callers_random_state_alone(features_net):
    metrics = QualityMetrics(features_net, structured_images(100, seed=0), kid_subset_size=50)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    metrics.compute(structured_images(100, seed=2))
    assert torch.equal(torch.rand(3), expected)


def test_class_metrics_of_perfect_balanced_predictions():
    labels = torch.arange(200) % 10
    logits = torch.nn.functional.one_hot(labels, 10).float() * 50
    figures = class_metrics(logits, labels)
    assert figures["cond_acc"] == 1.0
    assert figures["class_entropy"] == pytest.approx(math.log2(10))
    assert figures["classifier_score"] == pytest.approx(10, rel=1e-6)


def test_class_metrics_of_a_collapsed_generator():
    logits = torch.zeros(100, 10)
    logits[:, 3] = 50  # everything is a 3
    figures = class_metrics(logits, torch.arange(100) % 10)
    assert figures["class_entropy"] == 0.0
    assert figures["classifier_score"] == pytest.approx(1.0)
    assert figures["cond_acc"] == pytest.approx(0.1)
    assert "cond_acc" not in class_metrics(logits)


def test_classifier_is_cached_with_its_hash_and_accuracy_and_rebuilt_when_needed(tmp_path, monkeypatch):
    write_tiny_dataset(tmp_path, "mnist")
    builds = []
    real_build = clf.build_classifier
    monkeypatch.setattr(clf, "build_classifier", lambda *args: builds.append(args) or real_build(*args))

    model, info = load_classifier("mnist", tmp_path, TINY)
    weights, info_path = cache_paths("mnist", tmp_path)
    assert weights.is_file() and len(builds) == 1
    assert info == json.loads(info_path.read_text())
    assert info["sha256"] == clf.file_sha256(weights) and 0.0 <= info["test_accuracy"] <= 1.0
    assert info["recipe"]["epochs"] == 1 and not model.training

    load_classifier("mnist", tmp_path, TINY)  # valid cache: no training
    assert len(builds) == 1

    weights.write_bytes(weights.read_bytes() + b"tampered")  # content no longer matches its hash
    load_classifier("mnist", tmp_path, TINY)
    assert len(builds) == 2 and json.loads(info_path.read_text())["sha256"] == clf.file_sha256(weights)

    weights.unlink()  # missing
    load_classifier("mnist", tmp_path, TINY)
    assert len(builds) == 3

    load_classifier("mnist", tmp_path, Recipe(channels=(4, 8), feature_dim=16, epochs=2, batch_size=64))  # another recipe
    assert len(builds) == 4

    write_tiny_dataset(tmp_path, "mnist", seed=1)  # other training images
    load_classifier("mnist", tmp_path, Recipe(channels=(4, 8), feature_dim=16, epochs=2, batch_size=64))
    assert len(builds) == 5

    with pytest.raises(FileNotFoundError, match="make classifiers"):
        load_classifier("fashion_mnist", tmp_path, TINY, build=False)


def test_training_the_classifier_leaves_the_callers_random_state_alone(tmp_path):
    write_tiny_dataset(tmp_path, "fashion_mnist")
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    clf.build_classifier("fashion_mnist", tmp_path, TINY)
    assert torch.equal(torch.rand(3), expected)


CONCURRENT_LOAD = """
import sys, time
from pathlib import Path
from src.metrics import classifier as clf
from tests.test_metrics import TINY
root, log = Path(sys.argv[1]), Path(sys.argv[2])
real_fit = clf.fit_classifier
def fit(*args):
    with log.open("a") as f:
        f.write("built\\n")
    time.sleep(2)  # a slow build: the other process arrives while it runs
    return real_fit(*args)
clf.fit_classifier = fit
clf.load_classifier("mnist", root, TINY)
"""


@pytest.mark.slow
def test_runs_started_together_on_a_fresh_data_folder_build_the_classifier_once(tmp_path):
    write_tiny_dataset(tmp_path, "mnist")
    log = tmp_path / "builds.log"
    repo = Path(__file__).resolve().parents[1]
    processes = [subprocess.Popen([sys.executable, "-c", CONCURRENT_LOAD, str(tmp_path), str(log)], cwd=repo) for _ in range(2)]
    assert [process.wait(timeout=300) for process in processes] == [0, 0]
    assert log.read_text() == "built\n"
    weights, info_path = cache_paths("mnist", tmp_path)
    assert json.loads(info_path.read_text())["sha256"] == clf.file_sha256(weights)


def test_a_valid_cached_classifier_is_read_without_writing_anything(tmp_path):
    # A shared, read-only data folder must do: no lock file, no folder, unless a build is needed.
    write_tiny_dataset(tmp_path, "mnist")
    load_classifier("mnist", tmp_path, TINY)
    weights, _ = cache_paths("mnist", tmp_path)
    for lock in weights.parent.glob("*.lock"):
        lock.unlink()
    before = {path: path.stat().st_mtime_ns for path in weights.parent.iterdir()}
    load_classifier("mnist", tmp_path, TINY)
    load_classifier("mnist", tmp_path, TINY, build=False)
    assert {path: path.stat().st_mtime_ns for path in weights.parent.iterdir()} == before
