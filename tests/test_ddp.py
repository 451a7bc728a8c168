"""DDP on two CPU processes (gloo): the proof that the two-optimizer step is synchronized."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from src.train import check_launch, train
from src.errors import ConfigError

BATCHES = 3


class RankProbe(L.Callback):
    """In every rank: the noise it will draw first, its first batch, and its final weights."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            state = torch.get_rng_state()
            self.z = torch.randn(4, pl_module.latent_dim)  # what GAN._draw is about to draw
            torch.set_rng_state(state)
            self.labels = batch[1].clone()

    def on_train_end(self, trainer, pl_module) -> None:
        weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"z": self.z, "labels": self.labels, "weights": weights}, self.out_dir / f"rank{trainer.global_rank}.pt")


def _run(cfg_factory, out_dir: Path, *overrides: str) -> list[dict]:
    out_dir.mkdir(parents=True)
    cfg = cfg_factory("model=cgan", "trainer.max_epochs=1", f"+trainer.limit_train_batches={BATCHES}", "+trainer.limit_val_batches=2", *overrides, output_dir=out_dir)
    train(cfg, extra_callbacks=[RankProbe(out_dir)])
    return [torch.load(path, weights_only=True) for path in sorted(out_dir.glob("rank*.pt"))]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_averages_gradients_and_writes_once(cfg_factory, tmp_path):
    ranks = _run(cfg_factory, tmp_path / "ddp", "trainer=ddp_cpu")
    assert len(ranks) == 2
    # Different noise and different data in each rank...
    assert not torch.equal(ranks[0]["z"], ranks[1]["z"])
    assert not torch.equal(ranks[0]["labels"], ranks[1]["labels"])
    # ...yet identical G and D after every step: both optimizers' gradients were all-reduced.
    for name, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][name]), name
    # Averaged, not one rank's own step: a single process on the same seed ends elsewhere.
    single = _run(cfg_factory, tmp_path / "single", "trainer=cpu")[0]["weights"]
    assert not torch.equal(single["generator.net.0.weight"], ranks[0]["weights"]["generator.net.0.weight"])
    # Logging, checkpoints and samples were written once, by rank zero.
    assert len(list((tmp_path / "ddp" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (tmp_path / "ddp" / "samples" / "final.png").is_file()
    # Same seed, same result.
    again = _run(cfg_factory, tmp_path / "again", "trainer=ddp_cpu")
    for name, value in ranks[0]["weights"].items():
        assert torch.equal(value, again[0]["weights"][name]), name


def test_multirun_with_a_relaunching_ddp_strategy_is_refused(cfg_factory):
    cfg = cfg_factory("trainer=ddp")
    with pytest.raises(ConfigError, match="would rerun the whole --multirun sweep"):
        check_launch(cfg, multirun=True)
    check_launch(cfg, multirun=False)
    check_launch(cfg_factory("trainer=ddp_cpu"), multirun=True)
