"""Storage: ports in ``base``, adapters in ``sqlite`` and ``dynamodb``; ``open_store`` picks one."""
from __future__ import annotations

from gateway.config import Settings
from gateway.store.base import ApiKey, Product, Store

__all__ = ["ApiKey", "Product", "Store", "open_store"]


def open_store(settings: Settings) -> Store:
    """The store the settings name; the adapter module is imported only when chosen."""
    if settings.store == "dynamodb":
        from gateway.store.dynamodb import DynamoDBStore

        return DynamoDBStore.from_settings(settings)
    from gateway.store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path)
