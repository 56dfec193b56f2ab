"""Service errors shown, never crashing the page.

``ValueError`` (bad input) and ``PermissionError`` (not an admin) from the service become a warning toast and leave
the page as it was (every output ``gr.skip()``); anything else propagates to Gradio, which logs it and shows an
error toast.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec

import gradio as gr

log = logging.getLogger(__name__)
P = ParamSpec("P")
SERVICE_ERRORS = (ValueError, PermissionError)


def shown(n_outputs: int) -> Callable[[Callable[P, Any]], Callable[P, Any]]:
    """Decorate a handler with ``n_outputs`` outputs: service errors become a toast and no output changes."""

    def wrap(fn: Callable[P, Any]) -> Callable[P, Any]:
        @functools.wraps(fn)
        def handler(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                return fn(*args, **kwargs)
            except SERVICE_ERRORS as e:
                log.info("%s refused: %s", fn.__name__, e)
                gr.Warning(error_text(e))
                return gr.skip() if n_outputs == 1 else tuple(gr.skip() for _ in range(n_outputs))

        return handler

    return wrap


def error_text(e: Exception) -> str:
    prefix = "Admins only: " if isinstance(e, PermissionError) else ""
    return f"{prefix}{e}"


def need(value: Any, what: str) -> Any:
    """``value`` unless it is None, else a ValueError the page shows (e.g. "Sign in first")."""
    if value is None:
        raise ValueError(what)
    return value
