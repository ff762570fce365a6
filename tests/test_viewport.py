"""The triage screen's arithmetic: zoom ladder, pans, stated magnification and scale bars, shortened
names, the graphics choice, and reads at a chosen pyramid level (no Textual app)."""

from __future__ import annotations

import numpy as np
import pytest

from wsireview.slides.reader import SlideFile, level0_mpp
from wsireview.tui.graphics import choose, in_multiplexer
from wsireview.tui.text import middle_ellipsis
from wsireview.tui.viewport import (
    CONTEXT_FACTOR,
    Viewport,
    home_view,
    neighbours,
    nice_length,
    pan,
    view_scale,
    zoom,
    zoom_ladder,
)


def test_ladder_runs_from_context_to_full_resolution():
    home = home_view(1000, 2000, 224, (86, 62))
    assert (home.cx, home.cy) == (1112, 2112)
    assert home.downsample == pytest.approx(224 / (0.9 * 62))
    ladder = zoom_ladder(home.downsample)
    assert ladder[0] == 1 and ladder[-1] == pytest.approx(home.downsample * CONTEXT_FACTOR)
    assert home.downsample in ladder and 2.0 in ladder and 16.0 in ladder
    assert 4.0 not in ladder  # within 15% of home (4.01): a step that would change nothing visible
    view = home
    for _ in range(10):
        view = zoom(view, home.downsample, 1)
    assert view.downsample == 1  # stops at level 0
    for _ in range(20):
        view = zoom(view, home.downsample, -1)
    assert view.downsample == ladder[-1]  # stops at the context view
    # a box with more pixels than the patch (Kitty): home is already beyond level 0, nothing finer
    big = home_view(0, 0, 224, (860, 620))
    assert zoom(big, big.downsample, 1) == big


def test_field_and_pan_stay_on_the_slide():
    view = Viewport(100, 50, 2.0)
    assert view.field((80, 40)) == (20, 10, 160, 80)
    right = pan(view, 1, 0, (80, 40), (10_000, 10_000))
    assert (right.cx, right.cy) == (140, 50)  # a quarter of the 160 px field
    assert pan(view, -1, -1, (80, 40), (10_000, 10_000)) == Viewport(60, 30, 2.0)
    assert pan(Viewport(5, 5, 2.0), -1, -1, (80, 40), (10_000, 10_000)) == Viewport(0, 0, 2.0)
    assert len(neighbours(Viewport(5000, 5000, 2.0), 4.0, (80, 40), (10_000, 10_000))) == 6


def test_magnification_field_position_and_scale_bar_in_microns():
    scale = view_scale(Viewport(0, 0, 1.0), 0.25, "mpp")
    assert scale.magnification_text == "40x, 0.25 µm/px full res"
    scale = view_scale(Viewport(0, 0, 4.0), 0.25, "mpp")
    assert scale.magnification_text == "10x, 1.00 µm/px"
    assert scale.field_text(400, 200) == "100 x 50 µm"
    assert scale.position_text(4000, 8000) == "1000, 2000 µm"
    assert scale.position_text(80_000, 40_000) == "20.00, 10.00 mm"
    assert scale.length_text(448) == "112 µm"
    cells, label = scale.scale_bar(1.0, 30)  # 1 µm per cell: the longest 1-2-5 length within 30 cells
    assert (cells, label) == (20, "20 µm")
    assert view_scale(Viewport(0, 0, 3.4), 0.5, "objective-power").magnification_text == "5.9x, 1.70 µm/px (from objective)"
    assert [nice_length(v) for v in (0.7, 9.9, 10, 49, 120, 4999)] == [0.5, 5, 10, 20, 100, 2000]


def test_slides_without_a_resolution_say_pixels():
    assert level0_mpp(None, None) == (None, "level0-pixels")
    assert level0_mpp(352.8, None) == (None, "level0-pixels")  # a 72 dpi default, not a microscope
    assert level0_mpp(None, 40) == (0.25, "objective-power")
    scale = view_scale(Viewport(0, 0, 2.0), None, "level0-pixels")
    assert "px" in scale.magnification_text and "no mpp" in scale.magnification_text and "µm" not in scale.magnification_text
    assert scale.field_text(300, 200) == "300 x 200 px"
    assert scale.scale_bar(1.0, 30) == (25, "50 px")  # 2 level-0 px per cell


def test_middle_ellipsis_keeps_both_ends():
    names = ["cmu-1-small-region-a.svs", "cmu-1-small-region-b.svs"]
    short = [middle_ellipsis(n, 14) for n in names]
    assert short == ["cmu-1-s…-a.svs", "cmu-1-s…-b.svs"] and len(short[0]) == 14
    assert middle_ellipsis("short.svs", 14) == "short.svs"
    assert middle_ellipsis("abc", 1) == "…" and middle_ellipsis("abc", 0) == ""


def test_graphics_auto_asks_only_a_terminal_outside_tmux():
    assert choose(is_tty=True, multiplexed=False, terminal_answer="kitty") == "kitty"
    assert choose(is_tty=True, multiplexed=False, terminal_answer="sixel") == "sixel"
    assert choose(is_tty=True, multiplexed=False, terminal_answer=None) == "halfblock"
    assert choose(is_tty=True, multiplexed=True, terminal_answer="kitty") == "halfblock"
    assert choose(is_tty=False, multiplexed=False, terminal_answer="kitty") == "halfblock"
    assert in_multiplexer({"TMUX": "/tmp/tmux-0/default,1,0", "TERM": "xterm"})
    assert in_multiplexer({"TERM": "screen-256color"})
    assert not in_multiplexer({"TERM": "xterm-kitty"})


def test_read_field_reads_the_best_pyramid_level(demo_cohort):
    """A field 4x coarser than level 0 comes from level 1 (4x smaller), pixel for pixel."""
    with SlideFile(demo_cohort / "demo-000.tiff") as slide:
        assert slide.level_downsamples[1] == pytest.approx(4)
        field = np.asarray(slide.read_field(800, 400, 640, 320, 160, 80))
        level1 = np.asarray(slide._osr.read_region((800, 400), 1, (160, 80)).convert("RGB"))
        assert field.shape == (80, 160, 3)
        assert np.array_equal(field, level1)
        assert slide.level0_mpp == pytest.approx(0.5) and slide.mpp_source == "mpp"
