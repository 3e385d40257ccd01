"""Converting between split datasets, HDF5 datasets, ``.npy`` files and zarr arrays.

A source or destination is named by a string (a *spec*):

- a split dataset folder: ``fish1/raw``
- an HDF5 dataset: ``file.h5:/path/in/file`` (``.h5``, ``.hdf5``, ``.hdf``, ``.he5``; other
  file names are recognised by their HDF5 signature). Without ``:/path``, a source file
  must hold exactly one dataset; a destination gets ``/stack``.
- a ``.npy`` file: ``stack.npy`` (read memory-mapped)
- a zarr array: ``stack.zarr`` or ``store.zarr:/group/array``

:func:`convert` streams: it reads and writes one destination block (a split dataset's
block file, or a chunk-aligned region of about 64 MiB for the other formats) at a
time, so memory stays bounded whatever the array size. It writes under a temporary
name beside the destination and renames it into place at the end, so a failure leaves
nothing under the destination name. Physical metadata (resolution, units, axis order,
frame interval) and user attributes are carried across where both sides can hold them:
``stack_metadata.json`` ↔ HDF5 dataset attributes ↔ zarr attributes. ``.npy`` holds none.
HDF5 sources are read with every blosc chunk validated before it is decoded (a damaged
one raises :class:`~split_dataset.errors.CorruptSourceError`, never crashes c-blosc).

:func:`export_vds` writes an HDF5 file whose dataset is a virtual dataset over the block
files of a split dataset, so any HDF5 tool sees the whole array as one dataset.

Modules, one concern each:

- ``spec``: parsing a spec (:func:`parse_spec`, :class:`Spec`);
- ``sources``: opening a source (:func:`open_source`, :class:`Source`), one reader per kind;
- ``h5source``: HDF5 sources read through the storage layer, frames validated;
- ``attributes``: metadata between ``stack_metadata.json``, HDF5 and zarr attributes;
- ``staging``: writing under a temporary name, renamed into place when complete;
- ``sinks``: one writer per destination kind;
- ``core``: :func:`convert`, :class:`Converted`;
- ``vds``: :func:`export_vds`.
"""

from __future__ import annotations

from ..errors import CorruptSourceError, SourceError
from .core import Converted, convert
from .sources import Source, open_source
from .spec import Progress, Spec, parse_spec
from .vds import export_vds

__all__ = [
    "Converted",
    "CorruptSourceError",
    "Progress",
    "Source",
    "SourceError",
    "Spec",
    "convert",
    "export_vds",
    "open_source",
    "parse_spec",
]
