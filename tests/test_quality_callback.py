"""The SampleQuality callback inside real (tiny) training runs: what it logs, and the best checkpoint by FID."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from src.callbacks.quality import SampleQuality
from src.metrics import classifier
from src.train import train

QUALITY = [
    "val/fid",
    "val/kid",
    "val/precision",
    "val/recall",
    "val/density",
    "val/coverage",
    "val/fid_over_coverage",
    "val/classifier_score",
    "val/class_entropy",
]
TINY_TRAINING = ["trainer.max_epochs=2", "+trainer.limit_train_batches=2", "callbacks.sample_quality.num_samples=100"]


@pytest.mark.parametrize("model", ["gan", "cgan"])
def test_quality_metrics_are_logged_and_rank_the_best_checkpoint(cfg_factory, tmp_path, model, monkeypatch):
    def no_training(*args):
        raise AssertionError("a training run trained a classifier")

    monkeypatch.setattr(classifier, "fit_classifier", no_training)  # the pinned classifier is used as it is
    metrics = train(cfg_factory(f"model={model}", "data=mnist", *TINY_TRAINING))
    expected = QUALITY + (["val/ifid", "val/cond_acc"] if model == "cgan" else [])
    assert set(expected) <= set(metrics)
    assert ("val/cond_acc" in metrics) == ("val/ifid" in metrics) == (model == "cgan")
    assert all(0.0 <= metrics[f"val/{name}"] <= 1.0 for name in ("precision", "recall", "coverage")) and metrics["val/density"] >= 0.0
    assert all(torch.isfinite(torch.tensor(metrics[name])) for name in expected)
    assert 0.0 <= metrics["val/class_entropy"] <= 3.33 and 1.0 <= metrics["val/classifier_score"] <= 10.0
    # The searches' figure: FID over coverage, a coverage of 0 counting as one of the tiny test split's 60 images covered.
    assert metrics["val/fid_over_coverage"] == pytest.approx(metrics["val/fid"] / max(metrics["val/coverage"], 1 / 60), rel=1e-5)
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["callbacks"]  # ModelCheckpoint's state: monitored val/fid
    assert any(state.get("monitor") == "val/fid" for state in best["callbacks"].values() if isinstance(state, dict))
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["val/fid"] == pytest.approx(metrics["val/fid"])


def test_quality_every_n_epochs_and_after_the_last(cfg_factory, monkeypatch):
    epochs = []
    real_score = SampleQuality.score
    monkeypatch.setattr(
        SampleQuality, "score", lambda self, trainer, module: epochs.append(trainer.current_epoch) or real_score(self, trainer, module)
    )
    train(
        cfg_factory(
            "trainer.max_epochs=3",
            "+trainer.limit_train_batches=1",
            "callbacks.sample_quality.num_samples=50",
            "callbacks.sample_quality.every_n_epochs=2",
        )
    )
    assert epochs == [1, 2]  # the second epoch, then the last


def test_same_weights_same_figures(cfg_factory, tmp_path):
    """Fixed noise and labels: two identical runs log identical quality figures."""
    first = train(cfg_factory("model=cgan", *TINY_TRAINING, output_dir=tmp_path / "first"))
    second = train(cfg_factory("model=cgan", *TINY_TRAINING, output_dir=tmp_path / "second"))
    assert {k: first[k] for k in QUALITY} == {k: second[k] for k in QUALITY}


class MetricsProbe(L.Callback):
    """Saves what each rank's trainer holds as val/* after validation (what its ModelCheckpoint compares)."""

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(values))


@pytest.mark.slow
def test_every_ddp_rank_logs_the_figures_rank_zero_computed(cfg_factory, tmp_path):
    cfg = cfg_factory("model=cgan", "trainer=ddp_cpu", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1")
    train(cfg, extra_callbacks=[MetricsProbe(tmp_path)])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    quality = [*QUALITY, "val/ifid", "val/cond_acc"]
    assert all(name in ranks[0] for name in quality)
    assert {k: ranks[0][k] for k in quality} == {k: ranks[1][k] for k in quality}
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def test_seed_experiments_reproduce_the_seeds_recipe(cfg_factory):
    seed_gan = cfg_factory("experiment=seed_gan")
    assert seed_gan.data.name == "fashion_mnist"  # (batch 100 too: the test fixture overrides it)
    assert list(seed_gan.model.optimizer.betas) == [0.9, 0.999] and seed_gan.model.lr == 2e-4
    assert seed_gan.trainer.max_epochs == 10 and seed_gan.model.generator.latent_dim == 64
    assert seed_gan.model.ema_decay is None and cfg_factory().model.ema_decay == 0.999  # the seeds sample from G itself
    assert (seed_gan.model.loss, seed_gan.model.r1_gamma) == ("bce", 0.0) != (cfg_factory().model.loss, cfg_factory().model.r1_gamma)
    seed_cgan = cfg_factory("experiment=seed_cgan", "data=mnist")
    assert seed_cgan.model.generator.num_classes == 10 and seed_cgan.data.name == "mnist"
    assert list(seed_cgan.model.optimizer.betas) == [0.9, 0.999] and seed_cgan.model.lr == 2e-4 and seed_cgan.trainer.max_epochs == 10
    assert (seed_cgan.model.loss, seed_cgan.model.r1_gamma) == ("bce", 0.0)
    # The presets themselves: the seeds' architectures, the measured training defaults.
    cgan = cfg_factory("model=cgan", "data=mnist", "recipe=cgan")  # its own recipe (conf/recipe/, tests/test_presets.py)
    assert list(cgan.model.optimizer.betas) == [0.5, 0.999] and cgan.model.lr == 5e-4 and cgan.trainer.max_epochs == 20
    assert list(cgan.model.generator.hidden_dims) == list(seed_cgan.model.generator.hidden_dims)


def test_the_second_seeds_gan_is_a_preset_and_its_recipe_an_experiment(cfg_factory):
    """seed 003: G 100->128->256->512->784 (ReLU, Tanh), D 784->512->256->1 (ReLU), BCE, Adam lr 2e-4, batch 128."""
    seed = cfg_factory("experiment=seed_gan_mnist")
    assert seed.data.name == "mnist" and seed.trainer.max_epochs == 100  # (batch 128 too: the test fixture overrides it)
    assert list(seed.model.optimizer.betas) == [0.9, 0.999] and seed.model.lr == 2e-4 and seed.model.ema_decay is None
    assert seed.model.loss == "bce" and seed.model.r1_gamma == 0.0
    model = instantiate(seed.model)
    linears = lambda net: [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, torch.nn.Linear)]  # noqa: E731
    assert linears(model.generator) == [(100, 128), (128, 256), (256, 512), (512, 784)]
    assert linears(model.discriminator) == [(784, 512), (512, 256), (256, 1)]
    activations = lambda net: {type(m).__name__ for m in net.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.Tanh))}  # noqa: E731
    assert activations(model.generator) == {"ReLU", "Tanh"} and activations(model.discriminator) == {"ReLU"}
    preset = cfg_factory("model=gan_mnist")  # the same nets with the project's training recipe
    assert list(preset.model.optimizer.betas) == [0.5, 0.999] and preset.model.ema_decay == 0.999
    assert preset.model.generator == seed.model.generator and preset.model.discriminator == seed.model.discriminator
