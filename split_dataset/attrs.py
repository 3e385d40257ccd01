"""``ds.attrs``: user metadata of a split dataset that is saved when it is changed.

:class:`DatasetAttrs` is a mutable mapping over the ``attrs`` object of
``stack_metadata.json``, like ``h5py`` and ``zarr`` attributes: every assignment,
deletion or ``update()`` rewrites the JSON file at once, atomically (a temporary file
renamed over it), so readers see the old file or the new one, never a mix.

- Before each write the file is read again and only the changed keys are applied to
  what it holds then, so a change made meanwhile by another process (to other attrs or
  to any other key) is kept; every other key is written back as it was read.
- A folder held by a live :class:`~split_dataset.SplitDatasetWriter` is refused
  (:class:`~split_dataset.errors.WriterLockedError`): the writer rewrites the metadata
  itself after every block.
- Values must be JSON values (None, bool, int, float, str, lists and string-keyed
  dicts of them); numpy scalars and arrays become numbers and lists, tuples become
  lists, paths become strings. Anything else is refused with ``TypeError`` at
  assignment, before anything is written; NaN, infinities and integers beyond 64 bits
  with ``ValueError`` (other JSON readers cannot read them back).
- Reading returns the values as of the last write or :meth:`DatasetAttrs.refresh`
  (copies: changing a returned list does not change the attrs; assign it back).
- Datasets from split_dataset < 0.3 keep their metadata inside the last block file and
  have no ``stack_metadata.json``; their attrs are empty and cannot be edited in place
  (convert them: ``split-dataset convert OLD NEW``). Opening a dataset never writes.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MetadataError
from .locks import refuse_if_written
from .metadata import Metadata
from .storage import METADATA_FILENAME, read_json, write_json_atomic

__all__ = ["DatasetAttrs", "to_json_value"]

#: ``storage.read_json`` reads at most this many bytes: a larger file could not be read back.
MAX_METADATA_BYTES = (1 << 24) - 1
#: Deeper nesting than this is refused (JSON parsers recurse once per level).
MAX_DEPTH = 64

_MISSING = object()


def to_json_value(value: Any, *, _depth: int = 0) -> Any:
    """`value` as plain JSON data (what ``stack_metadata.json`` will hold), or raise.

    numpy scalars become Python numbers, numpy arrays and tuples become lists, paths
    become strings.

    Raises
    ------
    TypeError
        `value` (or something inside it) is not JSON data: bytes, sets, objects,
        complex numbers, dicts with keys that are not strings.
    ValueError
        NaN or infinity, an integer outside the 64-bit range, nesting deeper than 64.

    Examples
    --------
    >>> import numpy as np
    >>> to_json_value({"gain": np.float32(1.5), "roi": (0, 0, 64, 64), "n": np.arange(3)})
    {'gain': 1.5, 'roi': [0, 0, 64, 64], 'n': [0, 1, 2]}
    >>> to_json_value({1, 2})
    Traceback (most recent call last):
    ...
    TypeError: attrs must be JSON values; {1, 2} of type set is not
    """
    if _depth > MAX_DEPTH:
        raise ValueError(f"attrs values may be nested at most {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        out = int(value)
        if not -(2**63) <= out < 2**64:
            raise ValueError(f"attrs integers must fit in 64 bits, got one of {out.bit_length()} bits")
        return out
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"attrs numbers must be finite (JSON has no {f!r}), got {f!r}")
        return f
    if isinstance(value, np.str_):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value) if isinstance(os.fspath(value), str) else _refuse(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufU":
            raise TypeError(f"attrs must be JSON values; an array of dtype {value.dtype} is not")
        return [to_json_value(v, _depth=_depth + 1) for v in value] if value.ndim else to_json_value(
            value[()], _depth=_depth)
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, _depth=_depth + 1) for v in value]
    if isinstance(value, Mapping):
        out_d = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"attrs dict keys must be strings (JSON object keys), got {k!r}")
            out_d[k] = to_json_value(v, _depth=_depth + 1)
        return out_d
    return _refuse(value)


def _refuse(value: Any) -> Any:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    raise TypeError(f"attrs must be JSON values; {text} of type {type(value).__name__} is not")


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"attrs keys must be strings (JSON object keys), got {key!r}")
    return key


class DatasetAttrs(MutableMapping[str, Any]):
    """The ``attrs`` of a split dataset; changes are written to ``stack_metadata.json`` at once.

    Parameters
    ----------
    root
        The dataset folder.
    attrs
        The attrs as last read (``None``: read them from the folder now).
    on_change
        Called with the whole JSON document after each write (the dataset uses it to
        update what it holds in memory).

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ds")
    >>> _ = split_dataset.save(np.zeros((4, 8), "uint8"), path, attrs={"fish": "F0"})
    >>> attrs = DatasetAttrs(path)
    >>> attrs["stage"] = "6 dpf"
    >>> attrs.update(gain=np.float32(1.5), roi=(0, 0, 8, 4))
    >>> del attrs["fish"]
    >>> DatasetAttrs(path)
    <DatasetAttrs of 'ds': {'stage': '6 dpf', 'gain': 1.5, 'roi': [0, 0, 8, 4]}>
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        attrs: Mapping[str, Any] | None = None,
        *,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._root = Path(root)
        self._on_change = on_change
        self._attrs: dict[str, Any] = dict(attrs) if attrs is not None else self._read_attrs()

    # ------------------------------------------------------------------ reading

    @property
    def path(self) -> Path:
        """The ``stack_metadata.json`` file the attrs are stored in."""
        return self._root / METADATA_FILENAME

    def _read_doc(self) -> dict[str, Any]:
        path = self.path
        if not path.is_file():
            if not self._root.is_dir():
                raise FileNotFoundError(f"no split dataset at {str(self._root)!r}: the folder does not exist")
            raise MetadataError(
                f"{str(self._root)!r} has no {METADATA_FILENAME} (datasets written before split_dataset 0.3 "
                "keep their metadata inside the last block file), so its attrs cannot be stored; copy it to "
                "the current layout first: split-dataset convert OLD NEW"
            )
        doc = read_json(path)
        try:
            Metadata.from_dict(doc)  # never rewrite a file this package could not read
        except MetadataError as e:
            raise MetadataError(f"{str(path)!r}: {e}") from e
        attrs = doc.get("attrs")
        if attrs is None:
            doc["attrs"] = {}
        return doc

    def _read_attrs(self) -> dict[str, Any]:
        if not self.path.is_file() and self._root.is_dir():
            return {}  # the old layout: no attrs
        return dict(self._read_doc()["attrs"])

    def refresh(self) -> DatasetAttrs:
        """Read the attrs from disk again (another process may have changed them); returns self.

        Examples
        --------
        >>> attrs.refresh()  # doctest: +SKIP
        """
        self._attrs = self._read_attrs()
        return self

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._attrs[key])

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._attrs))

    def __len__(self) -> int:
        return len(self._attrs)

    def __contains__(self, key: object) -> bool:
        return key in self._attrs

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy of the attrs (for ``json.dumps``, say)."""
        return copy.deepcopy(self._attrs)

    def __repr__(self) -> str:
        text = repr(self._attrs)
        if len(text) > 500:
            text = text[:496] + "...}"
        return f"<DatasetAttrs of {self._root.name!r}: {text}>"

    # ------------------------------------------------------------------ writing

    def _write(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        """Re-read the file, apply `change` to its attrs, write it back; return what `change` returned."""
        refuse_if_written(self._root, "edit its attrs")
        doc = self._read_doc()
        attrs = dict(doc["attrs"])
        result = change(attrs)
        doc["attrs"] = attrs
        data = json.dumps(doc, indent=1)
        if len(data.encode()) > MAX_METADATA_BYTES:
            raise ValueError(
                f"the attrs would make {str(self.path)!r} {len(data.encode())} bytes; "
                f"at most {MAX_METADATA_BYTES} can be read back"
            )
        write_json_atomic(self.path, doc)
        self._attrs = attrs
        if self._on_change is not None:
            self._on_change(doc)
        return result

    def __setitem__(self, key: str, value: Any) -> None:
        key, value = _check_key(key), to_json_value(value)
        self._write(lambda d: d.__setitem__(key, value))

    def __delitem__(self, key: str) -> None:
        def change(d: dict[str, Any]) -> None:
            if key not in d and key not in self._attrs:
                raise KeyError(key)
            d.pop(key, None)

        self._write(change)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set several attrs with one write of the file (``dict.update`` arguments)."""
        new = dict(other, **kwargs) if not isinstance(other, Mapping) else {**dict(other.items()), **kwargs}
        checked = {_check_key(k): to_json_value(v) for k, v in new.items()}
        if checked:
            self._write(lambda d: d.update(checked))

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Remove `key` and return its value (`default` if absent; KeyError without one)."""
        if key not in self._attrs:
            if default is _MISSING:
                raise KeyError(key)
            return default
        value = self[key]
        self._write(lambda d: d.pop(key, None))
        return value

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the last (key, value) pair; KeyError when empty."""
        if not self._attrs:
            raise KeyError("popitem(): the attrs are empty")
        key = next(reversed(self._attrs))
        return key, self.pop(key)

    def clear(self) -> None:
        """Remove every attr (one write)."""
        self._write(lambda d: d.clear())

    def setdefault(self, key: str, default: Any = None) -> Any:
        """The value of `key`; if absent, set it to `default` (one write) and return that."""
        if key in self._attrs:
            return self[key]
        key, value = _check_key(key), to_json_value(default)
        self._write(lambda d: d.setdefault(key, value))
        return self[key]
