"""Beyond the seeds: the DCGAN nets, the losses and penalties, n_critic, the EMA of G, the presets."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import HostReads, StepRecorder
from hydra.utils import instantiate
from torch.optim.swa_utils import AveragedModel

from src import losses
from src.errors import ConfigError
from src.models import DCGANDiscriminator, DCGANGenerator
from src.preflight.training import check_config
from src.train import train

EXPERIMENTS = sorted(path.stem for path in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("dcgan*.yaml"))
TRAINER = dict(
    accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0
)


@pytest.mark.parametrize("num_classes", [None, 10])
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_dcgan_shapes_and_conditioning(num_classes, spectral_norm):
    generator = DCGANGenerator(latent_dim=16, num_classes=num_classes, base_channels=8)
    discriminator = DCGANDiscriminator(num_classes=num_classes, base_channels=8, spectral_norm=spectral_norm).eval()
    labels = torch.arange(10) if num_classes else None
    z = torch.randn(1, 16).expand(10, -1)
    images = generator.eval()(z, labels)
    assert images.shape == (10, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    assert discriminator(images, labels).shape == (10,)
    if num_classes:  # the same z and the same image, ten labels: ten different outputs
        assert len({tuple(img.flatten()[:50].tolist()) for img in images}) == 10
        assert discriminator(images[:1].expand(10, -1, -1, -1), labels).unique().numel() == 10
        with pytest.raises(ValueError, match="conditional on 10 classes"):
            generator(z)
    assert (generator.latent_dim, generator.num_classes, discriminator.num_classes) == (16, num_classes, num_classes)


def test_spectral_norm_bounds_each_d_layer():
    discriminator = DCGANDiscriminator(num_classes=10, base_channels=8, spectral_norm=True)
    for _ in range(20):  # power iterations run in training-mode forwards
        discriminator(torch.randn(4, 1, 28, 28), torch.arange(4))
    head = discriminator.head.weight.detach()  # the parametrized weight: W / sigma(W)
    assert torch.linalg.matrix_norm(head, ord=2).item() == pytest.approx(1.0, abs=1e-3)


def test_losses_have_the_right_signs():
    confident = (torch.full((4,), 3.0), torch.full((4,), -3.0))  # D right on both halves
    fooled = (torch.full((4,), -1.0), torch.full((4,), 1.0))  # D wrong on both halves
    assert losses.d_loss("hinge", *confident) == 0  # beyond the margin: nothing to learn
    assert losses.d_loss("hinge", *fooled) == 4
    assert losses.g_loss("hinge", torch.full((4,), 3.0)) == -3  # G gains when D scores its fakes high
    assert losses.d_loss("wgan_gp", torch.full((4,), 2.0), torch.full((4,), -1.0)) == -3  # minus the critic's gap
    assert losses.g_loss("wgan_gp", torch.full((4,), 1.0)) == -1
    assert losses.d_loss("bce", *confident) < losses.d_loss("bce", *fooled)
    assert losses.g_loss("bce", confident[1]) > losses.g_loss("bce", fooled[1])


def test_bce_is_the_seeds_math_and_smoothing_softens_only_the_real_target():
    real, fake = torch.randn(8), torch.randn(8)
    seeds = F.binary_cross_entropy_with_logits(real, torch.ones(8)) + F.binary_cross_entropy_with_logits(fake, torch.zeros(8))
    assert torch.equal(losses.d_loss("bce", real, fake), seeds)
    smoothed = F.binary_cross_entropy_with_logits(real, torch.full((8,), 0.9)) + F.binary_cross_entropy_with_logits(fake, torch.zeros(8))
    assert torch.allclose(losses.d_loss("bce", real, fake, real_target=0.9), smoothed)
    assert torch.equal(losses.g_loss("bce", fake), F.binary_cross_entropy_with_logits(fake, torch.ones(8)))


@pytest.mark.parametrize("num_classes", [None, 10])
def test_gradient_penalty_is_nonzero_and_differentiable(num_classes):
    discriminator = DCGANDiscriminator(num_classes=num_classes, base_channels=8)
    real, fake = torch.rand(6, 1, 28, 28) * 2 - 1, torch.rand(6, 1, 28, 28) * 2 - 1
    labels = torch.arange(6) if num_classes else None
    penalty = losses.gradient_penalty(discriminator, real, fake, labels)
    assert penalty.item() > 0  # DCGAN init: |grad| is far from 1
    penalty.backward()  # second-order: through the gradient to D's weights
    # Every weight gets a gradient (biases only shift the piecewise-linear D: no say in its slope).
    grads = [p.grad for name, p in discriminator.named_parameters() if "bias" not in name]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_r1_penalty_is_nonzero_and_differentiable():
    discriminator = DCGANDiscriminator(base_channels=8)
    real = torch.rand(6, 1, 28, 28).requires_grad_(True)
    penalty = losses.r1_penalty(discriminator(real), real)
    assert penalty.item() > 0
    penalty.backward()
    assert discriminator.head.weight.grad.abs().sum() > 0


def test_ema_moves_toward_g_by_one_minus_decay_after_a_warmup(cfg_factory):
    gan = instantiate(cfg_factory("model=dcgan_cond", "model.ema_decay=0.9").model)
    ema, generator = gan.generator_ema, gan.generator
    assert sum(p.numel() for p in ema.parameters()) == sum(p.numel() for p in generator.parameters())  # G only, not D
    assert not any(p.requires_grad for p in ema.parameters())
    ema.update_parameters(generator)  # the first update copies G
    for n in range(1, 200):
        with torch.no_grad():
            for p in generator.parameters():
                p.add_(1.0)  # a stand-in for an optimizer step
        gap_before = [(g - e).clone() for g, e in zip(generator.parameters(), ema.module.parameters(), strict=True)]
        ema.update_parameters(generator)
        decay = min(0.9, (1 + n) / (10 + n))  # ramps up from 2/11, reaches 0.9 at n = 80
        for before, g, e in zip(gap_before, generator.parameters(), ema.module.parameters(), strict=True):
            assert torch.allclose(g - e, decay * before, rtol=1e-4, atol=1e-4), n  # 1 - decay of the way toward G


def _ramped_ema_reference(generator: torch.nn.Module, decay: float) -> AveragedModel:
    """torch's AveragedModel with the same ramped decay, the straightforward (syncing) way."""

    def ramped_lerp(averaged, current, num_averaged):
        n = float(num_averaged)
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (10 + n)))
        else:
            torch._foreach_copy_(averaged, current)

    return AveragedModel(generator, multi_avg_fn=ramped_lerp, use_buffers=True)


def test_ema_matches_torchs_averaged_model_reads_nothing_back_and_resumes_its_count(cfg_factory, monkeypatch):
    gan = instantiate(cfg_factory("model=dcgan_cond", "model.ema_decay=0.9").model)  # G with BatchNorm buffers
    generator, ema = gan.generator, gan.generator_ema
    reference = _ramped_ema_reference(generator, 0.9)
    host_reads = HostReads(monkeypatch)
    z, labels = torch.randn(8, generator.latent_dim), torch.arange(8)
    for _ in range(12):
        generator(z, labels).mean().backward()  # train mode: BatchNorm's statistics move too
        with torch.no_grad():
            for p in generator.parameters():
                p.sub_(0.1 * p.grad)
        generator.zero_grad()
        host_reads.active = True
        ema.update_parameters(generator)
        host_reads.active = False
        reference.update_parameters(generator)
    assert host_reads.reads == []
    assert ema.state_dict().keys() == reference.state_dict().keys()
    for name, value in ema.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name
    # A resumed run continues the ramp from the checkpoint's count, not from a first update.
    resumed = instantiate(cfg_factory("model=dcgan_cond", "model.ema_decay=0.9").model).generator_ema
    resumed.load_state_dict(ema.state_dict())
    for averaged in (resumed, reference):
        averaged.update_parameters(generator)
    assert int(resumed.n_averaged) == 13
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name


def test_ema_is_updated_after_each_g_step_and_sampled_from(cfg_factory):
    cfg = cfg_factory("model=dcgan_cond", "model.ema_decay=0.5", "model.n_critic=2")
    gan = instantiate(cfg.model)
    initial = [p.detach().clone() for p in gan.generator.parameters()]
    L.Trainer(max_epochs=1, limit_train_batches=5, **TRAINER).fit(gan, datamodule=instantiate(cfg.data))
    assert gan.generator_ema.n_averaged.item() == 2  # G steps after batches 2 and 4
    ema_params = list(gan.generator_ema.module.parameters())
    assert any(not torch.equal(e, g) for e, g in zip(ema_params, gan.generator.parameters(), strict=True))
    assert any(not torch.equal(e, i) for e, i in zip(ema_params, initial, strict=True))
    # sample() draws from the EMA G, the live G is left as it was.
    expected = gan.generator_ema.module.eval()(gan.fixed_noise, gan.fixed_labels)
    assert torch.equal(gan.sample(), expected)
    assert gan.generator.training
    assert not torch.equal(gan.sample(), gan.generator.eval()(gan.fixed_noise, gan.fixed_labels))


def test_n_critic_steps_d_that_many_times_per_g_step_across_epochs(cfg_factory):
    cfg = cfg_factory("model=gan", "model.n_critic=3", "model.loss=wgan_gp")
    recorder = StepRecorder()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=4, callbacks=[recorder], **TRAINER)
    trainer.fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    # Eight batches, a fresh real batch and one D step each; G steps after every third D step,
    # counted across the epoch boundary (4 is not a multiple of 3).
    d, g = ("D", False, True), ("G", True, False)
    assert recorder.events == [d, d, d, g, d, d, d, g, d, d]
    assert trainer.global_step == 8 + 2  # both optimizers' steps


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_preset_fast_dev_run(cfg_factory, experiment):
    cfg = cfg_factory(f"experiment={experiment}", "+trainer.fast_dev_run=true")
    metrics = train(cfg)
    for name in ("train/d_loss", "train/d_real", "train/d_fake", "val/d_loss", "val/g_loss"):
        assert torch.isfinite(torch.tensor(metrics[name])), name
    if cfg.model.loss == "wgan_gp":
        assert metrics["train/gp"] > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.loss=lsgan", r"model.loss must be one of \('bce', 'hinge', 'wgan_gp'\), got 'lsgan'"),
        ("model.n_critic=0", "model.n_critic must be a positive integer"),
        ("model.ema_decay=1.5", "model.ema_decay must be in"),
        ("model.label_smoothing=0.1 model.loss=hinge", "has no target to soften"),
        ("model.lr_decay_fraction=1.5", r"model.lr_decay_fraction must be in \[0, 1\]: the last share of trainer.max_epochs"),
        ("model.lr_decay_fraction=-0.1", r"model.lr_decay_fraction must be in \[0, 1\]"),
        ("model.lr_decay_fraction=0.25 trainer.max_epochs=null", "trainer.max_epochs, which is null: set trainer.max_epochs"),
        ("model.diffaugment=[translation,color]", r"model.diffaugment must be null \(off\) or a list of \('translation', 'cutout'\)"),
        ("model.diffaugment=5", "model.diffaugment must be null"),
        ("model.instance_noise=-0.1", "model.instance_noise must be zero"),
        ("model.generator.init=xavier", r"model.generator.init must be one of \('default', 'kaiming'\)"),
        ("model.r1_every=0", r"model.r1_every must be a positive integer \(R1 on every N-th batch\)"),
        ("model.instance_noise=0.1 trainer.max_epochs=null", "model.instance_noise is annealed to 0 over trainer.max_epochs, which is null"),
    ],
)
def test_bad_training_options_name_the_key(cfg_factory, override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(cfg_factory(*override.split()))


def test_torch_compile_compiles_g_and_d_in_place(cfg_factory):
    eager = instantiate(cfg_factory("model=cgan").model)
    compiled = instantiate(cfg_factory("model=cgan", "model.torch_compile=true").model)
    assert eager.generator._compiled_call_impl is None
    compiled.setup("fit")
    assert compiled.generator._compiled_call_impl is not None and compiled.discriminator._compiled_call_impl is not None
    # In place: the checkpoint's parameter names are the eager model's, so either loads the other's.
    assert list(compiled.state_dict()) == list(eager.state_dict())
    compiled.load_state_dict(eager.state_dict())
