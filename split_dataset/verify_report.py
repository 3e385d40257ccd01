"""What :func:`split_dataset.verify.verify` returns: a :class:`VerifyReport` of :class:`Problem` s."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Problem", "VerifyReport"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file of a dataset.

    Attributes
    ----------
    file
        File name inside the dataset folder (``0003.h5``, ``stack_metadata.json``).
    kind
        ``"missing"`` (a block file the metadata describes is not there), ``"corrupt"``
        (cannot be opened or decoded), ``"mismatch"`` (shape or dtype differ from the
        metadata), ``"checksum"`` (the bytes changed since the block was written),
        ``"no-checksum"`` (``SHA256SUMS`` exists but has no line for this block),
        ``"metadata"`` (the metadata cannot be read) or ``"open"`` (opening the dataset with
        :class:`~split_dataset.SplitDataset` raises; the message names the exception).
    message
        One human-readable sentence.
    """

    file: str
    kind: str
    message: str


@dataclass
class VerifyReport:
    """What :func:`verify` found.

    Attributes
    ----------
    path
        The dataset folder.
    n_blocks
        Block files the metadata describes.
    n_checked
        Block files opened, every chunk they store decoded, and found whole.
    checksums_available
        Whether the folder has a ``SHA256SUMS`` file (datasets from older writers do not).
    n_checksums_matched
        Blocks whose SHA-256 was computed and equals their line in ``SHA256SUMS``
        (``n_blocks`` when every checksum was verified; fewer when some failed, could not be
        computed, or the block is missing).
    n_checksums_pending
        Blocks a live writer has just written whose line it has not appended to
        ``SHA256SUMS`` yet (reported as a note, not a problem; never while no writer runs).
    problems
        Every missing, corrupt or inconsistent file, in file order.
    notes
        Things worth knowing that do not make the dataset damaged.
    """

    path: Path
    n_blocks: int = 0
    n_checked: int = 0
    checksums_available: bool = False
    n_checksums_matched: int = 0
    n_checksums_pending: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only if every block is present, decodes, matches the metadata and its checksum."""
        return not self.problems

    @property
    def checksums_verified(self) -> bool:
        """True only if ``SHA256SUMS`` exists and every block's SHA-256 was computed and matches it."""
        return self.checksums_available and self.n_checksums_matched == self.n_blocks and not any(
            p.kind in ("checksum", "no-checksum") for p in self.problems)

    @property
    def damaged_files(self) -> list[str]:
        """Names of the files with at least one problem (each once, in order)."""
        return list(dict.fromkeys(p.file for p in self.problems))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (stable keys, for ``split-dataset verify --json``)."""
        return {
            "path": str(self.path),
            "ok": self.ok,
            "n_blocks": self.n_blocks,
            "n_checked": self.n_checked,
            "checksums_available": self.checksums_available,
            "checksums_matched": self.n_checksums_matched,
            "checksums_verified": self.checksums_verified,
            "checksums_pending": self.n_checksums_pending,
            "problems": [{"file": p.file, "kind": p.kind, "message": p.message} for p in self.problems],
            "notes": list(self.notes),
        }
