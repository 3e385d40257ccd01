"""Exceptions raised by split_dataset.

Every class subclasses the builtin a caller would already catch, so code written
against numpy, h5py or the old package keeps working: bad indexes are
``IndexError``, malformed datasets are ``ValueError``, missing files are
``FileNotFoundError``, unreadable files are ``OSError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "SplitDatasetError",
    "InvalidIndexError",
    "NotASplitDatasetError",
    "MetadataError",
    "MissingBlockError",
    "CorruptBlockError",
    "BlockMismatchError",
    "UnsafeDatasetError",
    "WriteError",
    "DiskFullError",
    "WriterLockedError",
    "NotRegularFileError",
    "TruncatedDatasetWarning",
    "MissingBlocksWarning",
    "SourceError",
    "CorruptSourceError",
    "ChunkIndexError",
    "ChunkIndexWarning",
    "VirtualRefsError",
    "RemoteError",
    "DroppedFramesWarning",
]


def _as_path(path: Any) -> Any:
    """A ``Path`` for a local path; a URL (:class:`~split_dataset.remote.store.RemotePath`) kept as it is."""
    return path if hasattr(path, "url") else Path(path)


class SplitDatasetError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidIndexError(SplitDatasetError, IndexError, TypeError):
    """An index of a kind that cannot select from an array (a float, a string, ...).

    numpy raises ``IndexError`` for these and h5py ``TypeError``; this is both.
    """


class NotASplitDatasetError(SplitDatasetError, ValueError):
    """The folder exists but does not hold a split dataset."""


class MetadataError(NotASplitDatasetError):
    """``stack_metadata.json`` (or the legacy metadata group) is malformed or impossible."""


class UnsafeDatasetError(SplitDatasetError, ValueError):
    """A block file is not a self-contained regular HDF5 file: a FIFO, a device, a folder,
    or an array reached through a link, virtual, or stored in external files (whose
    sources could lie outside the dataset folder)."""


class MissingBlockError(SplitDatasetError, FileNotFoundError):
    """A block file the metadata describes is not on disk."""

    def __init__(self, path: Path | Any, block: tuple[int, ...], detail: str = "") -> None:
        self.path = _as_path(path)
        self.block = tuple(block)
        msg = f"block {self.block} is missing: expected file {str(self.path)!r}"
        if detail:
            msg += f"; {detail}"
        super().__init__(msg)


class CorruptBlockError(SplitDatasetError, OSError):
    """A block file exists but cannot be read as an HDF5 block."""

    def __init__(self, path: Path | Any, block: tuple[int, ...], detail: str) -> None:
        self.path = _as_path(path)
        self.block = tuple(block)
        super().__init__(f"block {self.block} in {str(self.path)!r} is unreadable: {detail}")


class BlockMismatchError(SplitDatasetError, ValueError):
    """A block holds an array of another shape or dtype than the metadata says."""


class WriteError(SplitDatasetError, OSError):
    """Writing a block failed. ``frames_safe`` frames are on disk and readable."""

    def __init__(self, message: str, frames_safe: int, err: int | None = None) -> None:
        super().__init__(err, message) if err is not None else super().__init__(message)
        self.frames_safe = frames_safe
        self.message = message

    def __str__(self) -> str:
        return self.message


class DiskFullError(WriteError):
    """No space left for the next block (errno ENOSPC)."""


class WriterLockedError(SplitDatasetError, FileExistsError):
    """A live writer holds the dataset folder (its lock file is held)."""


class NotRegularFileError(SplitDatasetError, OSError):
    """A path that must be a regular file is a FIFO, a device, a folder or a socket
    (opening those can block forever, or read without end)."""


class BloscError(RuntimeError):
    """A blosc frame is damaged, or c-blosc failed on it (internal, not in ``__all__``).

    Raised inside the chunk reader, which knows no file names; reads and ``verify``
    report it as :class:`CorruptBlockError`, naming the block file.
    """


class ChecksumMismatchError(BloscError):
    """(Internal, like :class:`BloscError`.) A chunk's stored bytes do not match the checksum
    ``chunk_index.bin`` recorded for them, although the block file is the one indexed (same
    size, modification time and inode): its bytes changed in place (bit rot, a damaged disk,
    a tool writing into it). Reads report it as :class:`CorruptBlockError`, naming the block."""


class IndexOverflowError(InvalidIndexError, OverflowError):
    """An integer index beyond the platform's index range (numpy raises OverflowError;
    this is also an IndexError). Internal: not in ``__all__``, raised as numpy would."""


class TruncatedDatasetWarning(UserWarning):
    """The files hold fewer frames than the metadata claims (an acquisition that stopped early)."""


class MissingBlocksWarning(UserWarning):
    """Block files are missing inside the dataset; reading them will raise."""


class SourceError(ValueError):
    """A source or destination of :func:`split_dataset.convert.convert` that cannot be used:
    unknown type, missing inner path, unreadable file (a ``ValueError``, as in 1.0)."""


class CorruptSourceError(CorruptBlockError):
    """A chunk of an HDF5 file being converted (not a block of a split dataset) is damaged:
    refused before any decoder sees it. ``path`` names the file; ``block`` is ``()``."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(path, (), detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{str(self.path)!r} is unreadable: {self.detail}"


class ChunkIndexError(SplitDatasetError, ValueError):
    """``chunk_index.bin`` fails a check (damaged, cut short, another version, nonsense
    fields). Readers ignore such an index, with a :class:`ChunkIndexWarning`, and read the
    block files through HDF5; ``split-dataset index`` rebuilds it."""


class ChunkIndexWarning(UserWarning):
    """The dataset's ``chunk_index.bin`` was ignored (see :class:`ChunkIndexError`); reads are
    correct but each first read of a block opens its HDF5 file."""


class VirtualRefsError(SplitDatasetError, ValueError):
    """:func:`split_dataset.virtual_refs` cannot describe the dataset exactly as one zarr array
    whose chunks are byte ranges of the block files: the blocks differ in codec, layout or
    in-file chunk shape, their chunks do not tile the blocks, a chunk was stored with a filter
    skipped (HDF5's per-chunk filter mask), a codec has no zarr equivalent, or a block file
    lies outside the dataset folder. The message names the block file, what was expected
    and what was found. Nothing is written; the dataset still reads through this package
    (``split-dataset convert`` rewrites it in a layout references can describe)."""


class RemoteError(SplitDatasetError, OSError):
    """Reading a dataset by URL failed: the server refused, timed out or kept failing after
    retries, or answered in a way that cannot be trusted (a range request answered with
    the whole file). The message names the URL (and the block, where one was being read)."""

    def __init__(self, url: str, detail: str) -> None:
        self.url = str(url)
        super().__init__(f"{self.url}: {detail}")


class DroppedFramesWarning(UserWarning):
    """The camera's frame ids given to :meth:`~split_dataset.SplitDatasetWriter.append` skipped some:
    those frames never reached the writer. The gaps are counted (``writer.n_dropped``) and
    recorded in the metadata (``ds.dropped_frames``)."""
