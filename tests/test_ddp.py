"""DDP on two CPU processes (gloo): the proof that the two-optimizer step is synchronized."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from src.errors import ConfigError, NonFiniteLossError
from src.preflight.training import check_launch
from src.train import train

REPO = Path(__file__).resolve().parents[1]

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
    cfg = cfg_factory(
        "model=cgan",
        "trainer.max_epochs=1",
        f"+trainer.limit_train_batches={BATCHES}",
        "+trainer.limit_val_batches=2",
        *overrides,
        output_dir=out_dir,
    )
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


@pytest.mark.slow
def test_a_diverged_ddp_run_ends_in_the_one_line_error_of_a_single_process(cfg_factory):
    # The spawned workers raise; torch hands the parent only their formatted traceback.
    with pytest.raises(NonFiniteLossError, match=r"^train/(d|g)_loss became (nan|inf|-inf) at batch \d+ \(epoch 0\): training diverged"):
        train(
            cfg_factory("trainer=ddp_cpu", "model.lr=1e30", "trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1")
        )


def test_multirun_with_a_relaunching_ddp_strategy_is_refused(cfg_factory):
    cfg = cfg_factory("trainer=ddp")
    with pytest.raises(ConfigError, match="would rerun the whole --multirun sweep"):
        check_launch(cfg, multirun=True)
    check_launch(cfg, multirun=False)
    check_launch(cfg_factory("trainer=ddp_cpu"), multirun=True)


def test_slurm_launcher_runs_one_task_per_device_and_allows_ddp_in_a_sweep():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    check_launch(cfg, multirun=True, launcher=launcher._target_)
    with open_dict(cfg):
        cfg.trainer.devices = "auto"
    with pytest.raises(ConfigError, match="needs trainer.devices as a number"):
        check_launch(cfg, multirun=True, launcher=launcher._target_)


@pytest.mark.slow
def test_torchrun_launch_trains_two_processes_and_writes_once(tmp_path, data_root):
    """The cluster path (torchrun / srun start the processes; Lightning relaunches nothing)."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "src.train",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_epochs=1",
            "trainer.log_every_n_steps=1",
            f"data_dir={data_root}",
            "data.sources=[local]",
            "data.batch_size=30",
            "model=cgan",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    # Each rank trained on its half of the 240 images: 4 batches of 30, two optimizer steps each.
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8
