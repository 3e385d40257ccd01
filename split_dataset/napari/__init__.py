"""napari plugin (npe2 manifest ``split_dataset``, ``pip install "split_dataset[napari]"``).

``napari.yaml`` declares a reader that claims split dataset folders (and nothing else,
answering at once without opening a file) and a writer that saves an image layer as a
split dataset. Neither module imports napari itself: the reader returns layer data tuples
over lazy dask arrays, the writer takes napari's layer data and attributes.

- :func:`get_reader` / :func:`read`: see :mod:`split_dataset.napari._reader`; :func:`refresh` gives a
  layer of a dataset being written its new frames;
- :func:`write_image`: see :mod:`split_dataset.napari._writer`.
"""

from __future__ import annotations

from ._reader import DISPLAY_RANGE_KEY, get_reader, is_split_dataset, layer_data, read, refresh
from ._writer import write_image

__all__ = ["get_reader", "read", "layer_data", "is_split_dataset", "write_image", "DISPLAY_RANGE_KEY", "refresh"]
