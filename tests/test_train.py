"""End-to-end training through `train(cfg)` on every model x data preset."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import DATASETS, MODELS
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.gan_module import GAN
from src.train import train

PRESETS = [(m, d) for m in MODELS for d in DATASETS]


@pytest.mark.parametrize(("model", "data"), PRESETS)
def test_presets_compose_and_instantiate(cfg_factory, model, data):
    cfg = cfg_factory(f"model={model}", f"data={data}")
    gan = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    assert isinstance(gan, GAN)
    assert datamodule.name == data
    assert gan.conditional == (model == "cgan")
    z = torch.randn(4, gan.latent_dim)
    labels = torch.arange(4) if gan.conditional else None
    images = gan(z, labels)
    assert images.shape == (4, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    assert gan.discriminator(images, labels).shape == (4,)


@pytest.mark.parametrize(("model", "data"), PRESETS)
def test_fast_dev_run(cfg_factory, model, data):
    cfg = cfg_factory(f"model={model}", f"data={data}", "+trainer.fast_dev_run=true")
    metrics = train(cfg)
    for name in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "val/d_loss"):
        assert torch.isfinite(torch.tensor(metrics[name])), name
    if cfg.model.loss == "bce":  # D's mean probability of "real"; hinge's scores are unbounded
        assert 0 < metrics["train/d_real"] < 1 and 0 < metrics["train/d_fake"] < 1


@pytest.mark.parametrize("model", MODELS)
def test_run_leaves_config_checkpoint_samples_and_events(cfg_factory, tmp_path, model):
    cfg = cfg_factory(f"model={model}", "trainer.max_epochs=2")
    train(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    written = ["epoch_000.png", "epoch_001.png", "final.png"]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == sorted(written + [f"interpolation_{name}" for name in written])
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "val/d_real", "val/d_fake"} <= scalars
    grids = events.Images("samples")
    # One grid per epoch, on the scalars' x-axis (batches: 240 images / 32 = 8 per epoch).
    assert [grid.step for grid in grids] == [8, 16]
    assert events.Scalars("train/d_loss")[-1].step == 15
    # 10 rows x 10 columns of 28 px images with 2 px padding; the conditional grid adds a label margin.
    assert grids[-1].height == 302
    assert (grids[-1].width > 302) == (model == "cgan")
    # The latent walks: 10 steps a row; 8 walks, or one walk in each of the cGAN's 10 class rows.
    walks = events.Images("interpolation")
    assert [walk.step for walk in walks] == [8, 16]
    assert walks[-1].height == (302 if model == "cgan" else 242) and (walks[-1].width > 302) == (model == "cgan")


def _hparams_plugin(folder: Path) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    data = {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}
    start = data["_hparams_/session_start_info"].session_start_info
    assert "_hparams_/session_end_info" in data
    hparams = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    return {"hparams": hparams, "metrics": events.Tags()["scalars"]}  # TensorBoard takes the run's scalars as its metrics


@pytest.mark.parametrize("model", MODELS)
def test_the_hparams_tab_gets_the_runs_hyperparameters_with_its_final_figures(cfg_factory, tmp_path, model):
    cfg = cfg_factory(
        f"model={model}", "model.lr_d=3e-4", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "callbacks.sample_quality.num_samples=50"
    )
    train(cfg)
    plugin = _hparams_plugin(tmp_path / "tensorboard")
    hparams = plugin["hparams"]
    assert hparams["model.lr_d"] == pytest.approx(3e-4) and hparams["model.lr_g"] == hparams["model.lr"] == pytest.approx(cfg.model.lr)
    assert hparams["model.beta1"] == cfg.model.optimizer.betas[0] and hparams["model.beta2"] == pytest.approx(cfg.model.optimizer.betas[1])
    assert hparams["model.ema_decay"] == pytest.approx(0.999) and hparams["model.loss"] == cfg.model.loss
    assert hparams["model.r1_gamma"] == pytest.approx(cfg.model.r1_gamma) and hparams["model.lr_decay_fraction"] == 0
    assert hparams["data.batch_size"] == 32 and hparams["seed"] == 42 and hparams["data.name"] == "fashion_mnist"
    quality = {"val/fid", "val/kid", "val/precision", "val/recall", "val/density", "val/coverage", "val/classifier_score", "val/class_entropy"}
    assert quality | {"train/d_loss", "train/g_loss"} <= set(plugin["metrics"])
    assert ({"val/ifid", "val/cond_acc"} <= set(plugin["metrics"])) == (model == "cgan")


def test_threads_sets_torchs_cpu_threads_for_the_run_then_restores_them(cfg_factory, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = {}

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.update(threads=torch.get_num_threads(), env=os.environ.get("OMP_NUM_THREADS"))

    threads_before = torch.get_num_threads()
    cfg = cfg_factory("threads=1", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1")
    train(cfg, extra_callbacks=[Probe()])
    assert seen == {"threads": 1, "env": "1"}  # DDP's worker processes start with OMP_NUM_THREADS
    assert torch.get_num_threads() == threads_before and "OMP_NUM_THREADS" not in os.environ
