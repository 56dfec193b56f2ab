"""Alembic revision scripts; ``schema.SCHEMA_VERSION`` names the newest."""
