"""Unit tests of MCU layouts and the compositor (pure numpy)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rtckit.errors import ConfigurationError
from rtckit.mcu import video
from rtckit.mcu.video import (
    Compositor,
    CompositorConfig,
    I420Image,
    Rect,
    Tile,
    fit_rect,
    grid_layout,
    grid_shape,
    initials,
    render_text,
    rgb_to_yuv,
    scale_nearest,
)

COLOURS = [(220, 30, 30), (30, 200, 40), (30, 60, 220), (230, 220, 30)]


def overlaps(a: Rect, b: Rect) -> bool:
    return not (
        a.x + a.width <= b.x
        or b.x + b.width <= a.x
        or a.y + a.height <= b.y
        or b.y + b.height <= a.y
    )


@pytest.mark.parametrize(
    ("n", "shape"),
    [
        (1, (1, 1)),
        (2, (1, 2)),
        (3, (2, 2)),
        (4, (2, 2)),
        (5, (2, 3)),
        (6, (2, 3)),
        (7, (3, 3)),
        (9, (3, 3)),
        (10, (3, 4)),
        (12, (3, 4)),
        (13, (4, 4)),
        (16, (4, 4)),
    ],
)
def test_grid_shapes(n: int, shape: tuple[int, int]) -> None:
    assert grid_shape(n) == shape


@pytest.mark.parametrize(("width", "height"), [(640, 480), (1280, 720), (320, 240)])
def test_layouts_fit_canvas_without_overlap(width: int, height: int) -> None:
    for n in range(1, 17):
        cells = grid_layout(n, width, height, gap=4)
        assert len(cells) == n
        for c in cells:
            assert c.x >= 0
            assert c.y >= 0
            assert c.x + c.width <= width
            assert c.y + c.height <= height
            assert c.x % 2 == c.y % 2 == c.width % 2 == c.height % 2 == 0
        for a, b in itertools.combinations(cells, 2):
            assert not overlaps(a, b)
    assert grid_layout(0, width, height) == ()


def test_short_last_row_is_centred() -> None:
    cells = grid_layout(3, 640, 480, gap=0)
    assert cells[0] == Rect(0, 0, 320, 240)
    assert cells[2] == Rect(160, 240, 320, 240)


def test_bad_layout_sizes() -> None:
    with pytest.raises(ConfigurationError):
        grid_shape(17)
    with pytest.raises(ConfigurationError):
        grid_shape(0)
    with pytest.raises(ConfigurationError):
        grid_layout(16, 20, 20, gap=4)
    with pytest.raises(ConfigurationError):
        CompositorConfig(width=641)


def test_fit_rect_keeps_aspect() -> None:
    cell = Rect(100, 50, 320, 240)
    assert fit_rect(640, 480, cell) == cell
    wide = fit_rect(1280, 720, cell)  # letterbox: full width, bars top and bottom
    assert wide.width == 320
    assert wide.height == 180
    assert wide.y == 50 + 30
    tall = fit_rect(480, 640, cell)  # pillarbox
    assert tall.height == 240
    assert tall.width == 180
    assert tall.x == 100 + 70


def test_scale_nearest_and_stacked_roundtrip() -> None:
    img = I420Image.blank(64, 48, COLOURS[0])
    img.y[:24] = 50
    small = scale_nearest(img, 32, 24)
    assert small.width == 32
    assert small.height == 24
    assert (small.y[:12] == 50).all()
    assert (small.y[12:] == img.y[-1, 0]).all()
    again = I420Image.from_stacked(small.stacked().copy())
    np.testing.assert_array_equal(again.y, small.y)
    np.testing.assert_array_equal(again.v, small.v)
    with pytest.raises(ConfigurationError):
        I420Image.from_stacked(np.zeros((10, 10), dtype=np.uint8))


def test_compositor_draws_each_colour_in_its_cell() -> None:
    comp: Compositor[str] = Compositor(
        CompositorConfig(width=640, height=480, labels=False), scaler=scale_nearest
    )
    tiles = [Tile(f"p{i}", f"P{i}", I420Image.blank(320, 240, c)) for i, c in enumerate(COLOURS)]
    out = comp.compose(tiles)
    assert comp.layout_version == 1
    for i, colour in enumerate(COLOURS):
        cell = comp.cell_of(f"p{i}")
        assert cell is not None
        y, u, v = out.mean_yuv(cell.inset(8))
        ey, eu, ev = rgb_to_yuv(*colour)
        assert abs(y - ey) < 1
        assert abs(u - eu) < 1
        assert abs(v - ev) < 1
    # same sources again: scaled tiles come from the cache
    scales = comp.scales
    comp.compose(tiles)
    assert comp.scales == scales
    assert comp.layout_version == 1


def test_layout_changes_on_join_and_leave() -> None:
    comp: Compositor[str] = Compositor(
        CompositorConfig(width=320, height=240, labels=False), scaler=scale_nearest
    )
    srcs = [I420Image.blank(64, 48, c) for c in COLOURS]
    comp.compose([Tile("a", "", srcs[0]), Tile("b", "", srcs[1])])
    two = comp.layout
    comp.compose([Tile("a", "", srcs[0]), Tile("b", "", srcs[1]), Tile("c", "", srcs[2])])
    assert comp.layout_version == 2
    assert len(comp.layout) == 3
    assert comp.layout != two
    out = comp.compose([Tile("c", "", srcs[2])])
    assert comp.layout_version == 3
    assert comp.cell_of("a") is None
    ey, _, _ = rgb_to_yuv(*COLOURS[2])
    cell = comp.cell_of("c")
    assert cell is not None
    assert abs(out.mean_yuv(cell.inset(4))[0] - ey) < 1


def test_cell_of_is_consistent_while_a_layout_is_computed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The MCU composes on a worker thread and reads cells from the event loop, so a read
    # may land while compose computes a new layout: it must see the old layout whole,
    # never the new keys with the old cells (an IndexError in CI before the fix).
    comp: Compositor[str] = Compositor(
        CompositorConfig(width=32, height=24, labels=False), scaler=scale_nearest
    )
    src = I420Image.blank(8, 6, COLOURS[0])
    comp.compose([Tile("c", "", src)])
    before = comp.cell_of("c")
    seen: list[Rect | None] = []
    real = video.grid_layout

    def reading_grid_layout(n: int, width: int, height: int, *, gap: int = 0) -> tuple[Rect, ...]:
        seen.append(comp.cell_of("c"))
        return real(n, width, height, gap=gap)

    monkeypatch.setattr(video, "grid_layout", reading_grid_layout)
    comp.compose([Tile("a", "", src), Tile("b", "", src), Tile("c", "", src)])
    assert before is not None
    assert seen == [before]
    assert comp.cell_of("c") == comp.layout[2]


def test_placeholder_and_labels_are_drawn() -> None:
    comp: Compositor[str] = Compositor(
        CompositorConfig(width=640, height=480, labels=True, background=(0, 0, 0)),
        scaler=scale_nearest,
    )
    src = I420Image.blank(320, 240, (128, 128, 128))
    out = comp.compose([Tile("a", "Alice", src), Tile("b", "Bob Brown", None)])
    a_cell, b_cell = comp.layout
    grey_y = rgb_to_yuv(128, 128, 128)[0]
    # label: bright ink in a darkened box at the bottom left of a's cell
    box = out.y[a_cell.y + a_cell.height - 20 : a_cell.y + a_cell.height, a_cell.x : a_cell.x + 60]
    assert (box == 235).any()
    assert (box < grey_y).any()
    # placeholder: not the background, has initials ink near its centre
    bg_y = rgb_to_yuv(0, 0, 0)[0]
    cx, cy = b_cell.center
    centre = out.y[cy - 20 : cy + 20, cx - 40 : cx + 40]
    assert (centre == 220).any()
    assert out.y[b_cell.y + 4, b_cell.x + 4] != bg_y


def test_text_helpers() -> None:
    assert initials("Bob Brown") == "BB"
    assert initials("alice") == "A"
    assert initials("") == "?"
    mask = render_text("AB", 2)
    assert mask.shape == (14, 22)
    assert mask.any()
    assert render_text("", 1).shape == (7, 0)
    assert (render_text("~") == render_text("?")).all()
