"""One module's search over the (alpha, sigma) grid of module criticality.

The objective of a grid point, ``alpha^2 ||thetaF - theta0||^2 / sigma^2``, is known
before evaluating it, so :class:`Search` visits points in increasing (objective,
reference order) and stops at the first feasible one (``search="pruned"``), cutting a
pass short once its running loss sum proves the point infeasible; ``search="full"``
evaluates every point and every draw. Both return the same point (see
:mod:`~transferlens.analysis.criticality`'s docstring for why). The search with a
bootstrap interval over the examples is
:class:`~transferlens.analysis.criticality_interval.IntervalSearch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from transferlens.analysis.evalcache import PreparedBatches, analysis_device
from transferlens.analysis.perturb import lerp_values, noise_generator, noise_seed
from transferlens.metrics import Task, task_loss

SEARCHES = ("pruned", "full")

# The summed loss of one batch: (outputs, targets) -> a scalar tensor, every term >= 0.
LossSum = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class _Point:
    index: int  # the reference's order: sigma-major, alpha-minor
    alpha: float
    sigma: float
    objective: float


def _grid(alphas: list[float], sigmas: list[float], squared: float) -> list[_Point]:
    points = []
    for i_sigma, sigma in enumerate(sigmas):
        for i_alpha, alpha in enumerate(alphas):
            objective = (alpha / sigma) ** 2 * squared
            points.append(_Point(i_sigma * len(alphas) + i_alpha, alpha, sigma, objective))
    return points


def search_order(points: list[_Point]) -> list[_Point]:
    """Increasing objective, ties in the reference's order (its ``argmin`` takes the first)."""
    return sorted(points, key=lambda p: (p.objective, p.index))


def batch_loss_sum(outputs: torch.Tensor, targets: torch.Tensor, task: Task | LossSum) -> float:
    """The float64 value of one batch's summed loss, exactly as the search has always summed
    it (the task loss's ``"sum"`` reduction, or the :data:`LossSum`)."""
    if callable(task):
        return float(task(outputs, targets).double())
    return float(task_loss(outputs, targets, task, "sum").double())


def running_loss_sums(
    model: torch.nn.Module, batches: Iterable, task: Task | LossSum
) -> Iterator[float]:
    """After each batch, the running float64 sum of the example losses so far.

    ``task``: the task (its loss) or a :data:`LossSum`. L = (last sum) / n. Every batch
    adds a sum of non-negative losses, so the running sum never decreases: a partial
    sum is a lower bound of the total.
    """
    total = 0.0
    for inputs, targets in batches:
        total += batch_loss_sum(model(inputs), targets, task)
        yield total


def _mean_loss(model: torch.nn.Module, batches: PreparedBatches, task: Task | LossSum) -> float:
    with torch.inference_mode():
        sums = list(running_loss_sums(model, batches, task))
    return sums[-1] / batches.n_examples


class Search:
    """One module's search over the grid; counts the passes and batches it evaluates."""

    def __init__(self, working, slot, init, final, batches, task, n_noise, epsilon, seed):
        self.working, self.slot, self.init, self.final = working, slot, init, final
        self.batches, self.task, self.n_noise = batches, task, n_noise
        self.epsilon, self.seed = epsilon, seed
        self.device = analysis_device(None, working)
        self.n_passes = 0
        self.n_batches = 0
        # alpha -> L at theta(alpha) without noise, for draws whose noise vanished in rounding
        self.noiseless_losses: dict[float, float] = {}

    def set_draw(self, point: _Point, values: dict, sample: int) -> bool:
        """Write draw ``sample`` of ``point`` into the working network; was it perturbed?"""
        generator = noise_generator(
            self.device, noise_seed(self.seed, self.slot.module, point.index, sample)
        )
        return self.slot.set(values, point.sigma, generator)

    @torch.inference_mode()
    def feasible(self, point: _Point, early_stop: bool) -> tuple[bool, float]:
        """(mean over draws of L <= eps, that mean; partial if stopped early).

        With ``early_stop`` (the pruned search) a pass stops as soon as the running sum
        proves the point infeasible (every term added later is >= 0), and a draw whose
        noise vanished reuses the noiseless loss at its alpha (see the module docstring).
        """
        values = lerp_values(self.init, self.final, point.alpha)
        n_examples, n_noise, epsilon = self.batches.n_examples, self.n_noise, self.epsilon
        draws_sum = 0.0  # sum over finished draws of their mean loss
        for sample in range(n_noise):
            perturbed = self.set_draw(point, values, sample)
            reusable = early_stop and not perturbed
            if reusable and point.alpha in self.noiseless_losses:
                # The very network already evaluated: its loss, not another pass.
                mean_loss = self.noiseless_losses[point.alpha]
                if (draws_sum + mean_loss) / n_noise > epsilon:
                    return False, (draws_sum + mean_loss) / (sample + 1)
                draws_sum += mean_loss
                continue
            self.n_passes += 1
            loss_sum = 0.0
            for loss_sum in running_loss_sums(self.working, self.batches, self.task):
                self.n_batches += 1
                if early_stop and (draws_sum + loss_sum / n_examples) / n_noise > epsilon:
                    return False, (draws_sum + loss_sum / n_examples) / (sample + 1)
            if reusable:
                self.noiseless_losses[point.alpha] = loss_sum / n_examples
            draws_sum += loss_sum / n_examples
        return draws_sum / n_noise <= epsilon, draws_sum / n_noise

    def run(self, points: list[_Point], search: str) -> tuple[_Point | None, float]:
        ordered = search_order(points)
        best, best_loss = None, float("nan")
        if search == "pruned":
            for point in ordered:
                ok, loss = self.feasible(point, early_stop=True)
                if ok:
                    best, best_loss = point, loss
                    break
        else:
            outcomes = {p.index: self.feasible(p, early_stop=False) for p in points}
            for point in ordered:
                if outcomes[point.index][0]:
                    best, best_loss = point, outcomes[point.index][1]
                    break
        self.slot.restore()
        return best, best_loss
