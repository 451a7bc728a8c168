"""Process settings that depend on the devices a machine has."""

from __future__ import annotations

import os

import torch

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def skip_nvml_probe_without_gpu() -> bool:
    """On a machine without a GPU, stop torch from looking for NVML on every optimizer step.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, so that
    ``torch.cuda.is_available()`` asks NVML rather than initializing CUDA (a process forked
    after CUDA is initialized cannot use it). Without a GPU that answer is never cached: each
    call tries to load ``libnvidia-ml.so.1`` again, and torch's optimizers make that call in
    every ``step()`` (their CUDA-graph capture check). With the CUDA build of torch (what pip
    installs on Linux) that cost ~10% of a ``gan`` batch on a 2-core CPU (BENCHMARKS.md). With no
    GPU there is nothing to initialize, so torch's default check, answered once and cached, is
    as safe. Returns whether the setting was changed.
    """
    if os.environ.get(NVML_CHECK) != "1" or torch.cuda.is_available():
        return False
    os.environ[NVML_CHECK] = "0"
    return True
