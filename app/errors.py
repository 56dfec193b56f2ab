"""Errors the app raises on purpose, and what of an error a browser may see (importable without torch, so the
CLI answers quickly)."""

import errno
import os


class StartupError(Exception):
    """A problem with the options or the environment, explained in one line (the CLI exits with status 2)."""


class UserError(ValueError):
    """Bad input or a refused action, explained for the person who caused it: safe to show in a browser (it
    carries no server values: no paths, reprs of server objects or URLs)."""


class AccessDenied(PermissionError):
    """The caller's identity does not allow this action (not signed in, not an admin); safe to show."""


SAFE_TO_SHOW: tuple[type[BaseException], ...] = (UserError, AccessDenied)
"""Errors whose message is written for the person who caused it (storage's `InvalidInput` is added by the UI)."""


def public_text(err: BaseException) -> str:
    """What a browser may be told about an error: the message of errors made to be shown, else the error's kind
    and, for OS errors, the standard description of its code ("No space left on device"); never a path, a repr
    or a URL from the server. The full error goes to the server log."""
    if isinstance(err, SAFE_TO_SHOW):
        return str(err)
    kind = type(err).__name__
    if isinstance(err, OSError) and err.errno is not None and err.errno in errno.errorcode:
        return f"{kind}: {os.strerror(err.errno)}"
    if isinstance(err, MemoryError) or "out of memory" in str(err).lower():
        return f"{kind}: out of memory"
    return kind
