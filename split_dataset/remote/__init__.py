"""Split datasets by URL: object storage (S3 and compatible stores), HTTP servers, any fsspec URL.

``split_dataset.open("s3://bucket/ds", storage_options=...)`` returns a
:class:`~split_dataset.remote.dataset.RemoteSplitDataset`: the :class:`~split_dataset.SplitDataset`
API, read-only, fetching exactly the chunks a selection needs by range requests
(see :mod:`split_dataset.remote.dataset`). Needs the ``remote`` extra
(``pip install "split_dataset[remote]"``: fsspec, s3fs, aiohttp); ``import split_dataset``
does not import it.

- ``store``: :class:`~split_dataset.remote.store.Store`, a folder on an fsspec filesystem
  (fetching by name and by range, retries, errors naming the URL).
- ``source``: :class:`~split_dataset.remote.source.RemoteFile`, a block file's bytes,
  prefetched and coalesced for the chunk reader.
- ``dataset``: :class:`~split_dataset.remote.dataset.RemoteSplitDataset`.
- ``upload``: writing a dataset to a store (block files first, the metadata last).
"""

from __future__ import annotations

from .store import RemotePath, Store, is_url

__all__ = ["RemotePath", "Store", "is_url"]
