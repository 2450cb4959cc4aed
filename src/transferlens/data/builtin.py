"""Imports every built-in data set module so that each registers itself."""

# Each module below calls register_dataset(...) at import time.
from transferlens.data import synthetic  # noqa: F401
