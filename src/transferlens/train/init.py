"""The model at epoch 0: a random init (RI) or P's weights with a fresh head (P-T).

For every non-random init the model is built as for a random one, every non-head
weight is loaded from the source (``models.load_backbone``, which refuses a backbone
that does not fit) and the head is re-created by ``models.reset_head`` from its own
seed. So P-T at epoch 0 differs from P only in the head, and two P-T runs with the
same seed start from identical weights. The head is the module map's classifier when
the spec gives the model's units (``model_modules``), else the one
``models.head_prefix`` finds by name. A P-T run's source folder is
``RunInit.source_dir()``: a relative ``init.run`` is found in the runs folder the
caller gave (``TrainSpec.with_runs_dir``), never through the working directory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from transferlens import models
from transferlens.errors import UserInputError
from transferlens.train.run_dir import load_state_dict, read_spec_json
from transferlens.train.seeds import derive_seed
from transferlens.train.spec import FileInit, PretrainedInit, RandomInit, RunInit, TrainSpec


def _build_seeded(name: str, num_classes: int, kwargs: dict[str, Any], seed: int) -> nn.Module:
    # The model's constructors draw from the global RNG: fork it so that building a
    # model leaves the caller's random state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.build_model(name, num_classes, **kwargs)


def random_init_seed(spec: TrainSpec) -> int:
    """Seed of the random initialisation (``init.seed`` or one derived from the run seed)."""
    if isinstance(spec.init, RandomInit) and spec.init.seed is not None:
        return spec.init.seed
    return derive_seed(spec.seed, "init") % 2**63


def _source_state(spec: TrainSpec) -> dict[str, torch.Tensor]:
    """Weights of the run or file that ``spec.init`` names."""
    init = spec.init
    if isinstance(init, FileInit):
        try:
            return models.load_weights_file(init.path)
        except UserInputError as error:
            raise UserInputError(f"init.path: {error}") from None
    assert isinstance(init, RunInit)
    source = init.source_dir()
    source_spec = read_spec_json(source, where="init.run")
    if source_spec.get("model") != spec.model:
        raise UserInputError(
            f"init.run: {source} trained model {source_spec.get('model')!r}, not {spec.model!r}"
        )
    return load_state_dict(source, init.epoch, where="init.epoch")


def head_of(spec: TrainSpec, model: nn.Module) -> str | None:
    """The head P-T replaces: the classifier of the map ``spec.model_modules`` gives, or
    None (``models.head_prefix`` finds it by name)."""
    if spec.model_modules is None:
        return None
    from transferlens.models.module_map import module_map

    try:
        return module_map(model, spec.model_modules).classifier
    except UserInputError as error:
        raise UserInputError(f"model_modules: {error}") from None


def reset_head_at(model: nn.Module, head: str | None, num_classes: int, seed: int) -> None:
    """``models.reset_head`` for the head ``head`` (the classifier of the map
    ``spec.model_modules`` gives), or the one ``models.head_prefix`` finds when None."""
    try:
        models.reset_head(model, num_classes, seed=seed, head=head)
    except UserInputError as error:
        raise UserInputError(f"model_modules: {error}" if head else str(error)) from None


def initial_model(spec: TrainSpec, num_classes: int) -> nn.Module:
    """The epoch-0 model of ``spec`` on the CPU (see the module docstring)."""
    init = spec.init
    kwargs = dict(spec.model_kwargs)
    seed = random_init_seed(spec)
    if isinstance(init, RandomInit):
        return _build_seeded(spec.model, num_classes, kwargs, seed)
    if isinstance(init, PretrainedInit):
        kwargs.update(init.build_kwargs(spec.model))
        model = _build_seeded(spec.model, num_classes, kwargs, seed)
        head = head_of(spec, model)
    else:
        # Check the source first: a bad path should fail before any model is built.
        state = _source_state(spec)
        model = _build_seeded(spec.model, num_classes, kwargs, seed)
        head = head_of(spec, model)
        models.load_backbone(model, state, head=head)
    reset_head_at(model, head, num_classes, derive_seed(spec.seed, "head") % 2**63)
    return model
