"""Optimizers: hyperparameters plus the state they own, and the reference update.

An optimizer is data a backend reads and updates in place. Its
:meth:`~SGD.update_reference` method is the readable definition of the update
rule; the NumPy backend calls it, fused backends reproduce it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError


@dataclass
class SGD:
    """Mini-batch SGD with optional (Nesterov) momentum and L2 weight decay.

    The update follows PyTorch's ``torch.optim.SGD`` (dampening 0), so peers can
    use it unchanged::

        g = grad + weight_decay * w      # weights only; biases are not decayed
        v = momentum * v + g
        step = g + momentum * v if nesterov else v
        w -= lr * step

    With ``momentum == 0`` the velocity is neither needed nor touched.

    Parameters
    ----------
    momentum : float
        In [0, 1).
    nesterov : bool
        Use Nesterov momentum (requires ``momentum > 0``).
    weight_decay : float
        L2 penalty coefficient, >= 0, applied to weight matrices only.
    """

    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    velocity_w: list[np.ndarray] = field(default_factory=list, repr=False)
    velocity_b: list[np.ndarray] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        m, wd = self.momentum, self.weight_decay
        if not (isinstance(m, (int, float)) and math.isfinite(m) and 0.0 <= m < 1.0):
            raise ConfigError(f"momentum must be in [0, 1), got {m!r}")
        if not (isinstance(wd, (int, float)) and math.isfinite(wd) and wd >= 0.0):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {wd!r}")
        if self.nesterov and m == 0.0:
            raise ConfigError("nesterov momentum needs momentum > 0")
        self.momentum, self.weight_decay = float(m), float(wd)

    def init_state(self, weights: list[np.ndarray], biases: list[np.ndarray]) -> None:
        """Create zero velocities shaped like the parameters (kept if already matching)."""
        shapes = [w.shape for w in weights] + [b.shape for b in biases]
        mine = [v.shape for v in self.velocity_w] + [v.shape for v in self.velocity_b]
        dtypes = {v.dtype for v in self.velocity_w + self.velocity_b}
        if mine == shapes and dtypes == {weights[0].dtype}:
            return
        self.velocity_w = [np.zeros_like(w) for w in weights]
        self.velocity_b = [np.zeros_like(b) for b in biases]

    def state_arrays(self) -> list[np.ndarray]:
        """Every state array, for checkpoints and divergence checks."""
        return [*self.velocity_w, *self.velocity_b]

    def update_reference(
        self,
        params: list[np.ndarray],
        grads: list[np.ndarray],
        velocities: list[np.ndarray],
        decays: list[bool],
        lr: float,
    ) -> None:
        """Apply one step in place; the readable definition every backend matches."""
        for p, g, v, decay in zip(params, grads, velocities, decays):
            dt = p.dtype.type
            if decay and self.weight_decay:
                g = g + dt(self.weight_decay) * p
            if self.momentum:
                v *= dt(self.momentum)
                v += g
                step = g + dt(self.momentum) * v if self.nesterov else v
            else:
                step = g
            p -= dt(lr) * step
