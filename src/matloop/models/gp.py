"""Gaussian process on GNN embeddings (exact, or inducing-point when the training set is large)."""

from __future__ import annotations

import gpytorch
import torch
from torch import Tensor, nn

# Cholesky up to this size, so predictions are deterministic (no randomised CG/Lanczos).
_MAX_CHOLESKY = 10_000


class _GPModel(gpytorch.models.ExactGP):
    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        likelihood: gpytorch.likelihoods.GaussianLikelihood,
        inducing: Tensor | None,
        ard: bool,
    ) -> None:
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        ard_dims = x.shape[1] if ard else None
        kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=ard_dims))
        if inducing is not None:
            kernel = gpytorch.kernels.InducingPointKernel(
                kernel, inducing_points=inducing, likelihood=likelihood
            )
        self.covar_module = kernel

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class EmbeddingGP(nn.Module):
    """RBF-kernel GP regression on standardised embeddings (float64), with a learned noise.

    The predictive variance grows with the distance from the training embeddings, so σ is
    distance-aware. With ``ard`` every embedding dimension has its own length scale
    (automatic relevance determination), so uninformative dimensions stop diluting distances.

    Args:
        x: training embeddings [n, d].
        y: training targets [n] (normalised).
        n_inducing: inducing points for the sparse (SGPR, Titsias 2009) approximation, or
            ``None`` for the exact GP.
        seed: seeds the choice of initial inducing points.
        ard: one length scale per dimension (else one shared length scale).
    """

    def __init__(
        self, x: Tensor, y: Tensor, *, n_inducing: int | None = None, seed: int = 0, ard: bool = True
    ) -> None:
        super().__init__()
        x = x.double()
        self.register_buffer("x_mean", x.mean(0))
        self.register_buffer("x_std", x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones(x.shape[1]))
        self.register_buffer("train_x", (x - self.x_mean) / self.x_std)
        self.register_buffer("train_y", y.double())
        inducing = None
        if n_inducing is not None:
            gen = torch.Generator().manual_seed(seed)
            pick = torch.randperm(len(x), generator=gen)[:n_inducing]
            inducing = self.train_x[pick].clone()
        self.likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.GreaterThan(1e-4)
        ).double()
        self.gp = _GPModel(self.train_x, self.train_y, self.likelihood, inducing, ard).double()

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> EmbeddingGP:
        """Rebuild from :meth:`state_dict` output (keys without prefix)."""
        key = "gp.covar_module.inducing_points"
        n_inducing = state[key].shape[0] if key in state else None
        lengthscale = next(v for k, v in state.items() if k.endswith("raw_lengthscale"))
        x = state["train_x"] * state["x_std"] + state["x_mean"]
        model = cls(x, state["train_y"], n_inducing=n_inducing, ard=lengthscale.shape[-1] > 1)
        model.load_state_dict(state)
        return model

    def fit(self, *, iterations: int = 100, lr: float = 0.1) -> list[float]:
        """Type-II maximum likelihood of the kernel and noise; returns the loss curve."""
        x, y = self.train_x, self.train_y
        with torch.no_grad():  # start the length scale at the median pairwise distance
            sub = x[: min(len(x), 500)]
            median = torch.cdist(sub, sub).median().clamp_min(1e-3)
            scaled = self.gp.covar_module
            if isinstance(scaled, gpytorch.kernels.InducingPointKernel):
                scaled = scaled.base_kernel
            scaled.base_kernel.lengthscale = median
        self.gp.train()
        self.likelihood.train()
        opt = torch.optim.Adam(self.gp.parameters(), lr=lr)
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(self.likelihood, self.gp)
        losses = []
        with gpytorch.settings.max_cholesky_size(_MAX_CHOLESKY):
            for _ in range(iterations):
                opt.zero_grad()
                loss = -mll(self.gp(x), y)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        self.gp.eval()
        self.likelihood.eval()
        return losses

    @torch.no_grad()
    def predict(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Predictive mean, variance (noise included) and latent variance at embeddings ``x`` [m, d]."""
        self.gp.eval()
        self.likelihood.eval()
        x = (x.double() - self.x_mean) / self.x_std
        with gpytorch.settings.max_cholesky_size(_MAX_CHOLESKY):
            latent = self.gp(x)
            return latent.mean, self.likelihood(latent).variance, latent.variance
