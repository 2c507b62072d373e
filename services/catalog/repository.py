"""The catalog's operations on plain Python types (services/catalog/records.py),
one part per concern: libraries, items, counts. Every write is one
transaction, so a failure leaves nothing half-written."""

from __future__ import annotations

from services.catalog.counts import Counts
from services.catalog.items import Items
from services.catalog.libraries import Libraries


class Catalog(Libraries, Items, Counts):
    """Every catalog operation, over one engine."""
