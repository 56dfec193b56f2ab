"""The identity of the request a handler serves, from Gradio's request (never from ``gr.State`` alone)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.access import Caller

ADMIN_TOKEN_KEY = "rlhf-live-admin-token"
READ_ADMIN_LINK = """(name, token) => {
  // The admin link printed at start-up (/?admin=TOKEN): keep the token, take it out of the address bar.
  const params = new URLSearchParams(window.location.search);
  const fromLink = params.get("admin");
  if (fromLink) {
    params.delete("admin");
    const rest = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : ""));
  }
  return [name, fromLink || token];
}"""


def caller_of(request: gr.Request | None, token: Any = "") -> Caller:
    """The authenticated user (``--auth``) and the admin token this request sent."""
    username = getattr(request, "username", None) if request is not None else None
    return Caller(username if isinstance(username, str) else None, token if isinstance(token, str) else "")
