"""Optimizers for :class:`portable.Trainer`: SGD (momentum, Nesterov, weight decay), Adam, AdamW.

An optimizer emits one fused update node per parameter into the training graph. The learning
rate (and Adam's bias corrections) are runtime scalar inputs, so changing ``lr`` between steps
never recompiles; per-parameter state (velocity, moments) are graph inputs whose updated values
are graph outputs that the Trainer feeds back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: runtime scalar inputs shared by all update nodes
LR, BIAS1, BIAS2 = "__lr__", "__adam_c1__", "__adam_c2__"


@dataclass
class StateSlot:
    """One optimizer state tensor: graph input name, updated output name, initial value."""

    input: str
    output: str
    init: np.ndarray


class Optimizer:
    """Base class: ``lr`` plus the update graph of one parameter."""

    def __init__(self, lr: float):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr = float(lr)

    def scalar_inputs(self) -> list[str]:
        """Names of the runtime scalar inputs the update nodes read."""
        return [LR]

    def scalars(self, step: int) -> dict[str, np.ndarray]:
        """Values of the scalar inputs for (1-based) step ``step``."""
        return {LR: np.array(self.lr, dtype=np.float32)}

    def emit(self, b: Any, param: str, grad: str) -> tuple[str, list[StateSlot]]:
        """Append the update of ``param`` given ``grad``; returns (new param value, state slots)."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch semantics (momentum buffer starts at zero)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, dampening: float = 0.0):
        super().__init__(lr)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires momentum > 0 and dampening = 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.weight_decay, self.dampening = float(weight_decay), float(dampening)

    def emit(self, b: Any, param: str, grad: str) -> tuple[str, list[StateSlot]]:
        """See :meth:`Optimizer.emit`."""
        attrs = {"momentum": self.momentum, "nesterov": int(self.nesterov),
                 "weight_decay": self.weight_decay, "dampening": self.dampening}
        if self.momentum == 0:
            return b.op("SGDUpdate", param, grad, LR, **attrs), []
        vel = f"{param}::velocity"
        info = b.info(param)
        b.graph.values[vel] = type(info)(info.shape, info.dtype)
        new_p, new_v = b.emit("SGDUpdate", [param, grad, LR, vel], attrs, n_out=2, hint="sgd")
        return new_p, [StateSlot(vel, new_v, np.zeros(info.shape, info.dtype))]


class Adam(Optimizer):
    """Adam (weight decay added to the gradient, like torch.optim.Adam)."""

    decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(lr)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps, self.weight_decay = float(eps), float(weight_decay)

    def scalar_inputs(self) -> list[str]:
        """lr and the two bias corrections."""
        return [LR, BIAS1, BIAS2]

    def scalars(self, step: int) -> dict[str, np.ndarray]:
        """lr, 1/(1 - beta1^t), 1/(1 - beta2^t)."""
        return {LR: np.array(self.lr, dtype=np.float32),
                BIAS1: np.array(1.0 / (1.0 - self.beta1 ** step), dtype=np.float32),
                BIAS2: np.array(1.0 / (1.0 - self.beta2 ** step), dtype=np.float32)}

    def emit(self, b: Any, param: str, grad: str) -> tuple[str, list[StateSlot]]:
        """See :meth:`Optimizer.emit`."""
        info = b.info(param)
        m, v = f"{param}::adam_m", f"{param}::adam_v"
        for name in (m, v):
            b.graph.values[name] = type(info)(info.shape, info.dtype)
        attrs = {"beta1": self.beta1, "beta2": self.beta2, "epsilon": self.eps,
                 "weight_decay": self.weight_decay, "decoupled": int(self.decoupled)}
        new_p, new_m, new_v = b.emit("AdamUpdate", [param, grad, m, v, LR, BIAS1, BIAS2], attrs, n_out=3,
                                     hint="adam")
        zeros = np.zeros(info.shape, info.dtype)
        return new_p, [StateSlot(m, new_m, zeros), StateSlot(v, new_v, zeros.copy())]


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW; default weight_decay 0.01)."""

    decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(lr, betas, eps, weight_decay)


__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "StateSlot"]
