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
        """Every state array, in a fixed order, for checkpoints and divergence checks."""
        return [*self.velocity_w, *self.velocity_b]

    @property
    def step(self) -> int:
        return 0  # SGD's update does not depend on the step count

    @step.setter
    def step(self, value: int) -> None:
        pass

    def update_reference(
        self, params: list[np.ndarray], grads: list[np.ndarray], decays: list[bool], lr: float
    ) -> None:
        """Apply one step in place to ``params`` ordered ``[W0, b0, W1, b1, ...]``.

        The readable definition every backend matches.
        """
        velocities = [v for pair in zip(self.velocity_w, self.velocity_b) for v in pair]
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


@dataclass
class Adam:
    """Adam with bias correction, or AdamW (decoupled weight decay), as in PyTorch.

    ::

        t += 1
        g = grad + weight_decay * w            # Adam: L2 through the gradient
        w -= lr * weight_decay * w             # AdamW instead: decoupled decay
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w -= lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

    Weight decay applies to weight matrices only, as for :class:`SGD`. The step
    count ``t`` advances once per mini-batch.

    Parameters
    ----------
    beta1, beta2 : float
        Decay rates of the first and second moment estimates, in [0, 1).
    eps : float
        Added to the denominator, > 0.
    weight_decay : float
        Decay coefficient, >= 0.
    decoupled : bool
        AdamW (True) or Adam with L2 (False).
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    step: int = 0
    m_w: list[np.ndarray] = field(default_factory=list, repr=False)
    m_b: list[np.ndarray] = field(default_factory=list, repr=False)
    v_w: list[np.ndarray] = field(default_factory=list, repr=False)
    v_b: list[np.ndarray] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"eps must be a finite number > 0, got {self.eps!r}")
        wd = self.weight_decay
        if not (isinstance(wd, (int, float)) and math.isfinite(wd) and wd >= 0.0):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {wd!r}")

    def init_state(self, weights: list[np.ndarray], biases: list[np.ndarray]) -> None:
        """Create zero moments shaped like the parameters (kept if already matching)."""
        shapes = [w.shape for w in weights] + [b.shape for b in biases]
        mine = [a.shape for a in self.m_w + self.m_b]
        if mine == shapes and {a.dtype for a in self.state_arrays()} == {weights[0].dtype}:
            return
        self.m_w = [np.zeros_like(w) for w in weights]
        self.v_w = [np.zeros_like(w) for w in weights]
        self.m_b = [np.zeros_like(b) for b in biases]
        self.v_b = [np.zeros_like(b) for b in biases]
        self.step = 0

    def state_arrays(self) -> list[np.ndarray]:
        return [*self.m_w, *self.m_b, *self.v_w, *self.v_b]

    def update_reference(
        self, params: list[np.ndarray], grads: list[np.ndarray], decays: list[bool], lr: float
    ) -> None:
        """Apply one step in place to ``params`` ordered ``[W0, b0, W1, b1, ...]``."""
        self.step += 1
        ms = [m for pair in zip(self.m_w, self.m_b) for m in pair]
        vs = [v for pair in zip(self.v_w, self.v_b) for v in pair]
        for p, g, m, v, decay in zip(params, grads, ms, vs, decays):
            dt = p.dtype.type
            b1, b2 = dt(self.beta1), dt(self.beta2)
            # Bias corrections in float64, then cast: every backend does the same.
            c1 = dt(1.0 - self.beta1**self.step)
            c2 = dt(1.0 - self.beta2**self.step)
            if decay and self.weight_decay:
                if self.decoupled:
                    p *= dt(1.0 - lr * self.weight_decay)
                else:
                    g = g + dt(self.weight_decay) * p
            m *= b1
            m += (dt(1) - b1) * g
            v *= b2
            v += (dt(1) - b2) * (g * g)
            p -= dt(lr) * (m / c1) / (np.sqrt(v / c2) + dt(self.eps))


#: Optimizer names accepted by the trainer and the command line.
OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(
    name: str, *, momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0,
    beta1: float = 0.9, beta2: float = 0.999,
) -> SGD | Adam:
    """The optimizer called ``name`` with the settings that apply to it."""
    if name == "sgd":
        return SGD(momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if name in ("adam", "adamw"):
        return Adam(beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                    decoupled=name == "adamw")
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")


#: What a backend's ``train_epoch`` accepts as its optimizer.
Optimizer = SGD | Adam
