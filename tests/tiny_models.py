"""Tiny models of every family the module map knows, shared by the tests.

Every builder takes ``num_classes`` and a ``seed`` and returns a model in training mode
with random weights drawn from its own RNG (the global RNG is left as it was), sized to
build and run in milliseconds on 32 x 32 RGB images (:data:`IMAGE_SIZE`). Nothing is
downloaded: timm models are built with ``pretrained=False``, Hugging Face models from a
tiny configuration. Usage::

    from tiny_models import BUILDERS, timm_vit, hf_folder

    model = timm_vit(num_classes=3)                 # a timm ViT, 32 px, patch 4, 2 blocks
    model = BUILDERS["hf_convnext"](num_classes=3)  # by name, for parametrised tests
    folder = hf_folder("vit", tmp_path, num_classes=3)  # save_pretrained: "hf:<folder>"

The tests that use timm or transformers skip when it is absent: call
``pytest.importorskip("timm")`` / ``pytest.importorskip("transformers")`` first, or use
:func:`require` with a builder's name.

The builders (name: what, about how many parameters):

- ``timm_vit``: timm ``vit_tiny_patch16_224`` at 32 px, patch 4, width 32, 2 blocks (29k)
- ``timm_vit_reg``: the same with 2 register tokens, ``num_prefix_tokens`` 3 (29k)
- ``timm_deit``: timm ``deit_tiny_patch16_224`` at the same size (29k)
- ``timm_convnext``: timm ``convnext_atto``, depths 1-1-1-1, widths 8-16-32-64 (62k)
- ``timm_swin``: timm ``swin_tiny``, width 16, depths 1-1, window 4; NHWC outputs (19k)
- ``timm_efficientnet``: timm ``test_efficientnet``, 5 stages of one block (100k)
- ``hf_vit``: transformers ViT, 32 px, patch 4, width 32, 2 layers (21k)
- ``hf_dinov2``: transformers DINOv2 at that size; ``registers=N`` adds registers (21k)
- ``hf_convnext``: transformers ConvNeXt, 2 stages, widths 8-16, depths 1-2 (8k)
- ``hf_resnet``: transformers ResNet of basic blocks, 2 stages, widths 8-16, depths 1-2 (11k)
- ``user_cnn``: a plain user CNN, head ``classify``; map :data:`USER_CNN_MODULES` (1k)
- ``cifar_resnet``: ``tests/user_models/cifar_resnet.py``, head ``linear``, width 4 (5k)

Hugging Face models are returned as transformers builds them (their forward returns an
``ImageClassifierOutput``; ``transferlens``' ``hf:`` builder adds a hook that returns
the logits). :func:`logits` takes either output.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

IMAGE_SIZE = 32
CHANNELS = 3
# Which optional package each builder needs (those not listed need none).
NEEDS = {
    **{name: "timm" for name in ("timm_vit", "timm_vit_reg", "timm_deit", "timm_convnext")},
    **{name: "timm" for name in ("timm_swin", "timm_efficientnet")},
    **{name: "transformers" for name in ("hf_vit", "hf_dinov2", "hf_convnext", "hf_resnet")},
}


def require(name: str) -> None:
    """Skip the calling test when builder ``name``'s package is not installed."""
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` under ``torch.manual_seed(seed)``, restoring the global RNG after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().train()


def images(count: int = 4, seed: int = 0) -> torch.Tensor:
    """``count`` random images ``[count, 3, 32, 32]`` (from their own RNG)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, CHANNELS, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


def logits(output: Any) -> torch.Tensor:
    """The logits of a model's output: a tensor, or a Hugging Face ``ModelOutput``."""
    return output if isinstance(output, torch.Tensor) else output.logits


# --- timm ---------------------------------------------------------------------------------


def _timm(name: str, num_classes: int, seed: int, **kwargs: Any) -> nn.Module:
    import timm

    return _seeded(
        seed, lambda: timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    )


VIT_SIZE = {"img_size": IMAGE_SIZE, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}


def timm_vit(num_classes: int = 5, seed: int = 0, **kwargs: Any) -> nn.Module:
    """timm's VisionTransformer: 32 px, patch 4 (64 patch tokens + the class token),
    width 32, 2 blocks of 2 heads. ``kwargs`` override (``depth=4``, ``reg_tokens=2``)."""
    return _timm("vit_tiny_patch16_224", num_classes, seed, **{**VIT_SIZE, **kwargs})


def timm_vit_reg(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """:func:`timm_vit` with 2 register tokens: 3 prefix tokens before the patches."""
    return timm_vit(num_classes, seed, reg_tokens=2)


def timm_deit(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """timm's DeiT (a VisionTransformer without distillation token) at :func:`timm_vit`'s size."""
    return _timm("deit_tiny_patch16_224", num_classes, seed, **VIT_SIZE)


def timm_convnext(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """timm's ConvNeXt: stem (stride 4), 4 stages of one block, widths 8-16-32-64
    (outputs 8x8, 4x4, 2x2, 1x1 on 32 px), head ``head.fc``."""
    return _timm("convnext_atto", num_classes, seed, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))


def timm_swin(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """timm's Swin: patch 4, width 16, 2 stages of one block, window 4; stage outputs are
    channels-last ``[N, H, W, C]``."""
    return _timm(
        "swin_tiny_patch4_window7_224",
        num_classes,
        seed,
        img_size=IMAGE_SIZE,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(1, 2),
        window_size=4,
    )


def timm_efficientnet(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """timm's ``test_efficientnet``: conv_stem + bn1, 5 stages ``blocks.i`` of one block,
    conv_head + bn2, head ``classifier``."""
    return _timm("test_efficientnet", num_classes, seed)


# --- Hugging Face transformers ------------------------------------------------------------

HF_VIT_SIZE = {
    "image_size": IMAGE_SIZE,
    "patch_size": 4,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}


def hf_config(kind: str, num_classes: int = 5, **overrides: Any) -> Any:
    """A tiny transformers configuration: ``kind`` is ``vit``, ``dinov2``
    (``registers=N``: DINOv2 with N register tokens), ``convnext`` or ``resnet``."""
    import transformers

    registers = overrides.pop("registers", 0)
    if kind == "vit":
        config = transformers.ViTConfig(**HF_VIT_SIZE, intermediate_size=64)
    elif kind == "dinov2" and registers:
        config = transformers.Dinov2WithRegistersConfig(
            **HF_VIT_SIZE, mlp_ratio=2, num_register_tokens=registers
        )
    elif kind == "dinov2":
        config = transformers.Dinov2Config(**HF_VIT_SIZE, mlp_ratio=2)
    elif kind == "convnext":
        config = transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 2])
    elif kind == "resnet":
        config = transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], layer_type="basic"
        )
    else:
        raise ValueError(f"unknown Hugging Face kind {kind!r}")
    config.num_labels = num_classes
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def hf_model(kind: str, num_classes: int = 5, seed: int = 0, **overrides: Any) -> nn.Module:
    """transformers' ``AutoModelForImageClassification`` of :func:`hf_config`, random weights."""
    import transformers

    config = hf_config(kind, num_classes, **overrides)
    auto = transformers.AutoModelForImageClassification
    return _seeded(seed, lambda: auto.from_config(config))


def hf_folder(
    kind: str, folder: str | Path, num_classes: int = 5, seed: int = 0, **overrides: Any
) -> Path:
    """:func:`hf_model` saved with ``save_pretrained`` into ``folder`` (config + weights),
    for ``hf:<folder>``; returns the folder."""
    folder = Path(folder)
    hf_model(kind, num_classes, seed, **overrides).save_pretrained(folder)
    return folder


def hf_vit(num_classes: int = 5, seed: int = 0) -> nn.Module:
    return hf_model("vit", num_classes, seed)


def hf_dinov2(num_classes: int = 5, seed: int = 0, registers: int = 0) -> nn.Module:
    return hf_model("dinov2", num_classes, seed, registers=registers)


def hf_convnext(num_classes: int = 5, seed: int = 0) -> nn.Module:
    return hf_model("convnext", num_classes, seed)


def hf_resnet(num_classes: int = 5, seed: int = 0) -> nn.Module:
    return hf_model("resnet", num_classes, seed)


# --- users' own classes -------------------------------------------------------------------


class UserCNN(nn.Module):
    """A user's CNN the rules know nothing about: two conv "blocks" held as attributes
    (no Sequential of blocks), pooling by a function, and a head called ``classify``."""

    def __init__(self, num_classes: int = 5, width: int = 4) -> None:
        super().__init__()
        self.entry = nn.Conv2d(CHANNELS, width, 3, padding=1)
        self.block_a = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        self.block_b = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width)
        )
        self.classify = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.entry(x))
        x = torch.relu(self.block_a(x) + x)
        x = torch.relu(self.block_b(x))
        return self.classify(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


# The explicit map of UserCNN, in the ``{stage: [names or globs]}`` form.
USER_CNN_MODULES = {"stem": ["entry"], "body": ["block_*"], "head": ["classify"]}


def user_cnn(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """:class:`UserCNN`; give it :data:`USER_CNN_MODULES` as its ``modules``."""
    return _seeded(seed, lambda: UserCNN(num_classes))


def cifar_resnet(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """``user_models.cifar_resnet.CifarResNet`` (one block per stage, width 4): someone
    else's CIFAR ResNet, head ``linear``, pooling by a function."""
    from user_models.cifar_resnet import CifarResNet

    return _seeded(seed, lambda: CifarResNet((1, 1, 1), num_classes=num_classes, width=4))


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "timm_vit": timm_vit,
    "timm_vit_reg": timm_vit_reg,
    "timm_deit": timm_deit,
    "timm_convnext": timm_convnext,
    "timm_swin": timm_swin,
    "timm_efficientnet": timm_efficientnet,
    "hf_vit": hf_vit,
    "hf_dinov2": hf_dinov2,
    "hf_convnext": hf_convnext,
    "hf_resnet": hf_resnet,
    "user_cnn": user_cnn,
    "cifar_resnet": cifar_resnet,
}


def build(name: str, num_classes: int = 5, seed: int = 0) -> nn.Module:
    """``BUILDERS[name](num_classes, seed)``, skipping the test when its package is absent."""
    require(name)
    return BUILDERS[name](num_classes=num_classes, seed=seed)
