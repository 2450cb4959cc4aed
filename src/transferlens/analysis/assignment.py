"""Linear assignments for permutation alignment: plain, and whole heads with units inside.

Both maximise ``sum_i C[i, p[i]]`` over permutations ``p`` with scipy's
``linear_sum_assignment`` (unit ``i`` of model A is matched with unit ``p[i]`` of B).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def assign(cost: torch.Tensor) -> torch.Tensor:
    """The permutation ``p`` maximising ``sum_i cost[i, p[i]]`` (a LongTensor on ``cost``'s device)."""
    _, cols = linear_sum_assignment(cost.detach().cpu().double().numpy(), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long, device=cost.device)


def assignment_value(cost: torch.Tensor, perm: torch.Tensor) -> float:
    """``sum_i cost[i, perm[i]]``, summed in float64 (so that a float32 cost's equal
    assignments compare equal whatever the order of their entries)."""
    return float(cost[torch.arange(len(perm), device=cost.device), perm].double().sum())


def assign_heads(costs: list[torch.Tensor], heads: int) -> list[torch.Tensor]:
    """One permutation per cost matrix, all mapping head ``i`` to the same head ``h[i]``.

    Each matrix is ``[H*d, H*d]`` (``heads`` blocks of ``d`` units). The value of
    pairing head ``i`` of A with head ``j`` of B is the sum over matrices of the best
    assignment inside the block ``(i, j)``; ``h`` maximises the sum of those values,
    and each permutation is then ``h`` with, inside each head, its block's assignment.
    """
    size = costs[0].shape[0]
    width = size // heads
    blocks = [c.detach().cpu().double().numpy().reshape(heads, width, heads, width) for c in costs]
    inner: dict[tuple[int, int, int], np.ndarray] = {}
    head_value = np.zeros((heads, heads))
    for g, block in enumerate(blocks):
        for i in range(heads):
            for j in range(heads):
                rows, cols = linear_sum_assignment(block[i, :, j, :], maximize=True)
                inner[(g, i, j)] = cols
                head_value[i, j] += block[i, rows, j, cols].sum()
    _, head_of = linear_sum_assignment(head_value, maximize=True)
    perms = []
    for g, cost in enumerate(costs):
        perm = np.concatenate(
            [head_of[i] * width + inner[(g, i, head_of[i])] for i in range(heads)]
        )
        perms.append(torch.as_tensor(perm, dtype=torch.long, device=cost.device))
    return perms
