"""Uncertainty methods: what the head outputs mean, how they are trained, how they combine.

Each method is selected by name through :func:`get_method`; an unknown name raises a
:class:`~matloop.errors.ToolInputError` that lists the valid ones. All work in normalised
target units (zero mean, unit variance over the training targets).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from matloop.errors import invalid_choice

_EPS = 1e-6


def mixture(means: Tensor, variances: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of an equal-weight Gaussian mixture; inputs are [n_components, n_items]."""
    mean = means.mean(0)
    var = (variances + means**2).mean(0) - mean**2
    return mean, var.clamp_min(_EPS)


def dropout_passes(net: nn.Module, inputs: object, samples: int) -> list[Tensor]:
    """``samples`` forward passes of ``net`` on ``inputs`` with only its dropout layers active (batch
    norm and everything else in evaluation mode); ``net`` is left in evaluation mode. Seed the
    global RNG first for reproducible masks."""
    net.eval()
    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    try:
        return [net(inputs) for _ in range(samples)]
    finally:
        net.eval()


class UQMethod:
    """Base: a mean–variance head trained with the Gaussian NLL after an MSE warm-up."""

    name: ClassVar[str]
    n_outputs: ClassVar[int] = 2
    stochastic: ClassVar[bool] = False
    """Whether prediction averages several dropout passes."""
    fits_on_embeddings: ClassVar[bool] = False
    """Whether μ and σ come from a model fitted on the trained network's pooled embeddings
    (fitted after training, saved with the checkpoint)."""

    def loss(self, out: Tensor, y: Tensor, *, warmup: bool) -> Tensor:
        mean, var = self.gaussian(out)
        if warmup:
            return F.mse_loss(mean, y)
        return F.gaussian_nll_loss(mean, y, var, full=True)

    def gaussian(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """Predictive mean and variance of one forward pass."""
        return out[:, 0], F.softplus(out[:, 1]) + _EPS

    def epistemic(self, out: Tensor) -> Tensor:
        """Model (epistemic) part of the variance of one forward pass."""
        return torch.zeros_like(out[:, 0])


class Ensemble(UQMethod):
    """Deep ensemble (Lakshminarayanan et al. 2017): K seeded members, mixture of their Gaussians."""

    name = "ensemble"


class MCDropout(UQMethod):
    """Monte-Carlo dropout (Gal & Ghahramani 2016): T stochastic passes, mixture of their Gaussians."""

    name = "mc_dropout"
    stochastic = True


class Evidential(UQMethod):
    """Deep evidential regression (Amini et al. 2020): a Normal-Inverse-Gamma head (γ, ν, α, β).

    Loss: the NIG negative log-likelihood plus ``lam`` · |y − γ| · (2ν + α), the evidence
    regulariser. Predictive variance: aleatoric β/(α−1) plus epistemic β/(ν(α−1)).
    """

    name = "evidential"
    n_outputs = 4

    def __init__(self, lam: float = 0.01) -> None:
        self.lam = lam

    @staticmethod
    def nig(out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        gamma = out[:, 0]
        nu = F.softplus(out[:, 1]) + _EPS
        alpha = F.softplus(out[:, 2]) + 1.0 + _EPS
        beta = F.softplus(out[:, 3]) + _EPS
        return gamma, nu, alpha, beta

    def loss(self, out: Tensor, y: Tensor, *, warmup: bool) -> Tensor:
        gamma, nu, alpha, beta = self.nig(out)
        if warmup:
            return F.mse_loss(gamma, y)
        omega = 2.0 * beta * (1.0 + nu)
        nll = (
            0.5 * torch.log(math.pi / nu)
            - alpha * torch.log(omega)
            + (alpha + 0.5) * torch.log((y - gamma) ** 2 * nu + omega)
            + torch.lgamma(alpha)
            - torch.lgamma(alpha + 0.5)
        )
        reg = (y - gamma).abs() * (2.0 * nu + alpha)
        return (nll + self.lam * reg).mean()

    def gaussian(self, out: Tensor) -> tuple[Tensor, Tensor]:
        gamma, nu, alpha, beta = self.nig(out)
        return gamma, beta / (alpha - 1.0) * (1.0 + 1.0 / nu)

    def epistemic(self, out: Tensor) -> Tensor:
        _, nu, alpha, beta = self.nig(out)
        return beta / (nu * (alpha - 1.0))


class GPHead(UQMethod):
    """Gaussian process on the pooled embeddings (Allotey, Butler & Thiyagalingam, JCP 2021).

    The network is trained with an MSE head; an exact (or inducing-point) GP is then fitted
    on its pooled embeddings and gives the predictive mean and variance.
    """

    name = "gp"
    n_outputs = 1
    fits_on_embeddings = True

    def loss(self, out: Tensor, y: Tensor, *, warmup: bool) -> Tensor:
        return F.mse_loss(out[:, 0], y)

    def gaussian(self, out: Tensor) -> tuple[Tensor, Tensor]:
        return out[:, 0], torch.full_like(out[:, 0], float("nan"))


METHODS: dict[str, type[UQMethod]] = {m.name: m for m in (Ensemble, MCDropout, Evidential, GPHead)}


def get_method(name: str, *, evidential_lambda: float = 0.01) -> UQMethod:
    """The uncertainty method called ``name``; unknown names raise listing the valid ones."""
    if name not in METHODS:
        raise invalid_choice("an uncertainty method", name, METHODS)
    cls = METHODS[name]
    return Evidential(evidential_lambda) if cls is Evidential else cls()
