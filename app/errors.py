"""Errors the app raises on purpose (importable without torch, so the CLI answers quickly)."""


class StartupError(Exception):
    """A problem with the options or the environment, explained in one line (the CLI exits with status 2)."""


class UserError(ValueError):
    """Bad input or a refused action, explained for the person who caused it: safe to show in a browser (it
    carries no server values: no paths, reprs of server objects or URLs)."""


class AccessDenied(PermissionError):
    """The caller's identity does not allow this action (not signed in, not an admin); safe to show."""
