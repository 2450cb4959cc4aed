"""Imports every built-in data set module so that each registers itself."""

# Each module below calls register_dataset(...) at import time.
from transferlens.data import (  # noqa: F401
    chexpert,
    domainnet,
    image_folder,
    presets,
    synthetic,
)
