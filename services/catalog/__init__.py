"""Catalog: libraries and audio item metadata in SQL (SQLite, PostgreSQL, MySQL)."""
