"""Pieces shared by every service: config, errors, the server bootstrap."""
