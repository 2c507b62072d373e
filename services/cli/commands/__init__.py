"""The `audiosearch` commands, by group: each returns (JSON document, text)."""
