"""Capture the outputs (or inputs) of named layers with forward hooks, for one model or several.

* :class:`FeatureExtractor`: a context manager that hooks ``layers`` of a model and
  removes its hooks on exit, error or not. Layer names follow
  :mod:`~transferlens.analysis.layer_specs`: ``name`` (a module's output),
  ``name:in`` (its first positional input), ``name:out.<key>`` (a part of a dict,
  ``ModelOutput`` or tuple output).
* :func:`stream_features`: one pass over a loader for several models; each distinct
  model runs one forward per batch (M models cost M forwards, whatever is compared),
  in eval mode under ``torch.inference_mode``; their train/eval flags are restored.
* :func:`capture_features`: every batch concatenated, for small data.

Features are detached and reduced per example inside the hook: token tensors
``[N, T, D]`` first by ``tokens`` (``all``: kept whole, the default; ``cls``: token 0;
``mean``: the mean over tokens), then flattened to ``[n, d]`` (default),
global-average-pooled over the trailing dims to ``[n, C]`` (``pool="avg"``), kept as
they are (``flatten=False``), or passed to ``reduce``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from transferlens.analysis.layer_specs import (
    INPUT,
    LayerSpec,
    Tokens,
    check_layers,
    check_tokens,
    first_input,
    parse_layer,
    reduce_tokens,
    select_output,
)
from transferlens.devices import resolve_device
from transferlens.errors import UserInputError
from transferlens.evaluation import evaluation_mode, model_device

POOLS = (None, "avg")


def default_layers(model: nn.Module) -> list[str]:
    """The layers CKA compares by default: each stage's output and the classifier's
    input (:attr:`~transferlens.models.module_map.ModuleMap.cka_layers`; a ResNet's
    ``conv1``, ``layer1``..``layer4``, ``fc:in``)."""
    from transferlens.models.module_map import module_map

    return module_map(model).cka_layers


Reduction = Callable[[torch.Tensor], torch.Tensor]


def reduce_features(
    output: Any,
    flatten: bool = True,
    pool: str | None = None,
    reduce: Reduction | None = None,
    tokens: Tokens = "all",
) -> torch.Tensor:
    """Detach a layer's output and reduce it per example (see the module docstring).

    A tuple or list contributes its element 0 (the hooks pick the tensor first:
    :func:`~transferlens.analysis.layer_specs.select_output`). ``reduce``, when given, replaces
    ``flatten`` and ``pool``: ``reduce(output)`` is what is kept, after ``tokens``.
    """
    if isinstance(output, tuple | list):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"a hooked layer returned {type(output).__name__}, not a tensor")
    output = reduce_tokens(output.detach(), tokens)
    if reduce is not None:
        return reduce(output)
    if pool == "avg" and output.ndim > 2:
        return output.mean(dim=tuple(range(2, output.ndim)))
    kept = output.reshape(output.shape[0], -1) if flatten else output
    # A view would change with the model's later in-place operations (an input read
    # before ReLU(inplace=True), a block's output before ``out += identity``): copy it.
    if kept.untyped_storage().data_ptr() == output.untyped_storage().data_ptr():
        kept = kept.clone()
    return kept


class FeatureExtractor:
    """Forward hooks on ``layers`` of ``model``; ``extractor(x)`` -> ``{layer: features}``.

    Use it as a context manager: hooks exist only inside the ``with`` block and are
    removed on exit even when the block raises. A module called several times in one
    forward keeps the output (or input) of its last call. ``shapes`` holds, after a
    call, each layer's per-example shape as the hook saw it (before any reduction).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        flatten: bool = True,
        pool: str | None = None,
        reduce: Reduction | None = None,
        tokens: Tokens = "all",
    ) -> None:
        if pool not in POOLS:
            raise UserInputError(f"pool must be one of {POOLS} (got {pool!r})")
        self.model = model
        self.layers = check_layers(model, layers)
        self.specs = [parse_layer(layer) for layer in self.layers]
        self.flatten = flatten
        self.pool = pool
        self.reduce = reduce
        self.tokens = check_tokens(tokens)
        self.features: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _keep(self, spec: LayerSpec, tensor: torch.Tensor) -> None:
        self.shapes[spec.name] = tuple(tensor.shape[1:])
        self.features[spec.name] = reduce_features(
            tensor, self.flatten, self.pool, self.reduce, self.tokens
        )

    def _register(self, spec: LayerSpec) -> torch.utils.hooks.RemovableHandle:
        module = self.model.get_submodule(spec.module)
        if spec.side == INPUT:
            # Before the module runs: an in-place module would change its input.
            def read_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
                self._keep(spec, first_input(spec, args, kwargs))

            return module.register_forward_pre_hook(read_input, with_kwargs=True)

        def read_output(module: nn.Module, inputs: Any, output: Any) -> None:
            self._keep(spec, select_output(spec, output))

        return module.register_forward_hook(read_output)

    def __enter__(self) -> FeatureExtractor:
        if self._handles:
            raise RuntimeError("FeatureExtractor is already active")
        try:
            for spec in self.specs:
                self._handles.append(self._register(spec))
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
    tokens: Tokens = "all",
    shapes: dict[str, dict[str, tuple[int, ...]]] | None = None,
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
    returns is yielded (the outputs themselves are then not held). ``tokens``: how
    ``[N, T, D]`` outputs are read (module docstring), before ``reduce``. ``shapes``:
    a dict to fill, as batches go, with ``{model key: {layer: per-example shape}}``
    of what each hook saw (before any reduction; the ``cka_layers`` table's shape).
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
        ident: FeatureExtractor(
            model, wanted, flatten=flatten, pool=pool, reduce=reduce, tokens=tokens
        )
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
            if shapes is not None:
                for key, model in models.items():
                    seen = extractors[id(model)].shapes
                    shapes[key] = {layer: seen[layer] for layer in per_key[key]}
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
    tokens: Tokens = "all",
) -> dict[str, torch.Tensor]:
    """``{layer: features of every example}`` (on the CPU), for data that fits in memory.

    ``layers=None``: :func:`default_layers`. Features are reduced as in the module
    docstring, so each value is ``[N, d]`` (or ``[N, C]`` pooled); ``tokens`` as there.
    """
    layers = default_layers(model) if layers is None else layers
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for features, _ in stream_features(
        {"model": model}, loader, layers, flatten=flatten, pool=pool, device=device, tokens=tokens
    ):
        for layer, tensor in zip(layers, features["model"]):
            chunks[layer].append(tensor.cpu())
    if not any(chunks.values()):
        raise UserInputError("capture_features: the loader yielded no batches")
    return {layer: torch.cat(parts) for layer, parts in chunks.items()}
