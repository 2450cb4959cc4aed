"""Hugging Face image classifiers as ``hf:<model id or local folder>`` (transformers is optional).

Built with transformers' ``AutoModelForImageClassification``, with the module names
transformers gives them (``vit.layers.0`` in transformers 5, ``classifier``): the module
map reads those. One forward hook (:func:`logits_of`) makes the model return its logits tensor
instead of an ``ImageClassifierOutput``, so it is called like every other model.

* ``pretrained: true`` (P-T's default for ``hf:`` models): the checkpoint's weights,
  with a new head of ``num_classes`` outputs (``from_pretrained(...,
  ignore_mismatched_sizes=True)``);
* otherwise: the checkpoint's configuration with random weights, drawn from the
  global RNG (so from the run's seed): ``from_config``.

Every other keyword overrides a configuration value (``hidden_dropout_prob=0.1``); one
the configuration does not have is refused. A local folder (``save_pretrained``'s) needs
no network; with ``HF_HUB_OFFLINE=1`` a model id loads only from the local cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from transferlens.errors import UserInputError
from transferlens.models.registry import register_model_family

PREFIX = "hf"


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise UserInputError(
            "Hugging Face models need the transformers package: pip install 'transferlens[hf]'"
        ) from None
    return transformers


def logits_of(module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook: a ``ModelOutput`` (or tuple) -> its logits, the first element.

    A module-level function, not a lambda, so the model can be pickled and copied.
    """
    logits = getattr(output, "logits", None)
    if logits is not None:
        return logits
    if isinstance(output, tuple | list):
        return output[0]
    return output


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]


def _config(transformers: Any, name: str, source: str, overrides: dict[str, Any]) -> Any:
    try:
        config, unused = transformers.AutoConfig.from_pretrained(
            source, return_unused_kwargs=True, **overrides
        )
    except (OSError, ValueError, KeyError) as error:
        path = Path(source)
        if not path.is_dir() and (path.is_absolute() or source.startswith((".", "~"))):
            raise UserInputError(f"model {name!r}: folder {source} not found") from None
        where = f"folder {source}" if path.is_dir() else "the Hugging Face Hub (no such folder)"
        raise UserInputError(
            f"model {name!r}: cannot load its configuration from {where}: {_reason(error)}"
        ) from None
    if unused:
        key = sorted(unused)[0]
        raise UserInputError(
            f"model {name!r}: unknown keyword argument {key!r} (not a key of its "
            f"{type(config).__name__})"
        )
    return config


@register_model_family(PREFIX, placeholder="<model-id-or-folder>")
def build_hf_model(
    model_name: str, num_classes: int, pretrained: bool = False, **config: Any
) -> nn.Module:
    """A Hugging Face image classifier from a model id or local folder (transformers'
    AutoModelForImageClassification); pretrained=true loads its weights, with a new head."""
    name = f"{PREFIX}:{model_name}"
    if not isinstance(pretrained, bool):
        raise UserInputError(f"model {name!r}: pretrained must be true or false")
    transformers = _import_transformers()
    source = str(Path(model_name).expanduser()) if model_name.startswith("~") else model_name
    settings = _config(transformers, name, source, dict(config))
    settings.num_labels = num_classes  # a fresh id2label of that size, no warning
    auto = transformers.AutoModelForImageClassification
    try:
        if pretrained:
            model = auto.from_pretrained(source, config=settings, ignore_mismatched_sizes=True)
        else:
            model = auto.from_config(settings)
    except (OSError, ValueError) as error:
        raise UserInputError(f"model {name!r}: {_reason(error)}") from None
    model.register_forward_hook(logits_of)
    return model.train()  # from_pretrained returns evaluation mode; builders return training mode
