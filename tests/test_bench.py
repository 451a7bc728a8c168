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


@pytest.mark.slow
def test_bench_runs_every_loop_and_prints_its_table(data_root):
    out = subprocess.run(
        [
            sys.executable,
            "bench/bench.py",
            "--data-dir",
            str(data_root),
            "--presets",
            "gan",
            "--batches",
            "2",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--override",
            "data.sources=[local]",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| gan |")]
    assert [row.split("|")[2].strip() for row in rows] == [
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
    ], out.stdout


@pytest.mark.slow
def test_the_interleaved_k_bench_runs_and_prints_its_table(data_root):
    small = [
        "--data-dir",
        str(data_root),
        "--presets",
        "gan",
        "--batches",
        "2",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--override",
        "data.sources=[local]",
    ]
    out = subprocess.run(
        [sys.executable, "bench/batches_per_step.py", *small, "--ks", "1", "2"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| gan |")]
    assert [row.split("|")[2].strip() for row in rows] == ["plain PyTorch", "Lightning, K=1", "Lightning, K=2"], out.stdout


@pytest.mark.slow
def test_the_whole_process_bench_runs_both_processes_and_prints_its_table(data_root):
    out = subprocess.run(
        [
            sys.executable,
            "bench/whole_process.py",
            "--data-dir",
            str(data_root),
            "--repeats",
            "1",
            "--override",
            "data.sources=[local]",
            "callbacks.sample_quality.num_samples=100",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| gan |")]
    assert [row[2].strip() for row in rows] == ["seed 000's loop", "python -m src.train"], out.stdout
    assert all(float(row[3]) > 0 and float(row[4]) > 0 for row in rows), out.stdout  # each process's 1- and 2-epoch seconds
