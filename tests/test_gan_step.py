"""The adversarial step itself: who moves when, how often, and what conditioning does."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from conftest import HostReads, StepRecorder, bare_trainer, weights_changed, weights_of
from hydra.utils import instantiate

from src.gan_module import decay_epochs, linear_decay
from src.train import train


@pytest.mark.parametrize("model", ["gan", "cgan"])
def test_d_step_moves_only_d_then_g_step_moves_only_g(cfg_factory, model):
    cfg = cfg_factory(f"model={model}", "trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=0")
    recorder = StepRecorder()
    trainer = bare_trainer(limit_train_batches=3, callbacks=[recorder])
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    # Per batch: one D step that changes D alone, then one G step that changes G alone.
    assert recorder.events == [("D", False, True), ("G", True, False)] * 3
    assert trainer.global_step == 6  # manual optimization counts both optimizer steps


def test_g_step_computes_no_gradient_for_d(cfg_factory):
    cfg = cfg_factory("model=gan")
    gan = instantiate(cfg.model)
    trainer = bare_trainer(limit_train_batches=1)
    seen = {}

    def grad_hook(name):
        def hook(grad):
            seen[name] = seen.get(name, 0) + 1

        return hook

    gan.discriminator.net[0].weight.register_hook(grad_hook("d_weight"))
    gan.generator.net[0].weight.register_hook(grad_hook("g_weight"))
    trainer.fit(gan, datamodule=instantiate(cfg.data))
    # D's first-layer weight gets a gradient once (the D step), G's once (the G step).
    assert seen == {"d_weight": 1, "g_weight": 1}


def test_conditional_output_depends_on_label(cfg_factory):
    gan = instantiate(cfg_factory("model=cgan").model)
    z = torch.randn(1, gan.latent_dim).expand(10, -1)
    images = gan.sample(z, torch.arange(10))
    assert torch.allclose(images[0], gan.sample(z[:1], torch.tensor([0]))[0], atol=1e-6)
    distinct = {tuple(img.flatten()[:50].tolist()) for img in images}
    assert len(distinct) == 10
    real = torch.rand(1, 1, 28, 28).expand(10, -1, -1, -1)
    assert gan.discriminator.eval()(real, torch.arange(10)).unique().numel() == 10


def test_unconditional_model_ignores_no_label_and_conditional_requires_one(cfg_factory):
    cgan = instantiate(cfg_factory("model=cgan").model)
    with pytest.raises(ValueError, match="conditional on 10 classes"):
        cgan.generator(torch.randn(2, cgan.latent_dim))


def test_one_key_sets_both_learning_rates_and_separate_rates_override(cfg_factory):
    # R1 on every batch: lazy R1 (the searched recipe's r1_every=16) scales D's rate by 16/17 (test_stabilizers.py)
    gan = instantiate(cfg_factory("model.lr=1e-3", "model.r1_every=1").model)
    opt_g, opt_d = gan.build_optimizers()
    assert opt_g.param_groups[0]["lr"] == opt_d.param_groups[0]["lr"] == 1e-3
    gan = instantiate(cfg_factory("model.lr=1e-3", "model.lr_d=4e-3", "model.r1_every=1").model)
    opt_g, opt_d = gan.build_optimizers()
    assert (opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"]) == (1e-3, 4e-3)


def test_linear_decay_lowers_the_rate_over_the_last_epochs_only():
    factors = [linear_decay(epoch, max_epochs=20, decaying=10) for epoch in range(20)]
    assert factors[:10] == [1.0] * 10
    assert factors[10:] == pytest.approx([k / 11 for k in range(10, 0, -1)])  # the last epoch still trains, at 1/11
    assert linear_decay(0, max_epochs=5, decaying=5) == pytest.approx(5 / 6)  # the whole run decays


def test_the_decaying_share_of_a_run_is_rounded_to_whole_epochs():
    assert [decay_epochs(0.25, max_epochs) for max_epochs in (20, 10, 3, 1)] == [5, 3, 1, 0]  # 2.5 rounds up; 0.25 epochs: none
    assert decay_epochs(0.0, 20) == 0 and decay_epochs(1.0, 20) == 20


def test_fixed_noise_is_seeded_and_identical_across_builds(cfg_factory):
    cfg = cfg_factory("model=cgan")
    L.seed_everything(cfg.seed)
    a = instantiate(cfg.model)
    L.seed_everything(cfg.seed)
    b = instantiate(cfg.model)
    assert torch.equal(a.fixed_noise, b.fixed_noise)
    assert a.fixed_labels.tolist() == [k for k in range(10) for _ in range(10)]


def test_same_seed_same_result(cfg_factory, tmp_path):
    runs = []
    for name in ("a", "b"):
        train(cfg_factory("model=cgan", "trainer.max_epochs=1", output_dir=tmp_path / name))
        runs.append(torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.parametrize(
    "overrides",
    [["model=gan"], ["model=cgan"], ["model=dcgan_cond", "model.loss=wgan_gp", "model.n_critic=2", "model.r1_gamma=1", "model.ema_decay=0.99"]],
)
def test_training_step_reads_from_the_device_once_per_logging_step_and_never_otherwise(cfg_factory, monkeypatch, overrides):
    cfg = cfg_factory(*overrides)
    assert cfg.model.ema_decay is not None  # the EMA update is part of the step
    host_reads = HostReads(monkeypatch)
    trainer = bare_trainer(limit_train_batches=7, log_every_n_steps=3, callbacks=[host_reads])
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    assert host_reads.logging_batches == {2, 5}
    # The EMA update, the optimizer steps and the losses queue work without waiting for it; a
    # logging step copies all its values to the host at once (Lightning then reads host tensors).
    assert {batch: reads for batch, reads in host_reads.per_batch.items() if batch not in host_reads.logging_batches} == {
        b: [] for b in (0, 1, 3, 4, 6)
    }
    for batch in host_reads.logging_batches:
        reads = host_reads.per_batch[batch]
        assert reads[0] == "cpu" and reads.count("cpu") == 1, reads


@pytest.mark.skipif(torch.cuda.is_available(), reason="about machines without a GPU")
def test_without_a_gpu_optimizer_steps_stop_looking_for_nvml(cfg_factory, monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # what importing Lightning sets
    probes = {"setup": 0, "training": 0}
    phase = {"now": "setup"}
    nvml_device_count = torch.cuda._device_count_nvml

    def counted_probe():
        probes[phase["now"]] += 1
        return nvml_device_count()

    class Phase(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            phase["now"] = "training"

    monkeypatch.setattr(torch.cuda, "_device_count_nvml", counted_probe)
    cfg = cfg_factory("model=gan")
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=0,
        callbacks=[Phase()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    # Before training, NVML finds no GPU; the 8 optimizer steps that follow no longer ask it
    # (each step() checks whether a GPU is capturing a CUDA graph).
    assert probes["setup"] >= 1 and probes["training"] == 0 and trainer.global_step == 8
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "0"


def test_a_barebones_trainer_trains_the_module(cfg_factory):
    """bench/bench.py's Lightning floor: ``barebones=True`` sets ``log_every_n_steps`` to 0 (the
    logging-step rule divided by it: ZeroDivisionError in the first batch)."""
    cfg = cfg_factory()
    gan = instantiate(cfg.model)
    before = weights_of(gan.generator)
    trainer = L.Trainer(barebones=True, accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(gan, datamodule=instantiate(cfg.data))
    assert trainer.log_every_n_steps == 0 and gan.batches_trained == 2 and weights_changed(before, gan.generator)
