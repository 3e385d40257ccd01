""":func:`export_vds`: an HDF5 file whose dataset is a virtual dataset over a split dataset's blocks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py

from ..dataset import SplitDataset
from ..errors import BlockMismatchError, MissingBlockError
from .attributes import h5_attrs
from .sources import Source
from .spec import Progress, Spec
from .staging import same_or_inside, staged

__all__ = ["export_vds"]


def _relative(path: Path, base: Path) -> str:
    try:
        rel = Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive (Windows): only an absolute path can work
        return Path(path).as_posix()
    return rel if rel.startswith("../") else "./" + rel


def export_vds(
    path: str | os.PathLike[str] | SplitDataset,
    out: str | os.PathLike[str],
    *,
    fill_value: Any = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write an HDF5 file whose dataset ``/stack`` is a virtual dataset over every block file.

    Any HDF5 tool (h5py, HDFView, MATLAB, Fiji) then reads the whole split dataset as
    one array. Block files are referenced by paths relative to `out`'s folder, so the
    dataset folder and the file can be moved together. Readers need the blosc filter
    for the blocks (``import hdf5plugin`` in Python; the HDF5 plugin path elsewhere).
    Each block contributes only the region it owns (overlap from ``padding`` is
    excluded). Resolution, units, axis order, frame interval and attrs become attributes
    of ``/stack``.

    Parameters
    ----------
    path
        The split dataset.
    out
        The HDF5 file to write; refused if it exists unless `overwrite`.
    fill_value
        None (default): a dataset with missing blocks is refused. A number: missing
        blocks read as that value.
    overwrite
        Replace an existing `out`.
    progress
        Called as ``progress(done, total)`` with the number of blocks mapped.

    Returns
    -------
    Path
        `out`.

    Raises
    ------
    MissingBlockError
        Block files are missing and no `fill_value` was given.
    FileExistsError
        `out` exists and `overwrite` is False.
    ValueError
        `out` is the dataset folder, lies inside it (a block file, the metadata) or holds it.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os, h5py
    >>> d = tempfile.mkdtemp()
    >>> x = np.arange(60, dtype="uint16").reshape(6, 10)
    >>> _ = split_dataset.save(x, os.path.join(d, "ds"), (4,))
    >>> vds = export_vds(os.path.join(d, "ds"), os.path.join(d, "ds.h5"))
    >>> with h5py.File(vds) as f:
    ...     bool((f["stack"][:] == x).all()), f["stack"].is_virtual
    (True, True)
    """
    ds = path if isinstance(path, SplitDataset) else SplitDataset(path)
    try:
        out = Path(out)
        if same_or_inside(out, ds.root) or same_or_inside(ds.root, out):
            raise ValueError(
                f"the output {str(out)!r} and the dataset {str(ds.root)!r} overlap (the output would replace "
                "the dataset, one of its files, or what holds it); write it outside the dataset folder"
            )
        grid = ds.grid
        files = ds.files.ravel()
        missing = set(ds.missing_blocks)
        if missing and fill_value is None:
            first = min(missing)
            names = ", ".join(files[i].name for i in sorted(missing)[:5]) + (" ..." if len(missing) > 5 else "")
            raise MissingBlockError(
                files[first], grid.coords(first),
                f"{len(missing)} block file(s) missing ({names}); pass fill_value= (--fill VALUE) to export "
                "anyway, the missing regions reading as VALUE",
            )
        base = Path(os.path.abspath(out)).parent
        layout = h5py.VirtualLayout(shape=ds.shape, dtype=ds.dtype)
        total = grid.n_blocks
        if progress is not None:
            progress(0, total)
        for index, coords in enumerate(grid.iter_coords()):
            owned = tuple(slice(grid.block_start(a, c), grid.owned_stop(a, c)) for a, c in enumerate(coords))
            if index not in missing and all(s.stop > s.start for s in owned):
                with ds.block(index) as handle:
                    shape, dtype, name = handle.shape, handle.dtype, handle.dset.name
                need = tuple(s.stop - s.start for s in owned)
                if dtype != ds.dtype or len(shape) != len(need) or any(h < n for h, n in zip(shape, need)):
                    raise BlockMismatchError(
                        f"block {coords} ({files[index].name}): expected at least {need} {ds.dtype}, "
                        f"found {shape} {dtype}"
                    )
                source = h5py.VirtualSource(_relative(files[index], base), name, shape=shape, dtype=dtype)
                layout[owned] = source[tuple(slice(0, n) for n in need)]
            if progress is not None:
                progress(index + 1, total)
        meta = Source(ds, Spec("split", ds.root), resolution=tuple(ds.resolution),
                      units=tuple(ds.units) if any(ds.units) else None, axis_order=ds.axis_order,
                      frame_interval=ds.frame_interval, attrs=dict(ds.attrs))
        with staged(out, overwrite) as tmp, h5py.File(tmp, "x") as f:
            kwargs = {"fillvalue": fill_value} if fill_value is not None else {}
            d = f.create_virtual_dataset("stack", layout, **kwargs)
            for k, v in h5_attrs(meta).items():
                d.attrs[k] = v
        return out
    finally:
        if not isinstance(path, SplitDataset):
            ds.close()
