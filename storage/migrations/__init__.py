"""Alembic migrations of the feedback store (driven from storage.migrate; env.py is Alembic's entry point)."""
