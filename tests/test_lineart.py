import numpy as np
import pytest

from colorizer.config import LineartConfig
from colorizer.lineart import binarize, dilate_difference, random_lineart, xdog
from tests.conftest import make_drawing

SHAPES = [(96, 160), (160, 96)]


def black_square_outline(h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    img[h // 4 : h // 4 + 2, w // 4 : 3 * w // 4] = 0  # a 2-px black line, horizontal
    img[h // 4 : 3 * h // 4, w // 4 : w // 4 + 2] = 0  # and vertical
    return img


@pytest.mark.parametrize("h, w", SHAPES)
@pytest.mark.parametrize(
    "extract",
    [lambda im: xdog(im), lambda im: xdog(im, binarize_otsu=True, phi=20), lambda im: dilate_difference(im)],
)
def test_shape_range_and_white_paper(h, w, extract):
    img = black_square_outline(h, w)
    lines = extract(img)
    assert lines.shape == (h, w)
    assert lines.dtype == np.float32
    assert lines.min() >= 0.0 and lines.max() <= 1.0
    # the ink is where the drawn line is ...
    assert lines[h // 4 : h // 4 + 2, w // 2].mean() < 0.5
    # ... and the paper far from any line stays white
    assert lines[-5:, -5:].min() > 0.95


@pytest.mark.parametrize("h, w", SHAPES)
def test_blank_page_gives_blank_lines(h, w):
    blank = np.full((h, w, 3), 255, np.uint8)
    for lines in (xdog(blank), dilate_difference(blank), binarize(xdog(blank))):
        assert lines.min() == 1.0


def test_xdog_outlines_color_regions():
    # two flat colors of different lightness and no outline: XDoG must still find the boundary
    img = np.full((64, 96, 3), 230, np.uint8)
    img[:, 48:] = (40, 40, 120)
    lines = xdog(img, sigma=0.5)
    assert lines[:, 44:52].min() < 0.5
    assert lines[:, :30].min() == 1.0


def test_dark_areas_become_solid_ink_as_inkers_fill_them():
    # a black-haired figure: XDoG alone leaves the dark area white (an empty region, like a light one), so a
    # model trained on it learns that empty regions may be near-black; real line art fills them with ink
    img = np.full((64, 96, 3), 240, np.uint8)
    img[16:48, 10:40] = (20, 20, 30)  # dark fill
    img[16:48, 56:86] = (250, 200, 170)  # light fill (skin)
    assert xdog(img, sigma=0.5)[24:40, 18:32].min() == 1.0
    filled = random_lineart(img, np.random.default_rng(0), LineartConfig(dark_fill_prob=1.0))
    assert filled[24:40, 18:32].max() < 0.5  # inside the dark area: ink
    assert filled[24:40, 64:78].min() > 0.9  # inside the light area: paper
    unfilled = random_lineart(img, np.random.default_rng(0), LineartConfig(dark_fill_prob=0.0))
    assert unfilled[24:40, 18:32].min() > 0.5


def test_binarize_gives_two_levels():
    soft = xdog(make_drawing(96, 160), phi=10.0)
    assert len(np.unique(soft)) > 2
    assert set(np.unique(binarize(soft))) <= {0.0, 1.0}


@pytest.mark.parametrize("h, w", SHAPES)
def test_random_mix_deterministic_and_varied(h, w):
    img = make_drawing(h, w, seed=3)
    cfg = LineartConfig()
    a = random_lineart(img, np.random.default_rng(5), cfg)
    b = random_lineart(img, np.random.default_rng(5), cfg)
    assert a.shape == (h, w) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    outs = [random_lineart(img, np.random.default_rng(s), cfg) for s in range(40)]
    # the mix really varies: binary and soft results, light and dark ink
    assert any(len(np.unique(o)) <= 2 for o in outs)
    assert any(len(np.unique(o)) > 50 for o in outs)
    darkest = [float(o.min()) for o in outs]
    assert max(darkest) - min(darkest) > 0.2


def test_random_mix_uses_both_extractors(monkeypatch):
    import colorizer.lineart as la

    used = []
    monkeypatch.setattr(la, "xdog", lambda im, **kw: used.append("xdog") or np.ones(im.shape[:2], np.float32))
    monkeypatch.setattr(
        la, "dilate_difference", lambda im, **kw: used.append("dilate") or np.ones(im.shape[:2], np.float32)
    )
    img = make_drawing(32, 48)
    for s in range(200):
        la.random_lineart(img, np.random.default_rng(s), LineartConfig(xdog_weight=0.7, dilate_weight=0.3))
    share = used.count("xdog") / len(used)
    assert 0.6 < share < 0.8
    used.clear()
    for s in range(20):
        la.random_lineart(img, np.random.default_rng(s), LineartConfig(xdog_weight=0.0, dilate_weight=1.0))
    assert set(used) == {"dilate"}


def test_zero_weights_is_a_clear_error():
    with pytest.raises(ValueError, match="xdog_weight"):
        random_lineart(
            make_drawing(32, 48), np.random.default_rng(0), LineartConfig(xdog_weight=0, dilate_weight=0)
        )
