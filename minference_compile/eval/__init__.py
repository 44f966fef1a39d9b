"""Accuracy eval of the sparse pre-fill against dense (``minference-compile eval``): see cli.py."""
