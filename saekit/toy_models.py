"""Toy models of superposition (Elhage et al., 2022): sparse features squeezed through a narrow layer.

Each input x has `n_features` entries, each zero with probability S (the sparsity), else Uniform(0, 1). The model
maps it to `d_hidden` < n_features dimensions and back, x̂ = ReLU(Wᵀ W x + b), trained on the importance-weighted
squared error Σ_i I_i (x_i − x̂_i)². Dense inputs make it keep only the d_hidden most important features, each on
its own axis; sparse ones let it pack more features than dimensions (five in two: a pentagon), because two features
rarely fire together and the ReLU with a negative bias cleans up the small interference between them.

One model per sparsity is trained at once (the weights carry an instance axis) so a sweep takes seconds on a CPU.
Its hidden activations h = W x are then ground truth for dictionary learning: the true features are W's columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from saekit.errors import InputError

TOY_THREADS = 1
"""torch threads while training: these products are far too small to gain from more (waking threads costs more than
the work, many times more on a busy machine)."""
REPRESENTED_NORM = 0.5
"""A feature whose column of W has at least this norm counts as represented (a learned one sits near 1, a dropped
one near 0)."""


@dataclass(frozen=True)
class ToyConfig:
    """A sweep of toy models: one per sparsity, all the same shape, trained together."""

    n_features: int = 5
    """Input features (n)."""
    d_hidden: int = 2
    """Hidden dimensions (m); superposition means more represented features than this."""
    sparsities: tuple[float, ...] = (0.0, 0.7, 0.9, 0.97)
    """Probability S that a feature is zero, one model per value."""
    importance_decay: float = 0.85
    """Feature i weighs importance_decay**i in the loss (1.0: all equally important)."""
    steps: int = 2_000
    """Adam steps."""
    batch_size: int = 1_024
    """Inputs per step (per model)."""
    lr: float = 1e-2
    """Adam's learning rate (decayed linearly to 0 over the last half)."""
    seed: int = 0
    """Seed for the weights and the inputs."""

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise InputError(f"ToyConfig: {msg}")

        need(self.n_features >= 1 and self.d_hidden >= 1,
             f"n_features and d_hidden must be positive (got {self.n_features}, {self.d_hidden})")
        need(len(self.sparsities) > 0, "give at least one sparsity")
        need(all(0 <= s < 1 for s in self.sparsities),
             f"sparsities are probabilities of a zero: use values in [0, 1) (got {self.sparsities})")
        need(0 < self.importance_decay <= 1, f"importance_decay must be in (0, 1] (got {self.importance_decay})")
        need(self.steps > 0 and self.batch_size > 0, "steps and batch_size must be positive")
        need(self.lr > 0, f"lr must be positive (got {self.lr})")

    @property
    def importance(self) -> Tensor:
        """[n_features] weights of each feature's error in the loss."""
        return self.importance_decay ** torch.arange(self.n_features, dtype=torch.float32)


class ToyModel(nn.Module):
    """Several toy models side by side: x [instances, batch, n] → h = W x [.., m] → x̂ = ReLU(Wᵀ h + b) [.., n]."""

    def __init__(self, n_instances: int, n_features: int, d_hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        bound = (6 / (n_features + d_hidden)) ** 0.5  # Xavier-uniform
        self.W = nn.Parameter((torch.rand(n_instances, d_hidden, n_features, generator=generator) * 2 - 1) * bound)
        self.b = nn.Parameter(torch.zeros(n_instances, n_features))

    def hidden(self, x: Tensor) -> Tensor:
        """h [instances, batch, m] from x [instances, batch, n]."""
        return x @ self.W.transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """x̂ [instances, batch, n]."""
        return torch.relu(self.hidden(x) @ self.W + self.b[:, None])


@dataclass(frozen=True)
class ToyResult:
    """A trained sweep: the models, what they were trained on, and the loss along the way."""

    model: ToyModel
    config: ToyConfig
    history: pd.DataFrame
    """One row per (logged step, sparsity): step, sparsity, loss."""

    def directions(self, sparsity: float) -> Tensor:
        """[n_features, d_hidden] the true feature directions (W's columns, not normalised) of one model."""
        return self.model.W[self._instance(sparsity)].detach().T.clone()

    def hidden_batches(self, sparsity: float, batch_size: int, n_batches: int, seed: int = 1) -> Iterator[Tensor]:
        """A fixed, seeded sequence of hidden activations h = W x [batch_size, d_hidden] of one model, for an SAE."""
        i = self._instance(sparsity)
        g = torch.Generator().manual_seed(seed)
        W = self.model.W[i].detach()
        for _ in range(n_batches):
            x = sample_features(batch_size, (self.config.sparsities[i],), self.config.n_features, g)[0]
            yield x @ W.T

    def _instance(self, sparsity: float) -> int:
        if sparsity not in self.config.sparsities:
            raise InputError(f"no model was trained at sparsity {sparsity}: use one of {self.config.sparsities}")
        return self.config.sparsities.index(sparsity)


def sample_features(batch_size: int, sparsities: tuple[float, ...], n_features: int,
                    generator: torch.Generator) -> Tensor:
    """x [len(sparsities), batch, n_features]: each entry zero with probability S of its model, else Uniform(0, 1)."""
    shape = (len(sparsities), batch_size, n_features)
    values = torch.rand(shape, generator=generator)
    keep = torch.rand(shape, generator=generator) >= torch.tensor(sparsities).view(-1, 1, 1)
    return values * keep


def train_toy_models(config: ToyConfig = ToyConfig(), *, progress: bool = True) -> ToyResult:
    """Train one toy model per sparsity of `config`, together; deterministic for a given config."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(config.seed)
    model = ToyModel(len(config.sparsities), config.n_features, config.d_hidden, g)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    half = config.steps // 2
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 if step < half else max(0.0, (config.steps - step) / (config.steps - half)))
    importance = config.importance
    rows = []
    log_every = max(1, config.steps // 50)
    threads = torch.get_num_threads()
    torch.set_num_threads(TOY_THREADS)
    try:
        for step in tqdm(range(config.steps), desc="toy models", disable=not progress):
            x = sample_features(config.batch_size, config.sparsities, config.n_features, g)
            per_model = (importance * (x - model(x)) ** 2).sum(-1).mean(1)  # [instances]
            optimizer.zero_grad()
            per_model.sum().backward()
            optimizer.step()
            schedule.step()
            if step % log_every == 0 or step == config.steps - 1:
                rows += [{"step": step, "sparsity": s, "loss": loss}
                         for s, loss in zip(config.sparsities, per_model.tolist())]
    finally:
        torch.set_num_threads(threads)
    return ToyResult(model, config, pd.DataFrame(rows))


def feature_geometry(result: ToyResult) -> pd.DataFrame:
    """One row per (sparsity, feature): importance, norm ‖W_i‖, bias b_i, superposition Σ_{j≠i} (Ŵ_i·W_j)² (0: the
    feature has a dimension to itself; NaN when it is not represented), represented (norm ≥ REPRESENTED_NORM),
    and x, y: W_i's first two coordinates."""
    W = result.model.W.detach()  # [instances, m, n]
    b = result.model.b.detach()
    rows = []
    for i, s in enumerate(result.config.sparsities):
        cols = W[i].T  # [n, m]
        norms = cols.norm(dim=1)
        unit = cols / norms.clamp_min(1e-9)[:, None]
        overlap = (unit @ cols.T) ** 2  # [n, n]: (Ŵ_i·W_j)²
        interference = torch.where(norms >= REPRESENTED_NORM, overlap.sum(1) - overlap.diagonal(), torch.nan)
        for f in range(result.config.n_features):
            rows.append({"sparsity": s, "feature": f, "importance": result.config.importance[f].item(),
                         "norm": norms[f].item(), "bias": b[i, f].item(), "superposition": interference[f].item(),
                         "represented": bool(norms[f] >= REPRESENTED_NORM),
                         "x": cols[f, 0].item(), "y": cols[f, 1].item() if cols.shape[1] > 1 else 0.0})
    return pd.DataFrame(rows)


def features_per_dimension(result: ToyResult) -> pd.DataFrame:
    """One row per sparsity: represented features, and ‖W‖_F² / d_hidden (≈ how many features share a dimension;
    1 or less without superposition, 2.5 for a pentagon in two dimensions)."""
    geometry = feature_geometry(result)
    table = geometry.groupby("sparsity").agg(represented=("represented", "sum"),
                                             squared_norm=("norm", lambda n: float((n**2).sum())))
    table["features_per_dimension"] = table.pop("squared_norm") / result.config.d_hidden
    return table.reset_index()


def match_features(W_dec: Tensor, directions: Tensor) -> pd.DataFrame:
    """For each true direction [n, d] its best-matching dictionary row of W_dec [d_sae, d]: one row per true feature
    with `sae_feature`, `cosine` and the true direction's `norm` (a dropped feature, norm near 0, has nothing to
    find)."""
    if W_dec.shape[1] != directions.shape[1]:
        raise InputError(f"W_dec rows have {W_dec.shape[1]} dimensions and the directions {directions.shape[1]}: "
                         "match a dictionary trained on these directions' space")
    dec = W_dec.detach() / W_dec.detach().norm(dim=1, keepdim=True).clamp_min(1e-12)
    norms = directions.norm(dim=1)
    cosines = (directions / norms.clamp_min(1e-12)[:, None]) @ dec.T  # [n, d_sae]
    best = cosines.max(dim=1)
    return pd.DataFrame({"feature": range(len(directions)), "sae_feature": best.indices.tolist(),
                         "cosine": best.values.tolist(), "norm": norms.tolist()})
