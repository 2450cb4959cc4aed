"""Setting one module of a working network to an interpolated, noise-perturbed state.

Module criticality and the conv1 path figure evaluate the same network many times
with one unit (one module or several: :mod:`transferlens.models.module_map`) replaced
by ``theta + sigma * z`` (``z`` standard normal, on the unit's parameters only). :class:`ModuleSlot` writes such states into a single
working copy in place, always from scratch (never by accumulating changes), so the
same point evaluated twice gives the same network bit for bit.

The noise of a point is drawn from its own generator seeded by
:func:`noise_seed` ``(seed, module, point, sample)``: it depends on nothing else
(not on which other points were evaluated, nor in which order), which is what lets
a search skip points without changing the values at the points it does evaluate.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from transferlens.analysis.statedict import is_floating, under_any
from transferlens.errors import UserInputError


def noise_seed(seed: int, module: str, point: int, sample: int) -> int:
    """A 64-bit seed for the noise of sample ``sample`` at grid point ``point`` of ``module``.

    Mixed with numpy's ``SeedSequence`` from ``(seed, crc32(module), point, sample)``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserInputError(f"seed must be a non-negative integer (got {seed!r})")
    entropy = [seed, zlib.crc32(module.encode("utf-8")), int(point), int(sample)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def noise_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class ModuleSlot:
    """The floating state of one unit of ``working`` (a network edited in place).

    ``module`` names the unit (and seeds its noise, :func:`noise_seed`); ``members``
    are its state-dict prefixes (default: ``module`` alone). ``set(values, sigma,
    generator)`` writes ``values`` (name -> tensor, for every floating entry of the
    unit) into the working network and adds ``sigma * z``, ``z ~ N(0, I)`` drawn from
    ``generator`` in the order of :attr:`parameter_names` (state-dict order), to the
    parameters (never to buffers).
    """

    def __init__(
        self, working: nn.Module, module: str, members: Sequence[str] | None = None
    ) -> None:
        self.module = module
        self.members = (module,) if members is None else tuple(members)
        parameters = dict(working.named_parameters())
        self._targets: dict[str, torch.Tensor] = {}
        for name, tensor in working.state_dict(keep_vars=True).items():
            if under_any(name, self.members) and is_floating(tensor):
                self._targets[name] = tensor
        self.parameter_names = [name for name in self._targets if name in parameters]
        if not self._targets:
            raise UserInputError(f"module {module!r} has no floating parameters or buffers")
        self.original = {name: t.detach().clone() for name, t in self._targets.items()}

    @property
    def names(self) -> list[str]:
        return list(self._targets)

    def values_from(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Copies of this module's entries of ``state``, on the working network's device and dtype."""
        values = {}
        for name, target in self._targets.items():
            if name not in state:
                raise UserInputError(f"the state lacks {name!r} of module {self.module!r}")
            # Cloned: ``state`` may share storage with the working network, which changes.
            values[name] = state[name].detach().to(device=target.device, dtype=target.dtype).clone()
        return values

    @torch.no_grad()
    def set(
        self,
        values: Mapping[str, torch.Tensor],
        sigma: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> bool:
        """Write the values (plus noise); returns whether the noise changed any parameter.

        A tiny ``sigma`` (the reference grid starts at 1e-16) can vanish entirely in
        rounding: then the network is bit for bit the noiseless one.
        """
        for name, target in self._targets.items():
            target.copy_(values[name])
        if sigma == 0.0:
            return False
        if generator is None:
            raise ValueError("noise needs a generator")
        perturbed = False
        for name in self.parameter_names:
            target = self._targets[name]
            noise = torch.randn(
                target.shape, generator=generator, device=target.device, dtype=target.dtype
            )
            target.add_(noise * sigma)
            perturbed = perturbed or not torch.equal(target, values[name])
        return perturbed

    def restore(self) -> None:
        """Put back the state the module had when the slot was made."""
        self.set(self.original)


def lerp_values(
    start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """``(1 - weight) start + weight end`` entry by entry (:func:`torch.lerp`; exact at 0 and 1)."""
    return {name: torch.lerp(start[name], end[name], float(weight)) for name in start}


def squared_distance(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: list[str]
) -> float:
    """``sum over names of ||a - b||^2``, accumulated in float64."""
    return float(sum(float(((a[n].double() - b[n].double()) ** 2).sum()) for n in names))
