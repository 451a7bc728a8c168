"""Reliability: exact resume, and a diverging run that stops with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.errors import NonFiniteLossError
from src.train import train

EPOCH = ["+trainer.limit_train_batches=4", "+trainer.limit_val_batches=1"]


def _weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def _scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


# The EMA case also resumes the n_critic rhythm: 4 batches per epoch, a G step every 3rd batch,
# so the resumed third epoch must take its G step on its first batch.
MODEL_CASES = {"gan": ["model=gan"], "cgan": ["model=cgan"], "dcgan_ema_n_critic": ["model=dcgan_cond", "model.ema_decay=0.9", "model.n_critic=3"]}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_resume_gives_the_same_weights_and_metrics_as_one_go(cfg_factory, tmp_path, case):
    model = MODEL_CASES[case]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(cfg_factory(*model, "trainer.max_epochs=3", *EPOCH, output_dir=straight))
    train(cfg_factory(*model, "trainer.max_epochs=2", *EPOCH, output_dir=resumed))
    # Continue in the same run folder, as the README shows: ckpt_path=last finds checkpoints/last.ckpt.
    train(cfg_factory(*model, "trainer.max_epochs=3", *EPOCH, "ckpt_path=last", output_dir=resumed))
    expected, actual = _weights(straight), _weights(resumed)
    assert actual["epoch"] == expected["epoch"]
    g_steps = 3 * 4 if case != "dcgan_ema_n_critic" else 4  # G steps after batches 3, 6, 9, 12
    assert actual["global_step"] == expected["global_step"] == 3 * 4 + g_steps  # D steps (one per batch) + G steps
    if case == "dcgan_ema_n_critic":
        assert any(name.startswith("generator_ema.") for name in expected["state_dict"])
        assert expected["state_dict"]["generator_ema.n_averaged"] == 4
    for name, value in expected["state_dict"].items():
        assert torch.equal(value, actual["state_dict"][name]), name
    for exp_opt, act_opt in zip(expected["optimizer_states"], actual["optimizer_states"], strict=True):
        for key, state in exp_opt["state"].items():
            assert torch.equal(state["exp_avg"], act_opt["state"][key]["exp_avg"])
    # The third epoch logged the same values in both runs.
    for tag in ("train/d_loss", "train/g_loss", "val/d_real"):
        straight_values, resumed_values = _scalars(straight, tag), _scalars(resumed, tag)
        last_epoch = {step: value for step, value in straight_values.items() if step >= 8}
        assert last_epoch and all(resumed_values[step] == value for step, value in last_epoch.items()), tag


def test_lr_decay_follows_the_schedule_and_a_resumed_run_keeps_it(cfg_factory, tmp_path):
    """The last two thirds of three epochs train at 2/3 and 1/3 of the rate. A run stopped after two
    epochs (max_steps) and resumed reaches the same weights and optimizer states as one that
    trained straight through: the schedule is saved in checkpoints and caught up on resume."""
    # r1_every=1: both optimizers at model.lr (lazy R1 scales D's rate by 16/17)
    model = ["model=gan", "model.lr=1e-3", "model.r1_every=1", "model.lr_decay_fraction=0.67", "trainer.max_epochs=3", *EPOCH]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(cfg_factory(*model, output_dir=straight))
    train(cfg_factory(*model, "+trainer.max_steps=16", output_dir=resumed))  # two epochs of 4 D + 4 G steps
    stopped = _weights(resumed)
    assert stopped["epoch"] == 1 and [group["lr"] for group in stopped["optimizer_states"][0]["param_groups"]] == [pytest.approx(2e-3 / 3)]
    train(cfg_factory(*model, "ckpt_path=last", output_dir=resumed))
    expected, actual = _weights(straight), _weights(resumed)
    assert actual["global_step"] == expected["global_step"] == 3 * 8
    for state in (expected, actual):
        assert [group["lr"] for opt in state["optimizer_states"] for group in opt["param_groups"]] == [pytest.approx(1e-3 / 3)] * 2
        assert [scheduler["last_epoch"] for scheduler in state["lr_schedulers"]] == [2, 2]
    for name, value in expected["state_dict"].items():
        assert torch.equal(value, actual["state_dict"][name]), name
    # TensorBoard shows each epoch's rates, in the resumed run too.
    for run_dir in (straight, resumed):
        for tag in ("train/lr_g", "train/lr_d"):
            assert list(_scalars(run_dir, tag).values()) == pytest.approx([1e-3, 2e-3 / 3, 1e-3 / 3]), (run_dir.name, tag)


def test_nonfinite_loss_stops_with_the_batch_and_loss_named(cfg_factory):
    # A learning rate this large sends the weights to inf within a few steps.
    cfg = cfg_factory("model.lr=1e30", "trainer.max_epochs=2")
    with pytest.raises(NonFiniteLossError, match=r"train/(d|g)_loss became (nan|inf|-inf) at batch \d+ \(epoch \d\)"):
        train(cfg)


def test_each_checkpoint_callback_gets_its_own_state_back_from_a_checkpoint(cfg_factory, tmp_path):
    """Both RunCheckpoints (best, last) store their state in every checkpoint; a resumed run's
    callbacks, built from the same config, find each its own (the best score, the best file)."""
    cfg = cfg_factory("trainer.max_epochs=1", *EPOCH, "callbacks.sample_quality.num_samples=50")
    train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    best, last = instantiate(cfg.callbacks.best_checkpoint), instantiate(cfg.callbacks.model_checkpoint)
    assert best.state_key != last.state_key and {best.state_key, last.state_key} <= set(checkpoint["callbacks"])
    best.load_state_dict(checkpoint["callbacks"][best.state_key])
    last.load_state_dict(checkpoint["callbacks"][last.state_key])
    logged_fid = json.loads((tmp_path / "metrics.json").read_text())["val/fid"]
    assert float(best.best_model_score) == pytest.approx(logged_fid) and Path(best.best_model_path).name == "best.ckpt"
    assert Path(last.best_model_path).name == "last.ckpt" and last.monitor is None


def _best_state(checkpoint: dict) -> dict:
    """The best-checkpoint callback's saved state (the one that monitors val/fid)."""
    (state,) = (value for key, value in checkpoint["callbacks"].items() if "val/fid" in key)
    return state


def test_a_resumed_run_keeps_one_best_checkpoint_the_best_of_all_epochs(cfg_factory, tmp_path):
    quality = ["callbacks.sample_quality.num_samples=50", *EPOCH]
    train(cfg_factory("trainer.max_epochs=1", *quality))
    train(cfg_factory("trainer.max_epochs=3", *quality, "ckpt_path=last"))
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # no best-v1.ckpt
    fid = [value for _, value in sorted(_scalars(tmp_path, "val/fid").items())]  # one per epoch
    assert len(fid) == 3
    assert torch.load(folder / "best.ckpt", weights_only=True)["epoch"] == fid.index(min(fid))
    # last.ckpt carries the best-checkpoint state of its own epoch, not of the epoch before.
    last = torch.load(folder / "last.ckpt", weights_only=False)
    assert _best_state(last)["best_model_score"].item() == pytest.approx(min(fid))


def test_last_checkpoint_is_written_every_epoch_even_when_validation_is_not(cfg_factory, tmp_path):
    train(cfg_factory("trainer.max_epochs=1", "trainer.check_val_every_n_epoch=2", *EPOCH))
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


class _Poison(L.Callback):
    """Turns G's or D's weights to NaN after the last batch of epoch 1: between logging steps,
    where no loss shows it. Records the epochs that were validated after training began."""

    def __init__(self, net: str) -> None:
        self.net = net
        self.validated: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 3:
            with torch.no_grad():
                next(getattr(pl_module, self.net).parameters()).fill_(float("nan"))

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validated.append(trainer.current_epoch)


NO_VALIDATION = ["+trainer.limit_train_batches=4", "+trainer.limit_val_batches=0", "~callbacks.sample_quality", "~callbacks.best_checkpoint"]


@pytest.mark.parametrize(
    ("net", "epoch"),
    [
        ("generator", EPOCH),  # caught before validation: epoch 1's samples are never scored
        ("discriminator", NO_VALIDATION),  # caught at the epoch's end, before the checkpoint callbacks
    ],
)
def test_weights_that_diverge_between_logging_steps_stop_the_run_before_they_are_scored_or_saved(cfg_factory, tmp_path, net, epoch):
    cfg = cfg_factory("trainer.max_epochs=3", "trainer.log_every_n_steps=3", *epoch)  # logs after batches 3, 6, 9
    poison = _Poison(net)
    with pytest.raises(NonFiniteLossError, match=rf"^the weights of {net[0].upper()} became non-finite in epoch 1: training diverged"):
        train(cfg, extra_callbacks=[poison])
    assert poison.validated == ([0] if epoch is EPOCH else [])
    last = _weights(tmp_path)
    assert last["epoch"] == 0  # epoch 1's checkpoint was never written
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values() if value.is_floating_point())


def test_resuming_a_finished_run_keeps_its_metrics(cfg_factory, tmp_path):
    quality = ["trainer.max_epochs=1", "callbacks.sample_quality.num_samples=50", *EPOCH]
    train(cfg_factory(*quality))
    before = (tmp_path / "metrics.json").read_text()
    assert '"val/fid"' in before
    train(cfg_factory(*quality, "ckpt_path=last"))  # max_epochs already reached: nothing to train
    assert (tmp_path / "metrics.json").read_text() == before
