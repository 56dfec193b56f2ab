"""The Gradio page of the rating app. ``build_ui(service)`` is the only entry point."""

from app.ui.page import build_ui

__all__ = ["build_ui"]
