"""The model presets as a training recipe plus a generator and a discriminator (conf/model/{generator,discriminator}/)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

# Every preset's resolved model, data and trainer config as composed before the nets became
# config groups (a snapshot of that commit's `conf/`): the regrouping changed no value.
BEFORE = json.loads((Path(__file__).parent / "data" / "presets_before_net_groups.json").read_text())
# What the recipe search changed since, on purpose and nowhere else (docs/recipes.md).
SEARCHED_RECIPE = {"loss": "hinge", "lr": 8.0e-4, "r1_gamma": 0.1, "optimizer.betas": [0.0, 0.9]}
CHANGED = {"model=gan": SEARCHED_RECIPE, "model=cgan": SEARCHED_RECIPE}  # model=cgan: on Fashion-MNIST (conf/recipe/)
# Keys added to every model since, at the value that trains as the snapshot's config did.
ADDED = {"lr_decay_fraction": 0.0, "diffaugment": None, "instance_noise": 0.0}


# Keys added to every MLP discriminator since, at the value that trains as before.
ADDED_MLP_D = {"spectral_norm": False}


def _with_added_keys(override: str) -> dict:
    expected = copy.deepcopy(BEFORE[override])
    for key, value in ADDED.items():
        assert key not in expected["model"], f"{override}: {key} is in the snapshot already"
        expected["model"][key] = value
    if expected["model"]["discriminator"]["_target_"] == "src.models.MLPDiscriminator":
        expected["model"]["discriminator"] |= ADDED_MLP_D
    return expected


def _expected(override: str) -> dict:
    expected = _with_added_keys(override)
    for dotted, value in CHANGED.get(override, {}).items():
        *parents, key = dotted.split(".")
        node = expected["model"]
        for parent in parents:
            node = node[parent]
        assert key in node, f"{override}: {dotted} is no key of the snapshot"
        node[key] = value
    return expected


def _resolved(override: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*override.split(), "paths.output_dir=/out"])
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    cfg = OmegaConf.create(plain)
    return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "data", "trainer")}


@pytest.mark.parametrize("override", sorted(BEFORE))
def test_every_preset_composes_to_the_same_values_as_before_but_for_the_searched_recipes(override):
    assert _resolved(override) == _expected(override)


def test_a_net_can_be_swapped_from_the_command_line():
    swapped = _resolved("model/discriminator=dcgan")
    assert swapped["model"]["discriminator"]["_target_"] == "src.models.DCGANDiscriminator"
    assert swapped["model"]["generator"]["_target_"] == "src.models.MLPGenerator"


def test_the_cgan_takes_the_searched_recipe_on_fashion_mnist_and_its_mnist_recipe_on_mnist():
    fashion, mnist = _resolved("model=cgan data=fashion_mnist"), _resolved("model=cgan data=mnist")
    assert fashion["model"]["generator"] == mnist["model"]["generator"]
    recipe = {key: fashion["model"][key] for key in ("loss", "lr", "r1_gamma")} | {"optimizer.betas": fashion["model"]["optimizer"]["betas"]}
    assert recipe == SEARCHED_RECIPE and fashion["model"]["lr_decay_fraction"] == 0
    assert (mnist["model"]["loss"], mnist["model"]["lr"], mnist["model"]["r1_gamma"]) == ("bce", 5.0e-4, 0.0)
    assert (mnist["model"]["optimizer"]["betas"], mnist["model"]["lr_decay_fraction"]) == ([0.0, 0.999], 0.25)


def test_the_mnist_recipe_changes_only_beta1_and_the_decay_of_the_cgan_s_own():
    recipe, own = _resolved("model=cgan data=mnist"), _resolved("model=cgan data=mnist ~recipe")
    assert (recipe["model"]["optimizer"].pop("betas"), own["model"]["optimizer"].pop("betas")) == ([0.0, 0.999], [0.5, 0.999])
    assert (recipe["model"].pop("lr_decay_fraction"), own["model"].pop("lr_decay_fraction")) == (0.25, 0)
    assert recipe == own


def test_a_data_set_recipe_gives_way_to_the_experiment_and_the_command_line():
    seeds = _with_added_keys("experiment=seed_cgan")["model"]
    for data in ("fashion_mnist", "mnist"):  # the seeds' exact recipe on either, no data set recipe's key left over
        assert _resolved(f"experiment=seed_cgan data={data}")["model"] == seeds, data
    assert _resolved("model=cgan model.loss=bce")["model"]["loss"] == "bce"


def test_a_model_and_data_set_without_a_recipe_of_their_own_compose():
    assert _resolved("model=dcgan_cond data=fashion_mnist")["model"]["loss"] == "bce"


def test_dropping_the_data_set_recipe_gives_the_preset_s_own():
    assert _resolved("model=cgan ~recipe") == _with_added_keys("model=cgan")
