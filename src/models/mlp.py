"""The seeds' fully connected generator and discriminator, as plain ``nn.Module``s.

Conditioning is a constructor argument: ``num_classes=None`` builds the unconditional
model; an integer embeds the label (``nn.Embedding(num_classes, embed_dim)``) and
concatenates it to the noise (G) or to the flattened image (D), as the seed cGAN does.
The discriminator returns logits (the seeds' final ``Sigmoid`` moves into
``binary_cross_entropy_with_logits``: the same model, numerically safer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

from src.errors import ConfigError


def _activation(name: str, negative_slope: float) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    raise ConfigError(f"unknown activation {name!r}: use 'relu' or 'leaky_relu'")


INITS = ("default", "kaiming")


def initialize(module: nn.Module, init: str) -> None:
    """``default``: torch's own initialization (the tutorials'). ``kaiming``: He et al. 2015's
    normal initialization for ReLU layers (weights N(0, 2 / fan_in), biases 0), which keeps the
    spread of the activations through the layers: torch's default shrinks it by about a third per
    ReLU layer, so the second seed's G starts with every z mapped within a few hundredths of one
    grey image (docs/recipes.md, "gan_mnist"). The layers themselves are unchanged."""
    if init == "default":
        return
    if init != "kaiming":
        raise ConfigError(f"unknown init {init!r}: use one of {INITS}")
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)


def _mlp(in_dim: int, hidden_dims: Sequence[int], activation: str, negative_slope: float, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(in_dim, width), _activation(activation, negative_slope)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    return layers


class _Conditioning(nn.Module):
    """Concatenates a learned label embedding to the input, or passes it through unchanged."""

    def __init__(self, num_classes: int | None, embed_dim: int | None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = 0 if num_classes is None else (embed_dim or num_classes)
        self.embed = None if num_classes is None else nn.Embedding(num_classes, self.embed_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            return x
        if labels is None:
            raise ValueError(f"this model is conditional on {self.num_classes} classes: pass labels")
        return torch.cat([x, self.embed(labels)], dim=1)


class MLPGenerator(nn.Module):
    """z (and optionally a class label) -> image in [-1, 1] of shape ``(N, *img_shape)``."""

    def __init__(
        self,
        latent_dim: int = 64,
        hidden_dims: Sequence[int] = (256, 256),
        img_shape: Sequence[int] = (1, 28, 28),
        num_classes: int | None = None,
        embed_dim: int | None = None,
        activation: str = "relu",
        negative_slope: float = 0.2,
        init: str = "default",
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.img_shape = tuple(img_shape)
        self.num_classes = num_classes
        self.conditioning = _Conditioning(num_classes, embed_dim)
        in_dim = latent_dim + self.conditioning.embed_dim
        self.net = nn.Sequential(
            *_mlp(in_dim, hidden_dims, activation, negative_slope, dropout=0.0),
            nn.Linear(hidden_dims[-1] if hidden_dims else in_dim, math.prod(self.img_shape)),
            nn.Tanh(),
        )
        initialize(self.net, init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.conditioning(z, labels)).view(z.size(0), *self.img_shape)


class MLPDiscriminator(nn.Module):
    """Image (and optionally its class label) -> one real/fake logit per image, shape ``(N,)``."""

    def __init__(
        self,
        img_shape: Sequence[int] = (1, 28, 28),
        hidden_dims: Sequence[int] = (256, 256),
        num_classes: int | None = None,
        embed_dim: int | None = None,
        activation: str = "leaky_relu",
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        spectral_norm: bool = False,
        init: str = "default",
    ) -> None:
        super().__init__()
        self.img_shape = tuple(img_shape)
        self.num_classes = num_classes
        self.conditioning = _Conditioning(num_classes, embed_dim)
        in_dim = math.prod(self.img_shape) + self.conditioning.embed_dim
        self.net = nn.Sequential(
            *_mlp(in_dim, hidden_dims, activation, negative_slope, dropout),
            nn.Linear(hidden_dims[-1] if hidden_dims else in_dim, 1),
        )
        initialize(self.net, init)
        if spectral_norm:  # each layer's weight divided by its largest singular value (Miyato et al. 2018): the same layers, a 1-Lipschitz D
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    add_spectral_norm(layer)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.conditioning(images.flatten(1), labels)).squeeze(1)
