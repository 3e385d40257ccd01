"""Render the README's napari screenshot (docs/napari.png) without a screen.

It writes the demo dataset (``python -m split_dataset demo DIR -q``) into a temporary folder,
opens it in napari through this package's ``split-dataset`` reader plugin, which gives the
layer its physical scale, units and axis labels (t in s; z, y, x in µm), turns on the scale
bar and the axes, moves the sliders to the middle of the recording and writes a PNG of the
whole napari window (canvas, layer controls, layer list, dims sliders), quantized to a
palette so it stays small.

Run it from the repository root, with this package, napari, a Qt binding (PyQt6; napari
deprecates PyQt5) and Pillow installed, under a virtual X server (xvfb-run's default screen,
1280 x 1024 x 24, holds the 1200 x 800 window)::

    xvfb-run -a python docs/napari_screenshot.py docs/napari.png

(Debian: ``apt-get install xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0
libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-render-util0 libxcb-image0
libxcb-shape0 libxcb-cursor0``; Mesa's software OpenGL renders the canvas. Qt's
``QT_QPA_PLATFORM=offscreen`` does not work: napari's canvas is a QOpenGLWidget, for which
that platform creates no OpenGL context.) The output is the same bytes from run to run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: Size of the napari window, in pixels (the PNG's size when the screen scale is 1).
WINDOW_SIZE = (1200, 800)
#: Colours in the quantized PNG: the UI is a handful of greys and the image is grey.
PALETTE_COLORS = 128


def make_demo(folder: Path) -> Path:
    """Write the demo dataset into `folder` (60 volumes of 8 x 256 x 256) and return its path."""
    path = folder / "demo"
    subprocess.run([sys.executable, "-m", "split_dataset", "demo", str(path), "-q"],
                   check=True, stdout=subprocess.DEVNULL)
    return path


def _settle() -> None:
    """Let Qt lay the window out and the canvas redraw (overlays are placed on resize)."""
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()


def render(dataset: Path, size: tuple[int, int] = WINDOW_SIZE) -> np.ndarray:
    """The napari window showing `dataset` at its physical scale, as an RGBA array."""
    import napari  # type: ignore[import-untyped]

    # a shown window (on the virtual screen): a hidden one lays the canvas overlays out for a
    # stale canvas size, which cuts the scale bar off at the right edge
    viewer = napari.Viewer(title="split dataset in napari", show=True)
    try:
        viewer.window.resize(*size)
        (layer,) = viewer.open(str(dataset), plugin="split-dataset")
        # the middle of the recording, and the plane holding the brightest cells
        viewer.dims.current_step = (layer.data.shape[0] // 2, 5, 0, 0)
        scale_bar = viewer.canvas.overlays.scale_bar  # its unit is the layer's: µm
        scale_bar.visible = True
        scale_bar.font_size = 12
        axes = viewer.scene.overlays.axes
        axes.visible = True
        axes.labels = True
        _settle()
        viewer.reset_view()
        viewer.scene.camera.zoom *= 0.92  # a margin around the field of view
        _settle()
        return np.asarray(viewer.screenshot(canvas_only=False, flash=False))
    finally:
        viewer.close()


def save_png(rgba: np.ndarray, out: Path) -> None:
    """Write `rgba` as a palette PNG (opaque: the window has no transparent pixels)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]), mode="RGB")
    image = image.quantize(colors=PALETTE_COLORS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/napari.png"),
                        help="the PNG to write (default docs/napari.png)")
    args = parser.parse_args(argv)
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        parser.error("no display: run it under a virtual X server, e.g. xvfb-run -a python docs/napari_screenshot.py")
    with tempfile.TemporaryDirectory(prefix="split_dataset_screenshot_") as tmp:
        rgba = render(make_demo(Path(tmp)))
    save_png(rgba, args.out)
    print(f"{args.out}: {rgba.shape[1]} x {rgba.shape[0]} px, {args.out.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
