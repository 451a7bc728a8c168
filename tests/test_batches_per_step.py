"""``data.batches_per_step=K``: a training step trains K batches, with what one batch per step gives.

The tiny training split is 240 images: 8 batches of 32 per epoch (the last of 16), so K=3 ends
each epoch with a group of two and K=2 divides it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.callbacks.checkpoints import RunPosition
from src.data.loaders import BatchGroup, EpochSampler, TensorLoader
from src.errors import ConfigError
from src.preflight.training import check_config
from src.train import train

TWO_EPOCHS = ["trainer.max_epochs=2", "+trainer.limit_val_batches=1"]
# The searched recipe (lazy R1 on every 16th batch, the rate's decay, EMA), the cGAN's, and a
# DCGAN whose G steps on every 3rd batch, with instance noise (which reads the batch's place in the epoch).
CASES = {
    "gan": ["model=gan"],
    "cgan": ["model=cgan"],
    "dcgan_n_critic_noise": ["model=dcgan_cond", "model.n_critic=3", "model.instance_noise=0.1", "model.ema_decay=0.9"],
}


def _checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def _scalars(run_dir: Path, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def _assert_same_training(one: dict, grouped: dict) -> None:
    assert grouped["global_step"] == one["global_step"] and grouped["batches_trained"] == one["batches_trained"]
    for name, value in one["state_dict"].items():
        assert torch.equal(value, grouped["state_dict"][name]), name
    for one_opt, grouped_opt in zip(one["optimizer_states"], grouped["optimizer_states"], strict=True):
        for key, state in one_opt["state"].items():
            assert torch.equal(state["exp_avg_sq"], grouped_opt["state"][key]["exp_avg_sq"])


@pytest.mark.parametrize("case", list(CASES))
def test_k_batches_per_step_train_the_same_weights_as_one(cfg_factory, tmp_path, case):
    one, grouped = tmp_path / "one", tmp_path / "grouped"
    train(cfg_factory(*CASES[case], *TWO_EPOCHS, "trainer.log_every_n_steps=3", output_dir=one))
    train(cfg_factory(*CASES[case], *TWO_EPOCHS, "trainer.log_every_n_steps=3", "data.batches_per_step=3", output_dir=grouped))
    expected, actual = _checkpoint(one), _checkpoint(grouped)
    assert expected["batches_trained"] == 16 and actual["steps_trained"] == 6  # 3 + 3 + 2 batches per epoch
    _assert_same_training(expected, actual)
    assert _scalars(grouped, "val/fid") == _scalars(one, "val/fid")


def test_the_loggers_write_the_same_points_against_the_batch_count(cfg_factory, tmp_path):
    one, grouped = tmp_path / "one", tmp_path / "grouped"
    train(cfg_factory("model=gan", *TWO_EPOCHS, "trainer.log_every_n_steps=2", "model.lr_decay_fraction=0.5", output_dir=one))
    train(
        cfg_factory(
            "model=gan", *TWO_EPOCHS, "trainer.log_every_n_steps=2", "model.lr_decay_fraction=0.5", "data.batches_per_step=2", output_dir=grouped
        )
    )
    for tag in ("train/d_loss", "train/g_loss", "train/lr_d", "train/d_grad_real", "val/fid", "val/d_real", "epoch"):
        expected = _scalars(one, tag)
        assert expected and _scalars(grouped, tag) == expected, tag
    assert sorted(_scalars(one, "train/d_loss")) == [1, 3, 5, 7, 9, 11, 13, 15]  # every 2nd batch, 0-based as Lightning draws it
    assert sorted(_scalars(one, "val/fid")) == [7, 15]


def test_progress_bar_run_position_and_limit_count_batches(cfg_factory, tmp_path):
    class Seen(RunPosition):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            super().on_train_epoch_end(trainer, pl_module)
            bar = trainer.progress_bar_callback.train_progress_bar
            self.bar = (bar.n, bar.total, trainer.num_training_batches)

    seen = Seen()
    cfg = cfg_factory("model=gan", *TWO_EPOCHS, "trainer.log_every_n_steps=4", "data.batches_per_step=4", "+trainer.limit_train_batches=5")
    train(cfg, extra_callbacks=[seen])
    assert seen.bar == (5, 5, 2)  # 5 batches on the bar, in Lightning's 2 steps (4 + 1)
    assert seen.describe() == "at the end of epoch 1 (its 5 batches trained)"
    checkpoint = _checkpoint(tmp_path)
    assert checkpoint["batches_trained"] == 10 and checkpoint["global_step"] == 20  # a D and a G step per batch


def test_a_grouped_run_resumes_exactly(cfg_factory, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    grouped = ["model=cgan", "+trainer.limit_val_batches=1", "trainer.log_every_n_steps=3", "data.batches_per_step=3"]
    train(cfg_factory(*grouped, "trainer.max_epochs=2", output_dir=straight))
    train(cfg_factory(*grouped, "trainer.max_epochs=1", output_dir=resumed))
    train(cfg_factory(*grouped, "trainer.max_epochs=2", "ckpt_path=last", output_dir=resumed))
    expected, actual = _checkpoint(straight), _checkpoint(resumed)
    assert actual["steps_trained"] == expected["steps_trained"] == 6
    _assert_same_training(expected, actual)
    assert _scalars(resumed, "train/d_loss") == _scalars(straight, "train/d_loss")


def test_the_loader_hands_out_the_same_batches_in_groups():
    images, labels = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8), torch.arange(50) % 10
    one = list(TensorLoader(images, labels, 8, EpochSampler(50, shuffle=True, seed=3)))
    groups = list(TensorLoader(images, labels, 8, EpochSampler(50, shuffle=True, seed=3), batches_per_step=3))
    assert len(one) == 7 and [len(group.batches) for group in groups] == [3, 3, 1]
    assert all(isinstance(group, BatchGroup) and group.epoch_batches == 7 for group in groups)
    assert [group.first for group in groups] == [0, 3, 6]
    flat = [batch for group in groups for batch in group.batches]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, flat, strict=True))
    limited = TensorLoader(images, labels, 8, EpochSampler(50, shuffle=True, seed=3), batches_per_step=3, limit_batches=4)
    assert len(limited) == 2 and limited.batches == 4 and sum(len(group.batches) for group in limited) == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.batches_per_step=0"], "data.batches_per_step must be a positive integer, got 0"),
        (["data.batches_per_step=2.5"], "data.batches_per_step must be a positive integer, got 2.5"),
        (["data.batches_per_step=4", "trainer.log_every_n_steps=50"], "trainer.log_every_n_steps=50 is not a whole number of steps"),
        (["data.batches_per_step=4", "data.loader=classic", "trainer.log_every_n_steps=8"], "data.loader=classic has none to group"),
        (["data.batches_per_step=4", "trainer.log_every_n_steps=8", "+trainer.limit_train_batches=0.5"], "not a fraction"),
        (["data.batches_per_step=4", "trainer.log_every_n_steps=8", "+trainer.val_check_interval=6"], "val_check_interval=6 batches"),
        (["data.batches_per_step=4", "trainer.log_every_n_steps=8", "+trainer.max_steps=16"], "trainer.max_steps=16 counts optimizer steps"),
    ],
)
def test_settings_that_do_not_fit_k_batches_per_step_are_refused(cfg_factory, overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        check_config(cfg_factory(*overrides))
