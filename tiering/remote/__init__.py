"""Remote tier: object stores and, built on them, the uploader and the reader.

The S3 store is imported on demand (open_store or `tiering.remote.s3`) so that code using only
the local directory store does not load aiobotocore.
"""

from .localfs import FileStore
from .store import ObjectInfo, ObjectNotFound, ObjectStore, StoreError, StoreUnavailable, open_store

__all__ = [
    "FileStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]
