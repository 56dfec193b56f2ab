"""Errors shown, never crashing the page, and never carrying a server value.

Errors written for users (``UserError``, ``AccessDenied``, storage's ``InvalidInput``) become a warning toast with
their message; anything else is logged with a short reference and the browser is told only that something went
wrong, with that reference (no repr, path or URL of the server reaches it). Every output is ``gr.skip()``, so the
page stays as it was.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any, ParamSpec

import gradio as gr

from app.errors import SAFE_TO_SHOW, AccessDenied, UserError
from storage.errors import InvalidInput

log = logging.getLogger(__name__)
P = ParamSpec("P")
SERVICE_ERRORS: tuple[type[BaseException], ...] = (*SAFE_TO_SHOW, InvalidInput)


def shown(n_outputs: int) -> Callable[[Callable[P, Any]], Callable[P, Any]]:
    """Decorate a handler with ``n_outputs`` outputs: an error becomes a toast and no output changes."""

    def wrap(fn: Callable[P, Any]) -> Callable[P, Any]:
        @functools.wraps(fn)
        def handler(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                gr.Warning(error_text(e, fn.__name__))
                return gr.skip() if n_outputs == 1 else tuple(gr.skip() for _ in range(n_outputs))

        return handler

    return wrap


def error_text(e: Exception, where: str = "handler") -> str:
    """The browser's view of an error (see the module docstring); unexpected errors are logged here."""
    if isinstance(e, SERVICE_ERRORS):
        log.info("%s refused: %s", where, e)
        prefix = "Refused: " if isinstance(e, AccessDenied) else ""
        return f"{prefix}{e}"
    ref = secrets.token_hex(4)
    log.error("%s failed (ref %s)", where, ref, exc_info=e)
    return f"Something went wrong on the server (ref {ref}); the operator's log has the details."


def need(value: Any, what: str) -> Any:
    """``value`` unless it is None, else a ``UserError`` the page shows (e.g. "Sign in first")."""
    if value is None:
        raise UserError(what)
    return value
