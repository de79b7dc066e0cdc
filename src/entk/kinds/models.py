"""The paper's two models and their generated data sets (spec: docs/spec.md §1, §2)."""

from __future__ import annotations

import math

import torch
from torch import nn


class TMS(nn.Module):
    """Toy model of superposition y = ReLU(Wᵀ W x + b), W (m, n), x (N, n) -> y (N, n) (paper §1)."""

    def __init__(self, n_features: int, m_hidden: int, generator: torch.Generator | None = None):
        super().__init__()
        if n_features < 1 or m_hidden < 1:
            raise ValueError(f"TMS needs n_features ≥ 1 and m_hidden ≥ 1, got {n_features}, {m_hidden}")
        w = torch.empty(m_hidden, n_features)
        # Xavier-normal by hand so that the generator (and so the seed) decides the draw.
        std = math.sqrt(2.0 / (n_features + m_hidden))
        self.W = nn.Parameter(torch.randn(w.shape, generator=generator) * std)
        self.b = nn.Parameter(torch.zeros(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W.T @ self.W + self.b)


class ModMLP(nn.Module):
    """1-layer MLP for (a+b) mod p: x (N, 2p) -> logits (N, p), activation x² (paper §2).

    The 1/√(2p) and 1/hidden scales live outside the Linear modules so that the structured
    kernel path sees plain ``nn.Linear`` layers.
    """

    def __init__(self, p: int, hidden: int = 512, generator: torch.Generator | None = None):
        super().__init__()
        if p < 2 or hidden < 1:
            raise ValueError(f"ModMLP needs p ≥ 2 and hidden ≥ 1, got p={p}, hidden={hidden}")
        self.p, self.hidden = p, hidden
        self.fc1 = nn.Linear(2 * p, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, p, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.randn(self.fc1.weight.shape, generator=generator))
            self.fc2.weight.copy_(torch.randn(self.fc2.weight.shape, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fc2((fc1(x)/√(2p))²)/hidden with both scales folded into one multiply of the (N, p) output:
        # fewer elementwise passes over the (N, hidden) activations in every vjp/jvp (products ≈ 15 %
        # faster at p = 113).
        return self.fc2(self.fc1(x).square()) * (1.0 / (2 * self.p * self.hidden))


def tms_importance(n_features: int, base: float) -> torch.Tensor:
    """Feature importances I_i = base**i, shape (n,)."""
    return base ** torch.arange(n_features, dtype=torch.float64)


def tms_data(n_points: int, n_features: int, sparsity: float, generator: torch.Generator) -> torch.Tensor:
    """One fixed data set (N, n): feature zero with prob. S, else U[0, 1]; rows scaled to unit norm."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must lie in [0, 1], got {sparsity}")
    vals = torch.rand(n_points, n_features, generator=generator)
    keep = torch.rand(n_points, n_features, generator=generator) >= sparsity
    x = vals * keep
    norm = x.norm(dim=1, keepdim=True)
    # An all-zero point (likely at S = 0.9) stays zero rather than becoming NaN.
    return torch.where(norm > 0, x / norm.clamp_min(1e-30), x)


def modadd_inputs(p: int) -> torch.Tensor:
    """All p² inputs one-hot(a) ‖ one-hot(b), row i = a·p + b, shape (p², 2p)."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.zeros(p * p, 2 * p)
    rows = torch.arange(p * p)
    x[rows, a.reshape(-1)] = 1.0
    x[rows, p + b.reshape(-1)] = 1.0
    return x


def modadd_labels(p: int) -> torch.Tensor:
    """Labels (a + b) mod p for row i = a·p + b, shape (p²,)."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    return ((a + b) % p).reshape(-1)


def modadd_split(p: int, train_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random train/test split of the p² rows: (train_idx, test_idx)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    perm = torch.randperm(p * p, generator=generator)
    n_train = round(train_fraction * p * p)
    return perm[:n_train].sort().values, perm[n_train:].sort().values
