"""The exponential moving average of G's weights that samples, metrics and checkpoints' G use.

Built on torch's ``AveragedModel`` (its state dict, ``module.*`` and ``n_averaged``, is what
checkpoints hold), with two changes that torch's EMA (``get_ema_multi_avg_fn``) lacks:

- a decay that ramps up, ``min(decay, (1 + n) / (10 + n))`` after n updates (TensorFlow's
  ``ExponentialMovingAverage`` with ``num_updates``). From the first update, a fixed 0.999
  leaves the average dominated by the random initial weights for ~1000 G steps (a grey grid
  after a few hundred steps); the ramp keeps it near G's recent weights until there is a
  history worth averaging.
- an update that reads nothing back from the device. ``AveragedModel.update_parameters``
  evaluates ``n_averaged == 0`` and ``n_averaged > 0`` on the host, and the ramp needs n as a
  number: three synchronizations per G step, each of which stalls the CPU until the GPU has
  run every queued kernel. Here the count is also kept as a Python int, so an update only
  queues kernels; ``n_averaged`` is still advanced on the device for checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class GeneratorEma(AveragedModel):
    """``AveragedModel(generator, use_buffers=True)`` with a ramped decay and a sync-free update.

    Buffers are averaged too (integer ones, such as BatchNorm's ``num_batches_tracked``, follow
    G's), so the EMA G's eval mode uses statistics that follow its averaged weights.
    """

    def __init__(self, generator: nn.Module, decay: float) -> None:
        super().__init__(generator, use_buffers=True)
        self.decay = decay
        self.requires_grad_(False)
        self._updates: int | None = 0  # n_averaged on the host; None: read it at the next update

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._updates = None  # a checkpoint's count: read once, at the next update

    def decay_at(self, updates: int) -> float:
        """The decay of the update that follows ``updates`` earlier ones."""
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._updates is None:
            self._updates = int(self.n_averaged)
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [tensor.detach() for tensor in (*model.parameters(), *model.buffers())]
        if len(averaged) != len(current):
            raise ValueError(f"the EMA holds {len(averaged)} tensors but the model has {len(current)}: not the same architecture")
        if self._updates == 0:
            torch._foreach_copy_(averaged, current)
        else:
            floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
            others = [(a, c) for a, c in zip(averaged, current, strict=True) if not a.is_floating_point()]
            # What torch's own EMA update does (get_ema_multi_avg_fn), one kernel per dtype group.
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1 - self.decay_at(self._updates))
            if others:
                torch._foreach_copy_([a for a, _ in others], [c for _, c in others])
        self.n_averaged.add_(1)
        self._updates += 1
