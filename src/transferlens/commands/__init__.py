"""One module per sub-command of ``transferlens``; each exposes ``register(subparsers)``."""
