"""Writing a destination safely: under a temporary name beside it, renamed into place when complete.

A failure or an interrupt leaves nothing under the destination name; an existing
destination is replaced only with ``overwrite`` and only once the new one is complete.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..locks import refuse_if_written
from ..storage import METADATA_FILENAME, scan_block_files, temporary_name
from .spec import ZARR_MARKERS

__all__ = ["same_or_inside", "staged"]


def _check_destination(dst: Path, overwrite: bool) -> None:
    if not os.path.lexists(dst):
        return
    if dst.is_dir() and not dst.is_symlink() and not any(dst.iterdir()):
        return  # an empty folder is as good as none (as for split_dataset.save)
    if not overwrite:
        raise FileExistsError(f"{str(dst)!r} already exists; pass overwrite=True (--overwrite) to replace it")
    if dst.is_dir():
        refuse_if_written(dst, "replace it")
    if dst.is_dir() and not dst.is_symlink():
        ours = (dst / METADATA_FILENAME).exists() or any((dst / m).exists() for m in ZARR_MARKERS)
        if not ours and not scan_block_files(dst):
            raise FileExistsError(
                f"{str(dst)!r} is a folder that holds neither a split dataset nor a zarr store; "
                "it is not replaced, even with overwrite"
            )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _commit(tmp: Path, dst: Path, overwrite: bool) -> None:
    """Move the finished `tmp` to `dst`: atomically, never over something unless `overwrite`."""
    if os.path.lexists(dst):
        if dst.is_dir() and not dst.is_symlink() and not any(dst.iterdir()):
            dst.rmdir()
        elif not overwrite:
            raise FileExistsError(f"{str(dst)!r} appeared while it was being written; the result is not moved there")
        else:
            if dst.is_dir():  # a writer may have started in it since the destination was checked
                refuse_if_written(dst, "replace it")
            old = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:12]}.old")
            os.replace(dst, old)
            try:
                os.replace(tmp, dst)
            except BaseException:
                os.replace(old, dst)
                raise
            _remove(old)
            return
    if tmp.is_dir():
        os.rename(tmp, dst)  # fails rather than replace a folder that appeared meanwhile
        return
    try:
        os.link(tmp, dst)  # fails if dst appeared meanwhile, where os.replace would clobber it
    except FileExistsError:
        raise FileExistsError(
            f"{str(dst)!r} appeared while it was being written; the result is not moved there"
        ) from None
    except OSError:
        os.replace(tmp, dst)  # no hard links on this file system
    else:
        tmp.unlink()


@contextmanager
def staged(dst: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside `dst` to write into; renamed to `dst` on success, removed on failure.

    Raises ``FileExistsError`` if `dst` exists (an empty folder counts as absent) and
    `overwrite` is False, or a live writer holds it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> dst = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with staged(dst, overwrite=False) as tmp:
    ...     _ = tmp.write_text("done")
    >>> dst.read_text()
    'done'
    """
    dst = Path(os.path.abspath(dst))
    _check_destination(dst, overwrite)
    created: list[Path] = []
    p = dst.parent
    while not p.exists():
        created.append(p)
        p = p.parent
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(dst)
    try:
        yield tmp
        _commit(tmp, dst, overwrite)
    except BaseException:
        _remove(tmp)
        for d in created:  # deepest first: the folders this call created, if still empty
            try:
                d.rmdir()
            except OSError:
                break
        raise


def same_or_inside(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are the same path, or `a` lies inside `b` (symbolic links resolved).

    Examples
    --------
    >>> from pathlib import Path
    >>> same_or_inside(Path("/data/ds/0001.h5"), Path("/data/ds")), same_or_inside(Path("/data"), Path("/data/ds"))
    (True, False)
    """
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents
