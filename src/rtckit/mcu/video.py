"""Video composition for the MCU: grid layouts on I420 images, pure numpy.

No asyncio, no aiortc, no PyAV: images are :class:`I420Image` (three numpy planes, the layout
VP8 encoders and decoders use, so composing needs no colour conversion). Scaling is a function
given to the :class:`Compositor`: :func:`scale_nearest` here (numpy, nearest neighbour) or the
engine's swscale scaler on decoded :class:`av.VideoFrame` objects (better quality; see
:mod:`rtckit.mcu.engine`).

Layouts (:func:`grid_shape`, :func:`grid_layout`): ``cols = ceil(sqrt(n))``,
``rows = ceil(n / cols)`` for 1-16 participants (1x1, 1x2, 2x2, 2x3, 3x3, 3x4, 4x4); a
short last row is centred. Each source keeps its aspect ratio inside its cell
(:func:`fit_rect`: letterbox or pillarbox on the background colour). All rectangles have even
coordinates and sizes so the half-resolution chroma planes line up.

Labels are drawn with a built-in 5x7 bitmap font scaled up by whole pixels (upper-case ASCII
letters, digits and a few signs; anything else shows as ``?``). A participant without a current
picture gets a placeholder tile: a dark colour derived from its key, with its initials.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import attrs
import numpy as np
import numpy.typing as npt

from rtckit.errors import ConfigurationError

__all__ = [
    "MAX_PARTICIPANTS",
    "Compositor",
    "CompositorConfig",
    "I420Image",
    "Rect",
    "Tile",
    "TileSource",
    "fit_rect",
    "grid_layout",
    "grid_shape",
    "initials",
    "render_text",
    "rgb_to_yuv",
    "scale_nearest",
]

MAX_PARTICIPANTS = 16
"""Largest grid :func:`grid_layout` draws (4x4)."""


def rgb_to_yuv(r: int, g: int, b: int) -> tuple[int, int, int]:
    """BT.601 limited-range Y, U, V of an 8-bit RGB colour (what swscale uses for yuv420p)."""
    rf, gf, bf = r / 255.0, g / 255.0, b / 255.0
    y = 16.0 + 65.481 * rf + 128.553 * gf + 24.966 * bf
    u = 128.0 - 37.797 * rf - 74.203 * gf + 112.0 * bf
    v = 128.0 + 112.0 * rf - 93.786 * gf - 18.214 * bf
    return (
        int(np.clip(round(y), 0, 255)),
        int(np.clip(round(u), 0, 255)),
        int(np.clip(round(v), 0, 255)),
    )


class TileSource(Protocol):
    """Anything with a size that a scaler can turn into a tile (an image, an ``av.VideoFrame``)."""

    @property
    def width(self) -> int: ...  # pragma: no cover - protocol

    @property
    def height(self) -> int: ...  # pragma: no cover - protocol


class I420Image:
    """A planar YUV 4:2:0 image: ``y`` is ``height x width``, ``u`` and ``v`` half each way.

    :meth:`blank` allocates the three planes in one contiguous buffer laid out like PyAV's
    ``yuv420p`` ndarray (``(height * 3 // 2, width)``), returned by :meth:`stacked`, so that
    handing the image to an encoder is one copy.
    """

    __slots__ = ("_stacked", "height", "u", "v", "width", "y")

    def __init__(
        self, y: npt.NDArray[np.uint8], u: npt.NDArray[np.uint8], v: npt.NDArray[np.uint8]
    ) -> None:
        h, w = y.shape
        if w % 2 or h % 2 or u.shape != (h // 2, w // 2) or v.shape != (h // 2, w // 2):
            raise ConfigurationError(
                f"I420 planes must be even-sized with half-size chroma, got "
                f"{y.shape} {u.shape} {v.shape}"
            )
        self.y = y
        self.u = u
        self.v = v
        self.width = w
        self.height = h
        self._stacked: npt.NDArray[np.uint8] | None = None

    @classmethod
    def blank(cls, width: int, height: int, rgb: tuple[int, int, int] = (0, 0, 0)) -> I420Image:
        """A new image filled with one colour, in one stacked buffer."""
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ConfigurationError(f"image size must be even and positive: {width}x{height}")
        buf = np.empty(width * height * 3 // 2, dtype=np.uint8)
        ys = width * height
        cs = ys // 4
        img = cls(
            buf[:ys].reshape(height, width),
            buf[ys : ys + cs].reshape(height // 2, width // 2),
            buf[ys + cs :].reshape(height // 2, width // 2),
        )
        img._stacked = buf.reshape(height * 3 // 2, width)
        img.fill(rgb)
        return img

    @classmethod
    def from_stacked(cls, arr: npt.NDArray[np.uint8]) -> I420Image:
        """Wrap a PyAV-style ``yuv420p`` ndarray of shape ``(height * 3 // 2, width)``."""
        rows, width = arr.shape
        height = rows * 2 // 3
        if height * 3 // 2 != rows or width % 2 or height % 2:
            raise ConfigurationError(f"not a yuv420p stacked array: shape {arr.shape}")
        flat = np.ascontiguousarray(arr).reshape(-1)
        ys = width * height
        cs = ys // 4
        img = cls(
            flat[:ys].reshape(height, width),
            flat[ys : ys + cs].reshape(height // 2, width // 2),
            flat[ys + cs :].reshape(height // 2, width // 2),
        )
        img._stacked = flat.reshape(rows, width)
        return img

    def stacked(self) -> npt.NDArray[np.uint8]:
        """The image as a PyAV ``yuv420p`` ndarray (a view when the image owns one buffer)."""
        if self._stacked is not None:
            return self._stacked
        return np.concatenate([self.y.reshape(-1), self.u.reshape(-1), self.v.reshape(-1)]).reshape(
            self.height * 3 // 2, self.width
        )

    def fill(self, rgb: tuple[int, int, int]) -> None:
        """Paint the whole image one colour."""
        y, u, v = rgb_to_yuv(*rgb)
        self.y.fill(y)
        self.u.fill(u)
        self.v.fill(v)

    def paste(self, tile: I420Image, x: int, y: int) -> None:
        """Copy ``tile`` with its top-left corner at (``x``, ``y``); both even."""
        if x % 2 or y % 2:
            raise ConfigurationError(f"paste position must be even, got ({x}, {y})")
        w, h = tile.width, tile.height
        self.y[y : y + h, x : x + w] = tile.y
        self.u[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = tile.u
        self.v[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = tile.v

    def mean_yuv(self, rect: Rect) -> tuple[float, float, float]:
        """Mean (Y, U, V) over a rectangle (even coordinates); handy for tests and checks."""
        x, y, w, h = rect.x, rect.y, rect.width, rect.height
        return (
            float(self.y[y : y + h, x : x + w].mean()),
            float(self.u[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2].mean()),
            float(self.v[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2].mean()),
        )


@attrs.frozen
class Rect:
    """A rectangle in pixels: top-left corner and size."""

    x: int
    y: int
    width: int
    height: int

    @property
    def center(self) -> tuple[int, int]:
        """Centre point (x, y)."""
        return (self.x + self.width // 2, self.y + self.height // 2)

    def inset(self, margin: int) -> Rect:
        """The rectangle shrunk by ``margin`` pixels on every side (never below 2x2)."""
        w = max(2, self.width - 2 * margin)
        h = max(2, self.height - 2 * margin)
        return Rect(self.x + (self.width - w) // 2, self.y + (self.height - h) // 2, w, h)


def _even_down(v: float) -> int:
    return int(v) // 2 * 2


def grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns of the grid for ``n`` participants (1..16)."""
    if not 1 <= n <= MAX_PARTICIPANTS:
        raise ConfigurationError(f"grid layouts cover 1..{MAX_PARTICIPANTS} tiles, got {n}")
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return rows, cols


def grid_layout(n: int, width: int, height: int, *, gap: int = 0) -> tuple[Rect, ...]:
    """Cells of an ``n``-tile grid on a ``width`` x ``height`` canvas, row by row.

    Cells are even-aligned and separated by about ``gap`` pixels; a short last row is centred.
    ``n == 0`` gives no cells.
    """
    if n == 0:
        return ()
    rows, cols = grid_shape(n)
    cell_w = _even_down((width - gap * (cols + 1)) / cols)
    cell_h = _even_down((height - gap * (rows + 1)) / rows)
    if cell_w < 2 or cell_h < 2:
        raise ConfigurationError(f"{width}x{height} is too small for {n} tiles with gap {gap}")
    used_h = rows * cell_h + (rows - 1) * gap
    top = _even_down((height - used_h) / 2)
    cells: list[Rect] = []
    for r in range(rows):
        in_row = min(cols, n - r * cols)
        used_w = in_row * cell_w + (in_row - 1) * gap
        left = _even_down((width - used_w) / 2)
        cells.extend(
            Rect(left + c * (cell_w + gap), top + r * (cell_h + gap), cell_w, cell_h)
            for c in range(in_row)
        )
    return tuple(cells)


def fit_rect(src_width: int, src_height: int, cell: Rect) -> Rect:
    """The largest even-aligned rectangle of the source's aspect ratio centred in ``cell``."""
    if src_width <= 0 or src_height <= 0:
        raise ConfigurationError(f"source size must be positive: {src_width}x{src_height}")
    scale = min(cell.width / src_width, cell.height / src_height)
    w = max(2, min(cell.width, _even_down(src_width * scale + 1e-9)))
    h = max(2, min(cell.height, _even_down(src_height * scale + 1e-9)))
    x = cell.x + _even_down((cell.width - w) / 2)
    y = cell.y + _even_down((cell.height - h) / 2)
    return Rect(x, y, w, h)


def scale_nearest(image: I420Image, width: int, height: int) -> I420Image:
    """Nearest-neighbour resize with numpy (fast, blocky; no filtering)."""
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ConfigurationError(f"target size must be even and positive: {width}x{height}")
    if (width, height) == (image.width, image.height):
        return image
    out = I420Image.blank(width, height)
    rows = np.arange(height) * image.height // height
    cols = np.arange(width) * image.width // width
    out.y[:] = image.y.take(rows, axis=0).take(cols, axis=1)
    crow = np.arange(height // 2) * (image.height // 2) // (height // 2)
    ccol = np.arange(width // 2) * (image.width // 2) // (width // 2)
    out.u[:] = image.u.take(crow, axis=0).take(ccol, axis=1)
    out.v[:] = image.v.take(crow, axis=0).take(ccol, axis=1)
    return out


# --- bitmap font -------------------------------------------------------------------------------

_GLYPHS: dict[str, str] = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    "?": "01110 10001 00001 00010 00100 00000 00100",
}
_GLYPH_W, _GLYPH_H = 5, 7


def _glyph(ch: str) -> npt.NDArray[np.bool_]:
    rows = _GLYPHS.get(ch.upper(), _GLYPHS["?"]).split()
    return np.array([[c == "1" for c in row] for row in rows], dtype=np.bool_)


def render_text(text: str, scale: int = 1) -> npt.NDArray[np.bool_]:
    """Text as a boolean mask (``True`` = ink), 5x7 glyphs with one column of spacing."""
    if scale < 1:
        raise ConfigurationError(f"text scale must be >= 1, got {scale}")
    if not text:
        return np.zeros((_GLYPH_H * scale, 0), dtype=np.bool_)
    parts: list[npt.NDArray[np.bool_]] = []
    for i, ch in enumerate(text):
        if i:
            parts.append(np.zeros((_GLYPH_H, 1), dtype=np.bool_))
        parts.append(_glyph(ch))
    mask = np.concatenate(parts, axis=1)
    return np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)


def initials(name: str, limit: int = 2) -> str:
    """Up to ``limit`` upper-case initials of a display name (``"?"`` if none)."""
    words = [w for w in name.replace("_", " ").replace("-", " ").split() if w]
    letters = "".join(w[0] for w in words if w[0].isalnum()).upper()[:limit]
    return letters or "?"


# --- compositor --------------------------------------------------------------------------------

_K = TypeVar("_K", bound=Hashable)


def _check_size(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value < 16 or value % 2:
        raise ConfigurationError(f"{attr.name} must be even and >= 16, got {value}")


def _check_gap(_inst: object, _attr: object, value: int) -> None:
    if value < 0 or value % 2:
        raise ConfigurationError(f"gap must be even and >= 0, got {value}")


def _check_rgb(_inst: object, attr: attrs.Attribute[tuple[int, int, int]], value: object) -> None:
    if (
        not isinstance(value, tuple)
        or len(value) != 3
        or not all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    ):
        raise ConfigurationError(f"{attr.name} must be an (r, g, b) of 0..255, got {value!r}")


@attrs.frozen(kw_only=True)
class CompositorConfig:
    """Output canvas of the :class:`Compositor`."""

    width: int = attrs.field(default=640, validator=_check_size)
    """Output width in pixels (even)."""
    height: int = attrs.field(default=480, validator=_check_size)
    """Output height in pixels (even)."""
    gap: int = attrs.field(default=4, validator=_check_gap)
    """Pixels between cells (even)."""
    background: tuple[int, int, int] = attrs.field(default=(16, 16, 16), validator=_check_rgb)
    """RGB of the letterbox bars and gaps."""
    labels: bool = True
    """Draw each participant's name in the bottom-left corner of its cell."""


@attrs.frozen
class Tile(Generic[_K]):
    """One participant's cell input: its key, display name and latest picture (or ``None``)."""

    key: _K
    name: str
    source: TileSource | None


_DARK_PALETTE: tuple[tuple[int, int, int], ...] = (
    (52, 73, 94),
    (90, 50, 90),
    (40, 90, 70),
    (100, 60, 40),
    (50, 60, 110),
    (90, 40, 55),
    (60, 80, 40),
    (40, 75, 100),
)


class Compositor(Generic[_K]):
    """Draws the grid of tiles onto one reused canvas.

    ``scaler(source, width, height)`` turns a tile's source (whatever the caller puts in
    ``Tile.source``: an :class:`I420Image` for :func:`scale_nearest`, an ``av.VideoFrame``
    for the engine's swscale scaler) into an :class:`I420Image` of exactly that size.
    Scaled tiles are cached per key while the same source object and cell size come back,
    so an input slower than the output frame rate is scaled once per input frame.
    """

    def __init__(
        self,
        config: CompositorConfig | None = None,
        *,
        scaler: Callable[[Any, int, int], I420Image],
    ) -> None:
        self.config = config if config is not None else CompositorConfig()
        self._scaler = scaler
        self._canvas = I420Image.blank(self.config.width, self.config.height)
        self._scaled: dict[_K, tuple[TileSource, Rect, I420Image]] = {}
        self._placeholders: dict[tuple[_K, str, Rect], I420Image] = {}
        self._labels: dict[tuple[str, int], npt.NDArray[np.bool_]] = {}
        # Keys and cells of the last layout, replaced as one tuple: compose runs on a
        # worker thread while cell_of may be read from the event loop.
        self._keyed_layout: tuple[tuple[_K, ...], tuple[Rect, ...]] = ((), ())
        self.layout_version = 0
        """Increases whenever the set or order of tiles changes."""
        self.scales = 0
        """How many times the scaler was called (cache misses)."""

    @property
    def canvas(self) -> I420Image:
        """The output image; overwritten by the next :meth:`compose`."""
        return self._canvas

    @property
    def layout(self) -> tuple[Rect, ...]:
        """Cells of the last composed frame, in tile order."""
        return self._keyed_layout[1]

    def cell_of(self, key: _K) -> Rect | None:
        """The cell of a participant in the last composed layout."""
        keys, cells = self._keyed_layout
        try:
            return cells[keys.index(key)]
        except ValueError:
            return None

    def compose(self, tiles: Sequence[Tile[_K]]) -> I420Image:
        """Draw ``tiles`` (at most 16) and return the canvas (valid until the next call)."""
        cfg = self.config
        keys = tuple(t.key for t in tiles)
        if keys != self._keyed_layout[0]:
            self._keyed_layout = (keys, grid_layout(len(tiles), cfg.width, cfg.height, gap=cfg.gap))
            self.layout_version += 1
            for gone in set(self._scaled) - set(keys):
                del self._scaled[gone]
            self._placeholders = {k: v for k, v in self._placeholders.items() if k[0] in keys}
        canvas = self._canvas
        canvas.fill(cfg.background)
        for tile, cell in zip(tiles, self._keyed_layout[1], strict=True):
            if tile.source is None:
                ph_key = (tile.key, tile.name, cell)
                ph = self._placeholders.get(ph_key)
                if ph is None:
                    ph = self._placeholders[ph_key] = self._placeholder(tile.key, tile.name, cell)
                canvas.paste(ph, cell.x, cell.y)
            else:
                rect = fit_rect(tile.source.width, tile.source.height, cell)
                cached = self._scaled.get(tile.key)
                if cached is not None and cached[0] is tile.source and cached[1] == rect:
                    img = cached[2]
                else:
                    img = self._scaler(tile.source, rect.width, rect.height)
                    self.scales += 1
                    self._scaled[tile.key] = (tile.source, rect, img)
                canvas.paste(img, rect.x, rect.y)
            if cfg.labels and tile.name:
                self._draw_label(tile.name, cell)
        return canvas

    def _label_scale(self, cell: Rect) -> int:
        return max(1, min(3, cell.height // 90))

    def _placeholder(self, key: _K, name: str, cell: Rect) -> I420Image:
        colour = _DARK_PALETTE[zlib.crc32(repr(key).encode()) % len(_DARK_PALETTE)]
        img = I420Image.blank(cell.width, cell.height, colour)
        text = initials(name or str(key))
        scale = max(1, min(cell.height // 3 // _GLYPH_H, cell.width // 2 // (6 * len(text))))
        mask = render_text(text, scale)
        mh, mw = mask.shape
        if mw <= cell.width and mh <= cell.height:
            x = (cell.width - mw) // 2
            y = (cell.height - mh) // 2
            region = img.y[y : y + mh, x : x + mw]
            region[mask] = 220
        return img

    def _draw_label(self, name: str, cell: Rect) -> None:
        scale = self._label_scale(cell)
        mask = self._labels.get((name, scale))
        if mask is None:
            mask = self._labels[(name, scale)] = render_text(name[:24], scale)
        pad = 2 * scale
        mh, mw = mask.shape
        # clip to the cell, keep even box geometry for chroma
        max_w = cell.width - 2 * pad
        if max_w <= 0 or mh + 2 * pad > cell.height:
            return
        mask = mask[:, :max_w]
        mw = mask.shape[1]
        box_w = (mw + 2 * pad + 1) // 2 * 2
        box_h = (mh + 2 * pad + 1) // 2 * 2
        bx = cell.x
        by = cell.y + cell.height - box_h
        canvas = self._canvas
        # darken the box (keep chroma neutral), then draw the ink
        canvas.y[by : by + box_h, bx : bx + box_w] //= 3
        canvas.u[by // 2 : (by + box_h) // 2, bx // 2 : (bx + box_w) // 2] = 128
        canvas.v[by // 2 : (by + box_h) // 2, bx // 2 : (bx + box_w) // 2] = 128
        region = canvas.y[by + pad : by + pad + mh, bx + pad : bx + pad + mw]
        region[mask] = 235
