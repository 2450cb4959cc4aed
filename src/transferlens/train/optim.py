"""The paper's optimiser: SGD with momentum, weight decay on all parameters, and the
bias/scale rule, plus the multi-step learning-rate schedule.

* Parameters whose own name (the part after the last dot) contains ``bias`` or
  ``scale`` train at ``lr x bias_scale_lr_factor`` (0.1 in the paper, whose code
  selects them by these substrings): layer biases (``fc.bias``) and the Fixup scalars
  (``bias1a``, ``bias2b``, ``output_bias``, ``input_bias``, ``scale``). Every other
  parameter trains at ``lr``. Weight decay applies to all of them.
* The learning rate after ``c`` completed epochs is
  ``lr x gamma ** #{m in milestones : m <= c}``, the value PyTorch's ``MultiStepLR``
  gives when stepped once per epoch ("x0.1 at epochs 30, 60, 90": epochs 31-60 run at
  lr/10). It is a pure function of ``c``, so resuming needs no scheduler state.
* Warm-up (off in the paper): over the first ``warmup_epochs`` epochs the rate of
  step ``t`` (0-based, counted over the whole run) is the scheduled rate times
  ``(t + 1) / (warmup_epochs x steps_per_epoch)`` (Goyal et al.'s gradual warm-up),
  again a pure function of where the run is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

SLOW_NAME_PARTS = ("bias", "scale")


def is_bias_or_scale(parameter_name: str) -> bool:
    """Does this parameter train at the reduced rate (its own name contains bias/scale)?"""
    own_name = parameter_name.rsplit(".", 1)[-1]
    return any(part in own_name for part in SLOW_NAME_PARTS)


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, bias_scale_lr_factor: float = 0.1
) -> list[dict]:
    """Two SGD groups: ``base`` (lr) and ``bias_scale`` (lr x factor), both with weight decay.

    Each group keeps its ``lr_factor`` and parameter ``names`` (for checks and logs);
    empty groups are dropped.
    """
    base: list[tuple[str, nn.Parameter]] = []
    slow: list[tuple[str, nn.Parameter]] = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (slow if is_bias_or_scale(name) else base).append((name, parameter))
    groups = []
    for label, members, factor in (("base", base, 1.0), ("bias_scale", slow, bias_scale_lr_factor)):
        if members:
            groups.append(
                {
                    "params": [parameter for _, parameter in members],
                    "names": [name for name, _ in members],
                    "group": label,
                    "lr_factor": factor,
                    "lr": lr * factor,
                    "weight_decay": weight_decay,
                }
            )
    return groups


def build_optimizer(
    model: nn.Module,
    lr: float,
    momentum: float,
    weight_decay: float,
    bias_scale_lr_factor: float = 0.1,
) -> torch.optim.SGD:
    """SGD over :func:`parameter_groups`.

    On CUDA the fused kernel updates a whole group in one launch (a small network's
    step is launch-bound); on the CPU the default implementation keeps results
    identical to plain ``torch.optim.SGD``.
    """
    groups = parameter_groups(model, lr, weight_decay, bias_scale_lr_factor)
    on_cuda = all(p.is_cuda for group in groups for p in group["params"])
    return torch.optim.SGD(
        groups,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        fused=True if on_cuda and groups else None,
    )


def learning_rate(
    lr: float, completed_epochs: int, milestones: Sequence[int], gamma: float
) -> float:
    """Base learning rate of the epoch that follows ``completed_epochs`` finished epochs."""
    drops = sum(1 for milestone in milestones if milestone <= completed_epochs)
    return lr * gamma**drops


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Factor of step ``step`` (0-based over the run): ``(step + 1) / warmup_steps``, then 1."""
    if step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float) -> None:
    """Set every group's rate to ``base_lr`` times the group's ``lr_factor``."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group.get("lr_factor", 1.0)
