"""Who may do what. Roles come from an authenticated identity, never from a name someone typed.

- With `--auth`, Gradio's login page authenticates every request (`gr.Request.username`); the admins are the
  auth users listed in `--admins`.
- Without `--auth` (a local demo on loopback), anyone who can reach the page can rate under a typed name, and the
  admin is whoever holds the one-time admin token printed at start-up (like Jupyter's): the page reads it once from
  `/?admin=TOKEN`, keeps it in the browser and sends it with every admin request.

Every admin and export call checks the caller's identity here, on the server, for that request: nothing is taken
from `gr.State`, which is keyed by a session hash the client chooses.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass

from app.errors import AccessDenied

TOKEN_PARAM = "admin"
"""The query parameter of the admin link: `http://host:port/?admin=TOKEN`."""


@dataclass(frozen=True)
class Caller:
    """The identity one request carries, as the server saw it."""

    username: str | None = None
    """The user the login page authenticated (`--auth`), else None."""
    admin_token: str = ""
    """The admin token the browser sent with this request ("" when none)."""

    def __repr__(self) -> str:  # never print the token (logs, tracebacks)
        return f"Caller(username={self.username!r}, admin_token={'***' if self.admin_token else ''!r})"


class Access:
    """The access rules of one running app, built once at start-up."""

    def __init__(self, auth_users: Collection[str], admins: Collection[str], admin_token: str | None = None) -> None:
        self.auth_on = bool(auth_users)
        self._admins = frozenset(admins) if self.auth_on else frozenset()
        self.admin_token: str | None = None if self.auth_on else (admin_token or secrets.token_urlsafe(24))

    def is_admin(self, caller: Caller) -> bool:
        if self.auth_on:
            return caller.username is not None and caller.username in self._admins
        token = caller.admin_token if isinstance(caller.admin_token, str) else ""
        assert self.admin_token is not None
        # constant-time comparison: the token is a password
        return bool(token) and hmac.compare_digest(token.encode(), self.admin_token.encode())

    def require_admin(self, caller: Caller) -> None:
        if not self.is_admin(caller):
            how = "sign in as one of the admins" if self.auth_on else "open the admin link printed at start-up"
            raise AccessDenied(f"this needs an admin ({how})")

    def require_user(self, caller: Caller, rater_name: str | None) -> None:
        """A signed-in user: the authenticated one with `--auth`; else someone who signed in with a name."""
        if self.auth_on:
            if caller.username is None:
                raise AccessDenied("sign in first")
            if rater_name is not None and rater_name != caller.username:
                raise AccessDenied("this tab is signed in as someone else; reload the page")
        elif rater_name is None:
            raise AccessDenied("sign in with your name first")

    def admin_link(self, base_url: str) -> str | None:
        """The link that makes its opener admin (no-auth mode only)."""
        if self.admin_token is None:
            return None
        return f"{base_url.rstrip('/')}/?{TOKEN_PARAM}={self.admin_token}"
