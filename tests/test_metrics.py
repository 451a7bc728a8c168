"""The quality metrics on small synthetic data: FID/KID/iFID against itself and others, class metrics, the pinned classifiers."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_dataset

from src.metrics import classifier as clf
from src.metrics import extractor
from src.metrics.extractor import ClassifierError, DomainClassifier, Recipe, load_classifier, pinned_path
from src.metrics.quality import METRIC_NAMES, NonFiniteSamplesError, QualityMetrics, class_metrics

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


PINNED = {  # the digests the project's figures are measured with: changing a file changes every figure
    "mnist": "ab4bcf85927dde33f1721446b7fb168b951562f88ebb1c6e15ee2a13673a7ca1",
    "fashion_mnist": "3086538f61e95e89cd3c10cddc4ccbf12affa925ac62d17e9992c397dc22005d",
}


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_the_pinned_classifiers_are_shipped_verified_and_loaded(name):
    assert extractor.PINNED_SHA256 == PINNED
    assert clf.file_sha256(pinned_path(name)) == PINNED[name]
    model, info = load_classifier(name)
    assert info["classifier"] == "pinned" and info["sha256"] == PINNED[name] and info["data"] == name
    assert info["recipe"] == Recipe().as_dict() and info["test_accuracy"] > (0.99 if name == "mnist" else 0.90)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def _pinned_copy(tmp_path, monkeypatch, name="mnist") -> Path:
    copy = tmp_path / "weights" / f"{name}.pt"
    copy.parent.mkdir()
    copy.write_bytes(pinned_path(name).read_bytes())
    monkeypatch.setattr(extractor, "pinned_path", lambda n: tmp_path / "weights" / f"{n}.pt")
    return copy


def test_an_altered_or_missing_pinned_classifier_is_one_line_that_says_how_to_restore_it(tmp_path, monkeypatch):
    copy = _pinned_copy(tmp_path, monkeypatch)
    load_classifier("mnist")  # the copy itself is fine
    copy.write_bytes(copy.read_bytes() + b"tampered")
    with pytest.raises(
        ClassifierError,
        match=r"^the pinned mnist classifier .* has been altered \(SHA-256 .*: restore it with `git checkout -- src/metrics/weights/`",
    ) as altered:
        load_classifier("mnist")
    copy.unlink()
    with pytest.raises(ClassifierError, match=r"^the pinned mnist classifier .* is missing: restore it with `git checkout") as missing:
        load_classifier("mnist")
    assert "\n" not in str(altered.value) + str(missing.value)


def test_training_a_classifier_writes_where_asked_and_never_over_a_pinned_or_existing_file(tmp_path, monkeypatch):
    write_tiny_dataset(tmp_path, "mnist")
    pinned_before = pinned_path("mnist").read_bytes()
    with pytest.raises(ClassifierError, match="is a pinned classifier, which training never replaces"):
        clf.train_to("mnist", tmp_path, pinned_path("mnist"), TINY, force=True)
    assert pinned_path("mnist").read_bytes() == pinned_before
    output = tmp_path / "research" / "mnist_tiny.pt"
    result = clf.train_to("mnist", tmp_path, output, TINY)
    assert result["sha256"] == clf.file_sha256(output) and 0.0 <= result["test_accuracy"] <= 1.0
    assert [p.name for p in output.parent.iterdir()] == ["mnist_tiny.pt"]  # no temporary file left
    model, info = load_classifier("mnist", output)
    assert info["classifier"] == str(output) and info["recipe"] == TINY.as_dict() and model.num_features == TINY.feature_dim
    with pytest.raises(ClassifierError, match="exists: choose another --output, or add --force"):
        clf.train_to("mnist", tmp_path, output, TINY)
    clf.train_to("mnist", tmp_path, output, TINY, force=True)
    with pytest.raises(ClassifierError, match="is the classifier of mnist, not of fashion_mnist"):
        load_classifier("fashion_mnist", output)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ClassifierError, match="is not a readable classifier file"):
        load_classifier("mnist", garbage)


def test_training_the_classifier_leaves_the_callers_random_state_alone(tmp_path):
    write_tiny_dataset(tmp_path, "fashion_mnist")
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    clf.fit_classifier("fashion_mnist", tmp_path, TINY)
    assert torch.equal(torch.rand(3), expected)


def test_intra_class_fid_sees_samples_of_the_wrong_class_that_fid_does_not(features_net):
    real, labels = structured_images(400, seed=0), torch.arange(400) % 10
    metrics = QualityMetrics(features_net, real, labels, batch_size=128, kid_subset_size=100)
    right = metrics.compute(structured_images(400, seed=1), labels)
    wrong = metrics.compute(structured_images(400, seed=1), (labels + 1) % 10)  # every sample asked for another class
    assert wrong["fid"] == right["fid"]  # the same images: overall they match the real distribution
    assert wrong["ifid"] > 20 * right["ifid"] and right["ifid"] < 3 * max(right["fid"], 1e-3) + 1.0
    itself = metrics.compute(real, labels)
    assert abs(itself["ifid"]) < 1e-6 and "ifid" not in QualityMetrics(features_net, real).compute(real, labels)


def test_non_finite_samples_are_refused_with_one_line(features_net):
    metrics = QualityMetrics(features_net, structured_images(50, seed=0))
    with pytest.raises(NonFiniteSamplesError, match="NaN or infinite"):
        metrics.compute(torch.full((50, 1, 28, 28), float("nan")))


def test_the_figures_do_not_depend_on_the_number_of_threads():
    classifier, _ = load_classifier("fashion_mnist")
    real, labels = structured_images(600, seed=0), torch.arange(600) % 10
    fake = (
        structured_images(600, seed=3)
        .float()
        .div(127.5)
        .sub(1)
        .add(0.3 * torch.rand(600, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
        .clamp(-1, 1)
    )
    threads = torch.get_num_threads()
    try:
        figures = []
        for count in (1, 2):
            torch.set_num_threads(count)
            figures.append(QualityMetrics(classifier, real, labels, kid_subset_size=200).compute(fake, labels))
    finally:
        torch.set_num_threads(threads)
    assert figures[0].keys() == figures[1].keys() == set(METRIC_NAMES)
    for name in figures[0]:
        assert figures[1][name] == pytest.approx(figures[0][name], rel=1e-4, abs=1e-6), name


@pytest.mark.slow
def test_the_pinned_classifiers_reach_an_installed_copy(tmp_path):
    """Package data, not only files of a checkout: the wheel pip builds from the project holds them."""
    import shutil
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    leftover = not (repo / "build").exists()  # setuptools builds in the source tree: clean up after it
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp_path), str(repo)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if leftover:
        shutil.rmtree(repo / "build", ignore_errors=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("lightning_gan-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in PINNED:
            assert hashlib.sha256(archive.read(f"src/metrics/weights/{name}.pt")).hexdigest() == PINNED[name]
