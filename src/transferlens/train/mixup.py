"""Mixup (Zhang et al., ICLR 2018), as the paper applies it: on every batch.

With lambda ~ Beta(alpha, alpha) drawn once per batch and a random permutation pi of
the batch: x' = lambda x + (1 - lambda) x[pi] and y' = lambda y + (1 - lambda) y[pi],
with y one-hot (multiclass) or multi-hot (multilabel). Cross-entropy and BCE are
linear in the target, so the loss on y' equals lambda L(y) + (1 - lambda) L(y[pi]).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from transferlens.metrics import Task


def soft_targets(targets: torch.Tensor, num_classes: int, task: Task) -> torch.Tensor:
    """Targets as float rows: one-hot class indices (multiclass) or the multi-hot vectors."""
    if task == "multiclass":
        return F.one_hot(targets, num_classes).float()
    return targets.float()


def mixup(
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float,
    num_classes: int,
    task: Task,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch with its own permutation; returns ``(mixed images, mixed soft targets)``.

    ``rng`` draws lambda, ``generator`` (a CPU generator) the permutation, so both come
    from the run's seeded streams and a resumed run draws the same values.
    """
    lam = float(rng.beta(alpha, alpha))
    permutation = torch.randperm(images.shape[0], generator=generator).to(
        images.device, non_blocking=True
    )
    mixed_images = images.mul(lam).add_(images[permutation], alpha=1.0 - lam)
    rows = soft_targets(targets, num_classes, task)
    mixed_targets = rows.mul(lam).add_(rows[permutation], alpha=1.0 - lam)
    return mixed_images, mixed_targets
