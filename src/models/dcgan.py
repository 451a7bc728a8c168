"""Convolutional G and D for 28x28 images (DCGAN, Radford et al. 2016), as plain ``nn.Module``s.

Same interface as the MLPs: ``latent_dim`` and ``num_classes`` attributes (``None`` =
unconditional), ``forward(z_or_images, labels)``, D returns one logit per image, shape ``(N,)``.

- G: [z, embed(label)] -> Linear -> (2c, H/4, W/4) -> 2x ConvTranspose(4, stride 2) -> Tanh,
  with BatchNorm and ReLU between, as in the DCGAN paper.
- D: 2x Conv(4, stride 2) with LeakyReLU(0.2) -> Linear -> logit; conditional through a
  projection (Miyato & Koyama 2018): logit += <embed(label), features>.
  D has no BatchNorm: the training step runs D once on real and fake images concatenated, which
  is only the same as two passes when no layer mixes the rows of a batch.
  ``spectral_norm=True`` constrains each of D's layers to spectral norm 1 (Miyato et al. 2018).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

from src.errors import ConfigError


def _dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _quarter(img_shape: Sequence[int]) -> tuple[int, int]:
    channels, height, width = img_shape
    if height % 4 or width % 4:
        raise ConfigError(f"the DCGAN models halve the image twice: height and width must be multiples of 4, got {tuple(img_shape)}")
    return height // 4, width // 4


class DCGANGenerator(nn.Module):
    """z (and optionally a class label) -> image in [-1, 1] of shape ``(N, *img_shape)``."""

    def __init__(
        self,
        latent_dim: int = 100,
        img_shape: Sequence[int] = (1, 28, 28),
        num_classes: int | None = None,
        embed_dim: int | None = None,
        base_channels: int = 64,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.img_shape = tuple(img_shape)
        self.num_classes = num_classes
        self.embed = None if num_classes is None else nn.Embedding(num_classes, embed_dim or num_classes)
        in_dim = latent_dim + (0 if self.embed is None else self.embed.embedding_dim)
        self.start_shape = (2 * base_channels, *_quarter(self.img_shape))
        self.project = nn.Linear(in_dim, math.prod(self.start_shape), bias=False)  # BatchNorm follows: no bias
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * base_channels),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * base_channels, base_channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(base_channels),
            nn.ReLU(),
            nn.ConvTranspose2d(base_channels, self.img_shape[0], 4, stride=2, padding=1),
            nn.Tanh(),
        )
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError(f"this model is conditional on {self.num_classes} classes: pass labels")
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(self.project(z).view(z.size(0), *self.start_shape))


class DCGANDiscriminator(nn.Module):
    """Image (and optionally its class label) -> one real/fake logit per image, shape ``(N,)``."""

    def __init__(
        self,
        img_shape: Sequence[int] = (1, 28, 28),
        num_classes: int | None = None,
        base_channels: int = 64,
        spectral_norm: bool = False,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.img_shape = tuple(img_shape)
        self.num_classes = num_classes
        features = 2 * base_channels * math.prod(_quarter(self.img_shape))
        self.net = nn.Sequential(
            nn.Conv2d(self.img_shape[0], base_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(negative_slope),
            nn.Conv2d(base_channels, 2 * base_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(negative_slope),
            nn.Flatten(),
        )
        self.head = nn.Linear(features, 1)
        # Projection: the label picks a direction in feature space that D's logit rewards.
        self.embed = None if num_classes is None else nn.Embedding(num_classes, features)
        self.apply(_dcgan_init)
        if spectral_norm:
            for layer in (*self.net, self.head, self.embed):
                if isinstance(layer, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    add_spectral_norm(layer)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        features = self.net(images)
        logits = self.head(features).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError(f"this model is conditional on {self.num_classes} classes: pass labels")
            logits = logits + (self.embed(labels) * features).sum(1)
        return logits
