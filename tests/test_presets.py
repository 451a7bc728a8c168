"""What each preset, recipe and experiment resolves to: the nets from conf/model/, how they train
from conf/recipe/ (one file per recipe, conf/recipe/default/ picks one per model and data set)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

MODELS = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (Path(CONF_DIR) / "data").glob("*.yaml"))
RECIPES = sorted(p.stem for p in (Path(CONF_DIR) / "recipe").glob("*.yaml"))
# The keys a recipe sets (src/gan_module.py's training arguments); no model preset may set them.
RECIPE_KEYS = (
    "lr",
    "lr_g",
    "lr_d",
    "loss",
    "gp_weight",
    "r1_gamma",
    "r1_every",
    "n_critic",
    "label_smoothing",
    "ema_decay",
    "lr_decay_fraction",
    "diffaugment",
    "instance_noise",
    "optimizer",
)
PLAIN = {
    "r1_every": 1,
    "lr_g": None,
    "lr_d": None,
    "gp_weight": 10.0,
    "n_critic": 1,
    "label_smoothing": 0.0,
    "lr_decay_fraction": 0.0,
    "diffaugment": None,
    "instance_noise": 0.0,
}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "fused": True}
# What each recipe must train with (docs/recipes.md says why and what it measured).
EXPECTED_RECIPES = {
    "seed": PLAIN | {"lr": 2e-4, "loss": "bce", "r1_gamma": 0.0, "ema_decay": None, "optimizer": ADAM | {"betas": [0.9, 0.999]}},
    "dcgan": PLAIN | {"lr": 2e-4, "loss": "bce", "r1_gamma": 0.0, "ema_decay": None, "optimizer": ADAM | {"betas": [0.5, 0.999]}},
    "dcgan_ema": PLAIN | {"lr": 2e-4, "loss": "bce", "r1_gamma": 0.0, "ema_decay": 0.999, "optimizer": ADAM | {"betas": [0.5, 0.999]}},
    "cgan": PLAIN | {"lr": 5e-4, "loss": "bce", "r1_gamma": 0.0, "ema_decay": 0.999, "optimizer": ADAM | {"betas": [0.5, 0.999]}},
    "cgan_mnist": PLAIN
    | {"lr": 5e-4, "loss": "bce", "r1_gamma": 0.0, "ema_decay": 0.999, "lr_decay_fraction": 0.25, "optimizer": ADAM | {"betas": [0.0, 0.999]}},
    "searched": PLAIN | {"lr": 8e-4, "loss": "hinge", "r1_gamma": 0.1, "r1_every": 16, "ema_decay": 0.999, "optimizer": ADAM | {"betas": [0.0, 0.9]}},
    "searched_he_init": PLAIN | {"lr": 8e-4, "loss": "hinge", "r1_gamma": 0.1, "ema_decay": 0.999, "optimizer": ADAM | {"betas": [0.0, 0.9]}},
    "sngan": PLAIN | {"lr": 2e-4, "loss": "hinge", "r1_gamma": 0.0, "ema_decay": 0.995, "optimizer": ADAM | {"betas": [0.5, 0.999]}},
    "wgan_gp": PLAIN | {"lr": 1e-4, "loss": "wgan_gp", "r1_gamma": 0.0, "ema_decay": None, "n_critic": 5, "optimizer": ADAM | {"betas": [0.0, 0.9]}},
}
# The recipe each model trains with on each data set by default.
DEFAULT_RECIPE = {
    ("gan", "fashion_mnist"): "searched",
    ("gan", "mnist"): "searched",
    ("cgan", "fashion_mnist"): "searched",
    ("cgan", "mnist"): "cgan_mnist",
    ("gan_mnist", "fashion_mnist"): "dcgan_ema",
    ("gan_mnist", "mnist"): "searched_he_init",
    ("dcgan", "fashion_mnist"): "dcgan",
    ("dcgan", "mnist"): "dcgan",
    ("dcgan_cond", "fashion_mnist"): "dcgan",
    ("dcgan_cond", "mnist"): "dcgan",
}
# The nets: (G's latent size, G's widths or channels, D's widths or channels, D's activation, classes).
NETS = {
    "gan": (64, [256, 256], [256, 256], "leaky_relu", None),
    "cgan": (100, [256, 512, 1024], [1024, 512, 256], "leaky_relu", 10),
    "gan_mnist": (100, [128, 256, 512], [512, 256], "relu", None),
    "dcgan": (100, 64, 64, None, None),
    "dcgan_cond": (100, 64, 64, None, 10),
}


def _resolved(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "paths.output_dir=/out"])
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    cfg = OmegaConf.create(plain)
    return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "data", "trainer")}


def _recipe(model: dict) -> dict:
    return {key: model[key] for key in RECIPE_KEYS}


def test_every_recipe_and_only_a_recipe_sets_the_training_keys():
    assert sorted(EXPECTED_RECIPES) == RECIPES
    for path in (Path(CONF_DIR) / "model").glob("*.yaml"):
        keys = re.findall(r"^(\w+):", path.read_text(), flags=re.M)
        assert not set(keys) & set(RECIPE_KEYS), f"{path.name} sets {set(keys) & set(RECIPE_KEYS)}: a recipe's keys live in conf/recipe/"


@pytest.mark.parametrize("recipe", sorted(EXPECTED_RECIPES))
def test_each_recipe_resolves_to_its_values(recipe):
    model = _resolved(f"recipe={recipe}")["model"]
    assert _recipe(model) == EXPECTED_RECIPES[recipe]
    assert model["generator"]["init"] == ("kaiming" if recipe == "searched_he_init" else "default")


@pytest.mark.parametrize(("model", "data"), sorted(DEFAULT_RECIPE))
def test_each_model_and_data_set_trains_with_its_default_recipe_and_its_nets(model, data):
    assert sorted(DEFAULT_RECIPE) == sorted((m, d) for m in MODELS for d in DATASETS)  # every pair has a default
    composed = _resolved(f"model={model}", f"data={data}")
    resolved = composed["model"]
    # gan_mnist's recipe met its targets at 30 epochs, and its default pair trains that long.
    assert composed["trainer"]["max_epochs"] == (30 if (model, data) == ("gan_mnist", "mnist") else 20)
    assert _recipe(resolved) == EXPECTED_RECIPES[DEFAULT_RECIPE[(model, data)]]
    latent, g_widths, d_widths, d_activation, classes = NETS[model]
    generator, discriminator = resolved["generator"], resolved["discriminator"]
    assert (generator["latent_dim"], generator["num_classes"], discriminator["num_classes"]) == (latent, classes, classes)
    assert generator.get("hidden_dims", generator.get("base_channels")) == g_widths
    assert discriminator.get("hidden_dims", discriminator.get("base_channels")) == d_widths
    assert discriminator.get("activation") == d_activation
    assert discriminator.get("spectral_norm") is False and resolved["_target_"] == "src.gan_module.GAN"
    # He's initialization of G is the one net setting a recipe changes (searched_he_init); D keeps torch's.
    assert generator.get("init", "default") == ("kaiming" if DEFAULT_RECIPE[(model, data)] == "searched_he_init" else "default")
    assert discriminator.get("init", "default") == "default"


@pytest.mark.parametrize(
    ("experiment", "model", "data", "recipe", "batch_size", "max_epochs", "spectral_norm"),
    [
        ("seed_gan", "gan", "fashion_mnist", "seed", 100, 10, False),
        ("seed_cgan", "cgan", "fashion_mnist", "seed", 100, 10, False),
        ("seed_gan_mnist", "gan_mnist", "mnist", "seed", 128, 100, False),
        ("dcgan_mnist", "dcgan", "mnist", "dcgan", 128, 20, False),
        ("dcgan_cond_mnist", "dcgan_cond", "mnist", "dcgan", 128, 20, False),
        ("dcgan_hinge_mnist", "dcgan", "mnist", "sngan", 128, 20, True),
        ("dcgan_cond_hinge_mnist", "dcgan_cond", "mnist", "sngan", 128, 20, True),
        ("dcgan_wgan_gp_mnist", "dcgan", "mnist", "wgan_gp", 128, 20, False),
    ],
)
def test_an_experiment_is_a_model_a_recipe_and_a_data_set(experiment, model, data, recipe, batch_size, max_epochs, spectral_norm):
    resolved = _resolved(f"experiment={experiment}")
    own = _resolved(f"model={model}", f"data={data}", f"recipe={recipe}")["model"]
    assert _recipe(resolved["model"]) == _recipe(own) == EXPECTED_RECIPES[recipe]
    assert resolved["model"]["generator"] == own["generator"]
    assert resolved["model"]["discriminator"]["spectral_norm"] is spectral_norm
    assert (resolved["data"]["name"], resolved["data"]["batch_size"], resolved["trainer"]["max_epochs"]) == (data, batch_size, max_epochs)


def test_the_seeds_recipe_is_the_same_on_either_data_set_and_the_command_line_wins():
    for data in ("fashion_mnist", "mnist"):
        assert _recipe(_resolved("experiment=seed_cgan", f"data={data}")["model"]) == EXPECTED_RECIPES["seed"], data
    assert _resolved("model=cgan", "model.loss=bce")["model"]["loss"] == "bce"
    assert _resolved("model=cgan", "data=mnist", "recipe=searched")["model"]["loss"] == "hinge"
    assert _resolved("model=gan_mnist", "data=mnist", "trainer.max_epochs=20")["trainer"]["max_epochs"] == 20


def test_a_net_can_be_swapped_from_the_command_line():
    swapped = _resolved("model/discriminator=dcgan")
    assert swapped["model"]["discriminator"]["_target_"] == "src.models.DCGANDiscriminator"
    assert swapped["model"]["generator"]["_target_"] == "src.models.MLPGenerator"
