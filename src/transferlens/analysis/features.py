"""Capture the outputs of named layers with forward hooks, for one model or several at once.

* :class:`FeatureExtractor`: a context manager that hooks ``layers`` of a model (names
  from ``model.named_modules()``) and removes its hooks on exit, error or not.
* :func:`stream_features`: one pass over a loader for several models; each distinct
  model runs one forward per batch (M models cost M forwards, whatever is compared),
  in eval mode under ``torch.inference_mode``; their train/eval flags are restored.
* :func:`capture_features`: every batch concatenated, for small data.

Features are detached and reduced per example: flattened to ``[n, d]`` (default),
global-average-pooled over the spatial dims to ``[n, C]`` (``pool="avg"``), or kept
as they are (``flatten=False``).
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from transferlens.devices import resolve_device
from transferlens.errors import UserInputError
from transferlens.evaluation import evaluation_mode, model_device

POOLS = (None, "avg")
_NAMES_SHOWN = 25


def _describe_names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (
        f", ... ({len(names) - _NAMES_SHOWN} more)" if len(names) > _NAMES_SHOWN else ""
    )


def check_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """The layer names as a list, after checking they are unique modules of ``model``."""
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise UserInputError(f"layers must be a non-empty list of module names (got {layers!r})")
    valid = [name for name, _ in model.named_modules() if name]
    known = set(valid)
    for layer in layers:
        if layer not in known:
            close = difflib.get_close_matches(str(layer), valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserInputError(
                f"unknown layer {layer!r} in {type(model).__name__}; {hint}"
                f"valid layers: {_describe_names(valid)}"
            )
    duplicates = sorted({layer for layer in layers if list(layers).count(layer) > 1})
    if duplicates:
        raise UserInputError(f"layers are listed twice: {', '.join(duplicates)}")
    return list(layers)


def default_layers(model: nn.Module) -> list[str]:
    """The paper's CKA layers: ``conv1`` and the four stages (``models.stage_names``)."""
    try:
        from transferlens.models import stage_names
    except ImportError:  # the models package is optional for the analyses
        stage_names = None
    if stage_names is not None:
        with contextlib.suppress(UserInputError):
            return stage_names(model)
    names = ["conv1", "layer1", "layer2", "layer3", "layer4"]
    present = {name for name, _ in model.named_modules()}
    if all(name in present for name in names):
        return names
    raise UserInputError(
        f"no default layers for {type(model).__name__}; pass layers=[...] "
        f"(module names: {_describe_names([n for n, _ in model.named_modules() if n])})"
    )


Reduction = Callable[[torch.Tensor], torch.Tensor]


def reduce_features(
    output: Any, flatten: bool = True, pool: str | None = None, reduce: Reduction | None = None
) -> torch.Tensor:
    """Detach a layer's output and reduce it per example (see the module docstring).

    A module returning a tuple or list contributes its first element. ``reduce``, when
    given, replaces ``flatten`` and ``pool``: ``reduce(output)`` is what is kept.
    """
    if isinstance(output, tuple | list):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"a hooked layer returned {type(output).__name__}, not a tensor")
    output = output.detach()
    if reduce is not None:
        return reduce(output)
    if pool == "avg" and output.ndim > 2:
        return output.mean(dim=tuple(range(2, output.ndim)))
    if flatten:
        return output.reshape(output.shape[0], -1)
    return output


class FeatureExtractor:
    """Forward hooks on ``layers`` of ``model``; ``extractor(x)`` -> ``{layer: features}``.

    Use it as a context manager: hooks exist only inside the ``with`` block and are
    removed on exit even when the block raises. A module called several times in one
    forward keeps the output of its last call.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        flatten: bool = True,
        pool: str | None = None,
        reduce: Reduction | None = None,
    ) -> None:
        if pool not in POOLS:
            raise UserInputError(f"pool must be one of {POOLS} (got {pool!r})")
        self.model = model
        self.layers = check_layers(model, layers)
        self.flatten = flatten
        self.pool = pool
        self.reduce = reduce
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, layer: str):
        def store(module: nn.Module, inputs: Any, output: Any) -> None:
            self.features[layer] = reduce_features(output, self.flatten, self.pool, self.reduce)

        return store

    def __enter__(self) -> FeatureExtractor:
        if self._handles:
            raise RuntimeError("FeatureExtractor is already active")
        try:
            for layer in self.layers:
                module = self.model.get_submodule(layer)
                self._handles.append(module.register_forward_hook(self._hook(layer)))
        except BaseException:
            self.remove_hooks()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove_hooks()

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.features = {}

    def __call__(self, x: Any) -> dict[str, torch.Tensor]:
        """Run the model on ``x``; the captured features in layer order."""
        if not self._handles:
            raise RuntimeError("use FeatureExtractor inside a 'with' block")
        self.features = {}
        self.model(x)
        missing = [layer for layer in self.layers if layer not in self.features]
        if missing:
            raise UserInputError(f"layers not called in the forward pass: {', '.join(missing)}")
        captured, self.features = self.features, {}
        return {layer: captured[layer] for layer in self.layers}


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(x, y)`` from a loader's batch: a ``(x, y, ...)`` sequence, or ``x`` alone (y None)."""
    if isinstance(batch, Sequence) and not isinstance(batch, torch.Tensor) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, Sequence) and not isinstance(batch, torch.Tensor) and len(batch) == 1:
        return batch[0], None
    return batch, None


def _channels_last_applies(x: Any) -> bool:
    # oneDNN's CPU convolutions run channels-last image batches faster (timings in
    # benchmarks/README.md); the layout carries through the net.
    return (
        isinstance(x, torch.Tensor)
        and x.device.type == "cpu"
        and x.ndim == 4
        and x.is_floating_point()
        and torch.backends.mkldnn.is_available()
    )


def stream_features(
    models: Mapping[str, nn.Module],
    loader: Iterable,
    layers: Sequence[str] | Mapping[str, Sequence[str]],
    *,
    flatten: bool = True,
    pool: str | None = None,
    device: str | torch.device | None = None,
    channels_last: bool = False,
    reduce: Reduction | None = None,
) -> Iterator[tuple[dict[str, list[torch.Tensor]], Any]]:
    """Yield ``({model_key: [features per layer]}, y)`` for each batch of ``loader``.

    ``layers`` is one list for every model or a mapping model key -> list. Keys that
    name the same model object share its one forward per batch. ``device``: move the
    models there (in place) and run there (read by
    :func:`~transferlens.devices.resolve_device`: an absent GPU is bad input); None
    runs each model where it is. A batch
    must be a tensor or an ``(inputs, targets, ...)`` sequence (bad input otherwise).
    ``channels_last``: run image batches ``[N, C, H, W]`` on the CPU in channels-last
    layout (faster; the model is not changed; a model that raises on that layout gets
    the batches as they are). Its features then come in that layout too: the same
    values with other strides, so ``flatten=True`` copies them; consumers to whom the
    order of a feature's values does not matter (Gram matrices) should take
    ``flatten=False`` and read them in memory order. ``reduce``: a function applied to
    each layer's output inside the forward, in place of ``flatten`` / ``pool``; what it
    returns is yielded (the outputs themselves are then not held).
    """
    if not models:
        raise UserInputError("no models to compare")
    per_key = {key: list(layers[key] if isinstance(layers, Mapping) else layers) for key in models}
    if device is not None:
        device = resolve_device(device)  # 'cuda' without a GPU: one line, not torch's error
        for model in models.values():
            model.to(device)
    distinct: dict[int, tuple[nn.Module, list[str]]] = {}
    for key, model in models.items():
        _, wanted = distinct.setdefault(id(model), (model, []))
        wanted.extend(layer for layer in per_key[key] if layer not in wanted)
    extractors = {
        ident: FeatureExtractor(model, wanted, flatten=flatten, pool=pool, reduce=reduce)
        for ident, (model, wanted) in distinct.items()
    }
    devices = {ident: model_device(model) for ident, (model, _) in distinct.items()}
    channels_last_ok = set(distinct) if channels_last else set()
    with evaluation_mode(model for model, _ in distinct.values()), contextlib.ExitStack() as stack:
        for extractor in extractors.values():
            stack.enter_context(extractor)
        for batch in loader:
            x, y = split_batch(batch)
            if not isinstance(x, torch.Tensor):
                # The same words as the weight-space analyses (evalcache) use.
                raise UserInputError(
                    "the data loader must yield (inputs, targets) pairs of tensors "
                    f"(got {type(x).__name__})"
                )
            captured = {}
            # inference_mode only around the forwards: it must not leak into the consumer.
            with torch.inference_mode():
                for ident, extractor in extractors.items():
                    x_here = x.to(devices[ident], non_blocking=True)
                    if ident in channels_last_ok and _channels_last_applies(x_here):
                        try:
                            fast = x_here.contiguous(memory_format=torch.channels_last)
                            captured[ident] = extractor(fast)
                            continue
                        except RuntimeError:
                            # Model code that cannot take the layout (a .view of a 4-D
                            # activation): this model runs as given from now on.
                            channels_last_ok.discard(ident)
                    captured[ident] = extractor(x_here)
            yield (
                {
                    key: [captured[id(model)][layer] for layer in per_key[key]]
                    for key, model in models.items()
                },
                y,
            )


def capture_features(
    model: nn.Module,
    loader: Iterable,
    layers: Sequence[str] | None = None,
    *,
    flatten: bool = True,
    pool: str | None = None,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """``{layer: features of every example}`` (on the CPU), for data that fits in memory.

    ``layers=None``: :func:`default_layers`. Features are reduced as in the module
    docstring, so each value is ``[N, d]`` (or ``[N, C]`` pooled).
    """
    layers = default_layers(model) if layers is None else layers
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for features, _ in stream_features(
        {"model": model}, loader, layers, flatten=flatten, pool=pool, device=device
    ):
        for layer, tensor in zip(layers, features["model"]):
            chunks[layer].append(tensor.cpu())
    if not any(chunks.values()):
        raise UserInputError("capture_features: the loader yielded no batches")
    return {layer: torch.cat(parts) for layer, parts in chunks.items()}
