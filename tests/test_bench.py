"""The benchmarks run: a tiny form of `make bench`, so that a change cannot silently break it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.data.idx import write_idx
from src.data.provision import RAW_FILES, raw_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_root(tmp_path) -> Path:
    # The seed loop, as the tutorial wrote it, reshapes every batch to its 100 images: whole batches only.
    data_root = tmp_path / "data"
    folder = raw_folder("fashion_mnist", data_root)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, size in (("train", 300), ("test", 100)):
        write_idx(folder / RAW_FILES[f"{split}_images"], rng.integers(0, 256, size=(size, 28, 28), dtype=np.uint8))
        write_idx(folder / RAW_FILES[f"{split}_labels"], (np.arange(size) % 10).astype(np.uint8))
    return data_root


def gan_rows(script: str, data_root: Path, *args: str) -> list[list[str]]:
    """Runs ``bench/<script>`` on the tiny data (``args`` after the data folder) and returns the
    cells of its table's ``gan`` rows."""
    out = subprocess.run(
        [sys.executable, f"bench/{script}", "--data-dir", str(data_root), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.stdout.splitlines() if line.startswith("| gan |")]
    assert rows, out.stdout
    return rows


# A few batches of the gan preset, once: the loops run, not how fast.
TINY = ("--presets", "gan", "--batches", "2", "--warmup", "0", "--repeats", "1", "--override", "data.sources=[local]")


@pytest.mark.slow
def test_bench_runs_every_loop_and_prints_its_table(data_root):
    rows = gan_rows("bench.py", data_root, *TINY)
    assert [row[1] for row in rows] == [
        "seed",
        "plain",
        "barebones",
        "lightning",
        "lightning_k5",
        "recipe",
        "recipe_k5",
        "recipe_r1_1",
        "recipe_no_r1",
        "recipe_bf16",
    ]


@pytest.mark.slow
def test_the_interleaved_k_bench_runs_and_prints_its_table(data_root):
    rows = gan_rows("batches_per_step.py", data_root, *TINY, "--ks", "1", "2")
    assert [row[1] for row in rows] == ["plain PyTorch", "Lightning, K=1", "Lightning, K=2"]


@pytest.mark.slow
def test_the_whole_process_bench_runs_both_processes_and_prints_its_table(data_root):
    args = ("--repeats", "1", "--override", "data.sources=[local]", "callbacks.sample_quality.num_samples=100")
    rows = gan_rows("whole_process.py", data_root, *args)
    assert [row[1] for row in rows] == ["seed 000's loop", "python -m src.train"]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)  # each process's 1- and 2-epoch seconds
