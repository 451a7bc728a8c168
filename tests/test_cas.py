"""The classification accuracy score (src/metrics/cas.py, ``src.evaluate cas=true``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import command_cfg

from src.data.loaders import to_model_range
from src.data.provision import load_split, raw_folder
from src.errors import ConfigError
from src.evaluate import evaluate
from src.metrics.cas import class_balanced_samples, classification_accuracy_score
from src.metrics.classifier import measure_accuracy
from src.metrics.extractor import load_classifier

REAL_DATA = Path(__file__).resolve().parents[1] / "data"


class RealImages(torch.nn.Module):
    """A stand-in conditional G that answers each request for class c with real training images
    of class c: the k-th request the k-th image of that class (``per_class=None``, cycling), or
    always the same ``per_class`` first ones (1: one fixed image per class)."""

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, per_class: int | None = None) -> None:
        super().__init__()
        self.by_class = [images_u8[labels == c][:per_class] for c in range(10)]
        self.served = [0] * 10
        self.weight = torch.nn.Parameter(torch.zeros(1))  # generate() reads the device from the parameters
        self.num_classes, self.latent_dim, self.conditional = 10, 4, True

    def sample(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = []
        for label in labels.tolist():
            images = self.by_class[label]
            out.append(images[self.served[label] % len(images)])
            self.served[label] += 1
        return to_model_range(torch.stack(out))


def test_cas_is_refused_for_an_unconditional_model_before_any_training(checkpoints):
    with pytest.raises(ConfigError, match="cas needs a cGAN"):
        evaluate(command_cfg("evaluate", f"ckpt_path={checkpoints['gan']}", "num_samples=60", "cas=true"))
    with pytest.raises(ConfigError, match="cas must be true or false"):
        evaluate(command_cfg("evaluate", f"ckpt_path={checkpoints['cgan']}", "num_samples=60", "cas=maybe"))


def test_evaluate_cas_trains_on_class_balanced_samples_and_reports_the_ceiling(checkpoints, tmp_path, data_root):
    result = evaluate(command_cfg("evaluate", f"ckpt_path={checkpoints['cgan']}", "num_samples=60", "cas=true", f"output={tmp_path / 'm.json'}"))
    assert 0.0 <= result["cas"] <= 1.0 and result["cas_ceiling"] == load_classifier("mnist")[1]["test_accuracy"]
    images, labels = class_balanced_samples(RealImages(*load_split("mnist", data_root, train=True)), 240, seed=0)
    assert images.dtype == torch.uint8 and images.shape == (240, 1, 28, 28)
    assert torch.bincount(labels).tolist() == [24] * 10  # as many per class


@pytest.mark.slow
@pytest.mark.skipif(not raw_folder("mnist", REAL_DATA).is_dir(), reason="needs the real MNIST under data/ (make data)")
def test_cas_of_real_images_reaches_the_ceiling_and_one_image_per_class_falls_far_below_it():
    """Real MNIST: a G that serves the real training images scores the pinned classifier's own test
    accuracy within a point; a G that draws one fixed real image per class scores cond_acc 1 and a CAS far below."""
    train_x, train_y = load_split("mnist", REAL_DATA, train=True)
    test_x, test_y = load_split("mnist", REAL_DATA, train=False)
    classifier, info = load_classifier("mnist")
    ceiling = info["test_accuracy"]
    real = classification_accuracy_score(RealImages(train_x, train_y), len(train_y), test_x, test_y)
    one = RealImages(train_x, train_y, per_class=1)
    samples, asked = class_balanced_samples(one, 1000, seed=0)
    cond_acc = measure_accuracy(classifier, samples, asked)
    one.served = [0] * 10
    cas_one = classification_accuracy_score(one, len(train_y), test_x, test_y)
    print(f"ceiling {ceiling:.4f}, CAS of the real images {real:.4f}, one image per class: cond_acc {cond_acc:.4f}, CAS {cas_one:.4f}")
    assert abs(real - ceiling) <= 0.01
    assert cond_acc == 1.0 and cas_one < ceiling - 0.2
