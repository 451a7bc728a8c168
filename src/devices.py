"""Process settings that depend on the machine: CPU threads, and torch's GPU probe without a GPU."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from src.errors import ConfigError

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def skip_nvml_probe_without_gpu() -> None:
    """On a machine without a GPU, stop torch from looking for NVML on every optimizer step.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, so that
    ``torch.cuda.is_available()`` asks NVML rather than initializing CUDA (a process forked
    after CUDA is initialized cannot use it). Without a GPU that answer is never cached: each
    call tries to load ``libnvidia-ml.so.1`` again, and torch's optimizers make that call in
    every ``step()`` (their CUDA-graph capture check). With the CUDA build of torch (what pip
    installs on Linux) that is a measurable share of a ``gan`` batch on a CPU (BENCHMARKS.md). With no
    GPU there is nothing to initialize, so torch's default check, answered once and cached, is
    as safe.
    """
    if os.environ.get(NVML_CHECK) == "1" and not torch.cuda.is_available():
        os.environ[NVML_CHECK] = "0"


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``threads`` for the block (None: left as they are).

    ``OMP_NUM_THREADS`` is set with them: DDP's worker processes read it when they start, and
    Lightning splits the cores among them only when it is unset. Both are restored afterwards,
    so a caller in the same process (a notebook, the tests) gets its own setting back.
    """
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive integer (or null: one per core), got {threads!r}")
    threads_before, env_before = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before
