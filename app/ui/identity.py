"""The identity of the request a handler serves, from Gradio's request (never from ``gr.State`` alone)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.access import Caller

ADMIN_TOKEN_KEY = "rlhf-live-admin-token"
_LINK_TOKEN = """
  // The admin link printed at start-up (/?admin=TOKEN): read once, kept on the page, out of the address bar.
  if (window.__rlhfLinkToken === undefined) {
    const params = new URLSearchParams(window.location.search);
    window.__rlhfLinkToken = params.get("admin") || "";
    if (params.has("admin")) {
      params.delete("admin");
      const rest = params.toString();
      window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : ""));
    }
  }
  const fromLink = window.__rlhfLinkToken;"""
FILL_ADMIN_TOKEN = f"""(saved) => {{{_LINK_TOKEN}
  // In the browser only: the token goes into the token box and localStorage, never through the server's answers.
  const token = fromLink || saved || "";
  return [token, token];
}}"""
READ_ADMIN_LINK = f"""(name, token) => {{{_LINK_TOKEN}
  return [name, fromLink || token];
}}"""


def caller_of(request: gr.Request | None, token: Any = "") -> Caller:
    """The authenticated user (``--auth``) and the admin token this request sent."""
    username = getattr(request, "username", None) if request is not None else None
    return Caller(username if isinstance(username, str) else None, token if isinstance(token, str) else "")
