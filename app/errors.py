"""Errors the app raises on purpose (importable without torch, so the CLI answers quickly)."""


class StartupError(Exception):
    """A problem with the options or the environment, explained in one line (the CLI exits with status 2)."""
