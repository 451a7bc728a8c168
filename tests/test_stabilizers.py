"""What D sees (src/augment.py) and the collapse diagnostics (src/diagnostics.py)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import bare_trainer
from hydra.utils import instantiate

from src.augment import cutout, diff_augment, noise_std, parse_policy, translation
from src.diagnostics import collapse_diagnostics
from src.models.mlp import MLPDiscriminator


def test_translation_shifts_each_image_by_at_most_four_pixels_and_pads_with_zeros():
    torch.manual_seed(0)
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 14, 14] = 1.0
    shifted = translation(image.expand(64, -1, -1, -1))
    where = [divmod(int(img.flatten().argmax()), 28) for img in shifted]
    assert all(img.sum() == 1 for img in shifted)  # one pixel moved, none lost
    assert all(abs(r - 14) <= 4 and abs(c - 14) <= 4 for r, c in where)
    assert len(set(where)) > 10  # a shift of its own for each image
    edge = translation(torch.ones(256, 1, 28, 28))
    assert edge.min() == 0 and edge.max() == 1  # a shifted-in border is zeros


def test_cutout_zeros_one_square_of_half_the_size_partly_outside_near_the_border():
    torch.manual_seed(0)
    out = cutout(torch.ones(256, 1, 28, 28))
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() == 14 * 14 and zeros.min() >= 7 * 7
    assert out.max() == 1


def test_the_augmentations_pass_gradients_to_the_images():
    images = torch.randn(8, 1, 28, 28, requires_grad=True)
    diff_augment(images, parse_policy("translation,cutout")).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_a_policy_is_a_comma_separated_list_of_known_ops():
    assert parse_policy("translation, cutout") == parse_policy(["translation", "cutout"]) == ("translation", "cutout")
    assert parse_policy(None) == parse_policy("") == ()
    with pytest.raises(ValueError, match="unknown augmentation 'color'"):
        parse_policy("translation,color")


def test_instance_noise_falls_linearly_to_zero_over_the_run():
    assert [noise_std(0.2, p) for p in (0.0, 0.25, 1.0, 1.5)] == pytest.approx([0.2, 0.15, 0.0, 0.0])


class DInputs(L.Callback):
    """Records every batch D is given while training (both steps), before the module's hooks."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.discriminator.register_forward_pre_hook(
            lambda module, args: self.inputs.append(args[0].detach().clone()) if module.training else None
        )


def _d_inputs(cfg_factory, *overrides: str) -> list[torch.Tensor]:
    cfg = cfg_factory("model=gan", *overrides)
    recorder = DInputs()
    L.seed_everything(0)
    bare_trainer(limit_train_batches=2, log_every_n_steps=50, callbacks=[recorder]).fit(instantiate(cfg.model), datamodule=instantiate(cfg.data))
    return recorder.inputs


def test_diffaugment_cuts_out_every_image_d_sees_real_and_fake_in_both_steps(cfg_factory):
    plain = _d_inputs(cfg_factory, "model.r1_gamma=0")
    augmented = _d_inputs(cfg_factory, "model.r1_gamma=0", "model.diffaugment=cutout")
    # Per batch: one D pass over real and fake together (64 images), one G-step pass over the fakes (32).
    assert [batch.shape[0] for batch in augmented] == [batch.shape[0] for batch in plain] == [64, 32, 64, 32]
    # The real images are k/255 mapped to [-1, 1] and never exactly 0; a cutout zeroes at least 7x7 pixels.
    assert all(((batch == 0).flatten(1).sum(1) >= 49).all() for batch in augmented)
    assert not any((batch == 0).flatten(1).sum(1).gt(0).all() for batch in plain)


def test_instance_noise_changes_what_d_sees_and_off_draws_nothing(cfg_factory):
    plain = _d_inputs(cfg_factory)
    again = _d_inputs(cfg_factory, "model.instance_noise=0.0", "model.diffaugment=null")
    noisy = _d_inputs(cfg_factory, "model.instance_noise=0.5")
    assert all(torch.equal(a, b) for a, b in zip(plain, again, strict=True))  # off: the same draws, bit for bit
    assert not torch.equal(plain[0], noisy[0])
    assert (noisy[0] - plain[0])[:32].std() == pytest.approx(0.5, rel=0.1)  # the real half, at the run's start


def test_the_diagnostics_tell_dead_units_flat_g_and_d_slopes():
    torch.manual_seed(0)
    d = MLPDiscriminator(hidden_dims=[16, 8], activation="relu")
    real, fake = torch.rand(32, 1, 28, 28) * 2 - 1, torch.zeros(32, 1, 28, 28)
    figures = collapse_diagnostics(d, real, fake)
    assert set(figures) == {"train/d_dead_l1", "train/d_dead_l2", "train/d_grad_real", "train/d_grad_fake", "train/g_std"}
    assert figures["train/g_std"] == 0  # every fake the same image
    assert float(figures["train/d_grad_real"]) > 0
    with torch.no_grad():
        d.net[0].bias.fill_(-1e3)  # no unit of the first layer can fire
    dead = collapse_diagnostics(d, real, fake)
    assert dead["train/d_dead_l1"] == 1 and dead["train/d_grad_real"] == 0
    assert all(p.grad is None for p in d.parameters()) and d.training  # nothing trained, mode kept


def test_a_run_logs_the_diagnostics_and_the_noise_it_used(cfg_factory, tmp_path):
    from src.train import train

    metrics = train(
        cfg_factory("model=gan_mnist", "data=mnist", "trainer.max_epochs=1", "model.instance_noise=0.1", "model.diffaugment=[translation,cutout]")
    )
    assert {"train/d_dead_l1", "train/d_dead_l2", "train/d_grad_real", "train/d_grad_fake", "train/g_std"} <= set(metrics)
    assert 0 <= metrics["train/d_dead_l1"] <= 1 and 0 < metrics["train/instance_noise"] < 0.1


def test_spectral_norm_bounds_each_layer_of_the_mlp_discriminator():
    torch.manual_seed(0)
    d = MLPDiscriminator(hidden_dims=[64, 32], activation="relu", spectral_norm=True)
    for _ in range(20):  # the power iteration converges as D trains (one step per forward in train mode)
        d(torch.randn(8, 1, 28, 28))
    layers = [layer for layer in d.net if isinstance(layer, torch.nn.Linear)]
    assert len(layers) == 3
    assert all(float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)) == pytest.approx(1.0, abs=0.05) for layer in layers)
    plain = MLPDiscriminator(hidden_dims=[64, 32], activation="relu")
    assert [name for name, _ in plain.named_parameters()] == [
        "net.0.weight",
        "net.0.bias",
        "net.2.weight",
        "net.2.bias",
        "net.4.weight",
        "net.4.bias",
    ]


def test_lazy_r1_runs_on_every_nth_batch_weighted_by_n_and_rescales_d_s_adam(cfg_factory, monkeypatch):
    from src import losses

    calls: list[int] = []
    r1 = losses.r1_penalty

    def counted(logits, real):
        calls.append(1)
        return r1(logits, real)

    monkeypatch.setattr(losses, "r1_penalty", counted)
    for every, expected in ((1, 7), (3, 3)):  # batches 1..7: every one; the 1st, 4th and 7th
        calls.clear()
        cfg = cfg_factory("model=gan", "model.r1_gamma=1", f"model.r1_every={every}")
        gan = instantiate(cfg.model)
        bare_trainer(limit_train_batches=7, log_every_n_steps=50).fit(gan, datamodule=instantiate(cfg.data))
        assert len(calls) == expected, every
    plain, lazy = (instantiate(cfg_factory("model=gan", f"model.r1_every={n}").model).build_optimizers()[1] for n in (1, 4))
    assert plain.param_groups[0]["lr"] == 8e-4 and plain.param_groups[0]["betas"] == (0.0, 0.9)
    assert lazy.param_groups[0]["lr"] == pytest.approx(8e-4 * 0.8) and lazy.param_groups[0]["betas"] == pytest.approx((0.0, 0.9**0.8))
    # A recipe without R1 (cgan on MNIST) has nothing lazy: r1_every leaves D's optimizer as configured.
    unaffected = instantiate(cfg_factory("model=cgan", "data=mnist", "model.r1_every=16").model).build_optimizers()[1]
    assert unaffected.param_groups[0]["lr"] == 5e-4 and unaffected.param_groups[0]["betas"] == (0.0, 0.999)


def test_he_init_gives_the_second_seed_s_g_the_spread_torch_s_default_takes_away():
    from src.models.mlp import MLPGenerator

    def spread(init: str) -> float:
        torch.manual_seed(0)
        g = MLPGenerator(latent_dim=100, hidden_dims=[128, 256, 512], init=init)
        with torch.no_grad():
            return float(g(torch.randn(500, 100)).flatten(1).std(dim=0).mean())

    assert spread("default") < 0.05 < 0.3 < spread("kaiming")  # every z near one grey image, or spread out
    d = MLPDiscriminator(hidden_dims=[64], activation="relu", init="kaiming")
    assert float(d.net[0].bias.detach().abs().sum()) == 0 and float(d.net[0].weight.detach().std()) == pytest.approx((2 / 784) ** 0.5, rel=0.05)
