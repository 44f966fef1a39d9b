"""Runnable examples: ``python -m minference_compile.examples.<name> --help``."""
