import numpy as np
import pytest

from colorizer.config import HintsConfig
from colorizer.hints import hints_from_strokes, simulate_hints
from tests.conftest import make_drawing


def has_hints(mask: np.ndarray) -> bool:
    return bool(mask.max() > 0)


@pytest.mark.parametrize("p", [0.5, 0.2, 0.9])
def test_no_hint_share_holds(p):
    img = make_drawing(32, 48)
    cfg = HintsConfig(no_hint_prob=p)
    n = 3000
    empty = sum(not has_hints(simulate_hints(img, np.random.default_rng(s), cfg)[1]) for s in range(n))
    # binomial std at n=3000 is <= 0.009: 0.03 is more than 3 sigma
    assert abs(empty / n - p) < 0.03


@pytest.mark.parametrize("h, w", [(96, 160), (160, 96)])
def test_shapes_ranges_premultiplied(h, w):
    img = make_drawing(h, w, seed=1)
    cfg = HintsConfig(no_hint_prob=0.0)
    for s in range(30):
        rgb, mask = simulate_hints(img, np.random.default_rng(s), cfg)
        assert rgb.shape == (h, w, 3) and mask.shape == (h, w)
        assert rgb.dtype == np.float32 and mask.dtype == np.float32
        assert mask.min() >= 0 and mask.max() <= 1
        assert rgb.min() >= 0
        # premultiplied: a color channel never exceeds the coverage
        assert (rgb <= mask[..., None] + 1e-5).all()
        assert has_hints(mask)
        assert (rgb[mask == 0] == 0).all()


def test_hints_carry_the_local_color():
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, :48] = (200, 40, 40)  # red left half
    img[:, 48:] = (30, 60, 210)  # blue right half
    cfg = HintsConfig(
        no_hint_prob=0.0,
        color_noise_std=0.0,
        quantize_step=0.0,
        soften_sigma_px=(0.0, 0.0),
        position_jitter_px=0,
        stroke_prob=0.0,
        drop_range=(0.0, 0.0),
    )
    rgb, mask = simulate_hints(img, np.random.default_rng(0), cfg)
    solid = mask > 0.99
    colors = rgb[solid] / mask[solid][:, None] * 255
    assert len(colors) > 0
    # each fully covered pixel has one of the two region colors (dots near the border may mix)
    d_red = np.abs(colors - [200, 40, 40]).max(axis=1)
    d_blue = np.abs(colors - [30, 60, 210]).max(axis=1)
    assert (np.minimum(d_red, d_blue) < 2).mean() > 0.9


def test_corruption_makes_colors_differ_from_target():
    img = np.full((64, 64, 3), (120, 120, 120), np.uint8)
    cfg = HintsConfig(no_hint_prob=0.0, color_noise_std=20.0, quantize_step=0.0, soften_sigma_px=(0.0, 0.0))
    errs = []
    for s in range(20):
        rgb, mask = simulate_hints(img, np.random.default_rng(s), cfg)
        solid = mask > 0.99
        errs.append(np.abs(rgb[solid] / mask[solid][:, None] * 255 - 120).mean())
    assert np.mean(errs) > 5  # the noise is there: the model must not learn to copy exact pixels


def test_dropping_reduces_hint_count():
    img = make_drawing(128, 128)
    base = dict(
        no_hint_prob=0.0, soften_sigma_px=(0.0, 0.0), count_dist="uniform", count_min=40, count_max=40
    )
    few = [
        simulate_hints(img, np.random.default_rng(s), HintsConfig(**base, drop_range=(0.9, 0.9)))[1]
        for s in range(10)
    ]
    many = [
        simulate_hints(img, np.random.default_rng(s), HintsConfig(**base, drop_range=(0.0, 0.0)))[1]
        for s in range(10)
    ]
    assert np.mean([m.sum() for m in few]) < 0.3 * np.mean([m.sum() for m in many])


def test_softening_spreads_the_mask():
    img = make_drawing(64, 64)
    base = dict(no_hint_prob=0.0, count_dist="uniform", count_min=5, count_max=5, drop_range=(0.0, 0.0))
    sharp = simulate_hints(img, np.random.default_rng(1), HintsConfig(**base, soften_sigma_px=(0.0, 0.0)))[1]
    soft = simulate_hints(img, np.random.default_rng(1), HintsConfig(**base, soften_sigma_px=(2.0, 2.0)))[1]
    assert (soft > 0).sum() > (sharp > 0).sum()
    assert soft.max() < 1.0 or (soft > 0).sum() > 1.5 * (sharp > 0).sum()


def test_same_seed_same_hints():
    img = make_drawing(48, 32)
    a = simulate_hints(img, np.random.default_rng(9), HintsConfig())
    b = simulate_hints(img, np.random.default_rng(9), HintsConfig())
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def painted_layer(h: int, w: int) -> np.ndarray:
    layer = np.zeros((h, w, 4), np.uint8)
    layer[20:40, 30:60] = (255, 0, 0, 255)  # an opaque red stroke
    layer[60:70, 10:20] = (0, 0, 255, 128)  # a half-transparent blue one
    return layer


def test_hints_from_strokes_representation():
    rgb, mask = hints_from_strokes(painted_layer(96, 160), soften_sigma_px=0.0)
    assert rgb.shape == (96, 160, 3) and mask.shape == (96, 160)
    assert mask[30, 45] == pytest.approx(1.0)
    np.testing.assert_allclose(rgb[30, 45], [1, 0, 0], atol=1e-6)
    assert mask[65, 15] == pytest.approx(128 / 255, abs=1e-6)
    np.testing.assert_allclose(rgb[65, 15] / mask[65, 15], [0, 0, 1], atol=1e-6)
    assert mask[0, 0] == 0 and (rgb[0, 0] == 0).all()


def test_hints_from_strokes_resize_and_soften():
    layer = painted_layer(96, 160)
    rgb, mask = hints_from_strokes(layer, size_hw=(48, 80))
    assert rgb.shape == (48, 80, 3) and mask.shape == (48, 80)
    # the color survives the area resize and the default softening
    center = mask > 0.9
    assert center.any()
    np.testing.assert_allclose((rgb[center] / mask[center][:, None]).mean(0), [1, 0, 0], atol=0.02)
    # softened: coverage beyond the painted rectangle's resized bounds
    assert mask[9, 20] > 0 or mask[10, 14] > 0


def test_hints_from_strokes_rejects_rgb():
    with pytest.raises(ValueError, match="RGBA"):
        hints_from_strokes(np.zeros((10, 10, 3), np.uint8))
