"""colorizer.inference and colorizer.export with tiny models made here: sizes, modes, hints, ensembles, safety."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from colorizer import inference
from colorizer.export import ModelLoadError, load_generator, read_model_info
from colorizer.inference import Colorizer, InputError
from tests.browser import make_tiny_model
from tests.conftest import make_drawing

RES = 64  # processing resolution for most tests: tiny model, tiny tensors, a few ms a call


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return make_tiny_model(root / "a", seed=0), make_tiny_model(root / "b", seed=1)


@pytest.fixture(scope="module")
def model(model_dirs) -> Colorizer:
    return Colorizer.load(model_dirs[0], device="cpu")


def sketch(width: int, height: int, seed: int = 0) -> Image.Image:
    """Black lines on white, `width` x `height`, mode L."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
        draw.line((x0, y0, x1, y1), fill=0, width=max(1, min(width, height) // 40))
    draw.ellipse((width * 0.2, height * 0.2, width * 0.7, height * 0.8), outline=0, width=2)
    return img


def in_mode(img: Image.Image, mode: str) -> Image.Image:
    """The same L sketch in another PIL mode; RGBA: ink opaque, paper fully transparent *black*."""
    if mode == "RGBA":
        ink = np.asarray(img) < 128
        rgba = np.zeros((img.height, img.width, 4), np.uint8)  # transparent pixels are (0, 0, 0, 0)
        rgba[..., 3] = np.where(ink, 255, 0)
        return Image.fromarray(rgba, "RGBA")
    if mode == "I;16":
        return Image.fromarray(np.asarray(img).astype(np.uint16) * 257)  # 16-bit grey, full range
    if mode == "1":
        return img.point(lambda v: 255 if v >= 128 else 0).convert("1")
    return img.convert(mode)


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


# ------------------------------------------------------------------------------------------- sizes and modes


@pytest.mark.parametrize("size", [(101, 67), (640, 480), (37, 300)])
@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "I;16", "1"])
def test_output_has_the_inputs_size_in_every_mode(model, size, mode):
    img = in_mode(sketch(*size), mode)
    assert img.mode == mode
    out = model.colorize(img, resolution=RES)
    assert out.mode == "RGB" and out.size == size


def test_transparency_is_paper_and_modes_agree(model):
    """RGBA with transparent black paper comes out as on white; L, RGB, P, I;16 of one sketch agree."""
    base = sketch(101, 67)
    binary = base.point(lambda v: 255 if v >= 128 else 0)  # ink/paper only, so every mode holds it exactly
    reference = arr(model.colorize(binary, resolution=RES))
    for mode in ("RGB", "P", "I;16", "1", "RGBA"):
        out = arr(model.colorize(in_mode(binary, mode), resolution=RES))
        assert np.abs(out - reference).max() <= 1, mode


# ------------------------------------------------------------------------------------------- hints


def hint_layer(
    size: tuple[int, int], box: tuple[float, float, float, float], color=(224, 49, 49)
) -> Image.Image:
    """RGBA, transparent except a filled box given in fractions of the size."""
    w, h = size
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle((box[0] * w, box[1] * h, box[2] * w, box[3] * h), fill=(*color, 255))
    return layer


def test_hints_change_the_output_and_may_have_another_size(model):
    img = sketch(160, 120)
    plain = arr(model.colorize(img, resolution=RES))
    empty = arr(model.colorize(img, hints=Image.new("RGBA", img.size, (0, 0, 0, 0)), resolution=RES))
    assert np.array_equal(plain, empty)  # a transparent layer is no hint
    hinted = arr(model.colorize(img, hints=hint_layer(img.size, (0.3, 0.3, 0.6, 0.6)), resolution=RES))
    assert np.abs(hinted - plain).mean() > 1.0

    # The same hint painted on a half-size (display) copy: accepted, scaled to the sketch, nearly the same result.
    half = hint_layer((80, 60), (0.3, 0.3, 0.6, 0.6))
    out = model.colorize(img, hints=half, resolution=RES)
    assert out.size == img.size
    scaled = arr(out)
    assert np.abs(scaled - plain).mean() > 1.0
    assert np.abs(scaled - hinted).mean() < np.abs(hinted - plain).mean()

    # And as an array
    assert model.colorize(img, hints=np.asarray(half), resolution=RES).size == img.size
    with pytest.raises(InputError, match="RGBA"):
        model.colorize(img, hints=np.zeros((60, 80, 3), np.uint8), resolution=RES)


# ------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "resolution", [0, 16, inference.MIN_RESOLUTION - 1, inference.MAX_RESOLUTION + 1, 100_000]
)
def test_resolution_out_of_range_is_refused(model, resolution):
    with pytest.raises(InputError, match="resolution"):
        model.colorize(sketch(64, 48), resolution=resolution)
    with pytest.raises(InputError):
        inference.check_resolution(resolution)


def test_valid_resolutions_and_the_default(model):
    inference.check_resolution(None)
    inference.check_resolution(inference.MIN_RESOLUTION)
    inference.check_resolution(inference.MAX_RESOLUTION)
    assert model.colorize(sketch(64, 48), resolution=inference.MIN_RESOLUTION).size == (64, 48)
    assert model.colorize(sketch(64, 48)).size == (64, 48)  # DEFAULT_RESOLUTION


def test_too_small_and_too_large_sketches_are_refused(model):
    for size in [(1, 1), (7, 100), (100, 7)]:
        with pytest.raises(InputError, match="at least 8 px"):
            model.colorize(Image.new("L", size, 255), resolution=RES)
    side = int(inference.MAX_INPUT_PIXELS**0.5) + 1
    big = Image.new("1", (side, side), 1)  # 1 bit a pixel: cheap to make, refused before any conversion
    with pytest.raises(InputError, match="megapixels"):
        model.colorize(big, resolution=RES)
    with pytest.raises(InputError):
        model.colorize(np.zeros((20, 20), np.float32), resolution=RES)


# ------------------------------------------------------------------------------------------- line art


def test_color_illustration_is_turned_into_line_art(model):
    drawing = make_drawing(120, 160, seed=3)  # filled colored shapes with black outlines
    assert inference.is_color_image(drawing)
    assert not inference.is_color_image(np.asarray(sketch(160, 120).convert("RGB")))

    img = Image.fromarray(drawing)
    auto = arr(model.colorize(img, resolution=RES))
    extract = arr(model.colorize(img, resolution=RES, lineart="extract"))
    as_is = arr(model.colorize(img, resolution=RES, lineart="as-is"))
    assert np.array_equal(auto, extract)
    assert np.abs(auto - as_is).mean() > 2.0

    lines = inference.sketch_to_lines(img)  # the fills are gone: mostly paper, some ink
    assert lines.shape == (120, 160) and lines.dtype == np.float32
    assert (lines > 0.9).mean() > 0.6 and (lines < 0.5).mean() > 0.01


def test_keep_lines_keeps_thin_lines_black_at_full_resolution(model):
    img = Image.new("L", (1024, 256), 255)
    ImageDraw.Draw(img).line((500, 0, 500, 255), fill=0, width=1)  # 1 px wide; 1/4 px at 256
    out = np.asarray(model.colorize(img, resolution=256))
    assert out.shape == (256, 1024, 3)
    assert out[:, 500].max() == 0  # the line: black
    assert out[:, 503:].mean() > 20  # the rest: colored, not ink

    loose = np.asarray(model.colorize(img, resolution=256, keep_lines=False))
    assert loose[:, 500].mean() > out[:, 500].mean()


# ------------------------------------------------------------------------------------------- ensembles


def test_ensemble_of_a_model_with_itself_is_the_model(model_dirs, model):
    twice = Colorizer.load([model_dirs[0], model_dirs[0]], device="cpu")
    assert len(twice.generators) == 2
    img = sketch(101, 67)
    hints = hint_layer(img.size, (0.1, 0.1, 0.4, 0.5))
    assert np.array_equal(
        arr(twice.colorize(img, hints, resolution=RES)), arr(model.colorize(img, hints, resolution=RES))
    )


def test_ensemble_is_the_mean_of_its_models(model_dirs):
    a, b = (Colorizer.load(d, device="cpu") for d in model_dirs)
    both = Colorizer.load(list(model_dirs), device="cpu")
    rng = np.random.default_rng(0)
    lines = rng.random((32, 48), dtype=np.float32)
    hint_rgb = rng.random((32, 48, 3), dtype=np.float32)
    mask = (rng.random((32, 48)) < 0.1).astype(np.float32)
    hint_rgb *= mask[..., None]
    for args in [(lines,), (lines, hint_rgb, mask)]:
        ca, cb, cab = a.colorize_lines(*args), b.colorize_lines(*args), both.colorize_lines(*args)
        assert np.abs(ca - cb).mean() > 0.01  # two different models
        np.testing.assert_allclose(cab, (ca + cb) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="multiples"):
        both.colorize_lines(lines[:30])


# ------------------------------------------------------------------------------------------- loading safely


class _Evil:
    """Unpickling this creates `marker`: a stand-in for arbitrary code in a model file from a stranger."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_a_pickle_disguised_as_a_model_is_refused_and_never_run(model_dirs, tmp_path, how):
    disguised = tmp_path / "model"
    disguised.mkdir()
    # A genuine description next to the payload: only the weights file is the trap.
    (disguised / "model.json").write_bytes((model_dirs[0] / "model.json").read_bytes())
    marker = tmp_path / "pwned"
    payload = {"encoder.0.0.weight": _Evil(marker)}
    if how == "pickle":
        (disguised / "model.safetensors").write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, disguised / "model.safetensors")
    # The payload really runs when unpickled -- the loader must not unpickle it.
    pickle.loads(pickle.dumps(_Evil(tmp_path / "control"))).close()
    assert (tmp_path / "control").exists()

    with pytest.raises(ModelLoadError, match="safetensors"):
        Colorizer.load(disguised, device="cpu")
    assert not marker.exists()


def test_unusable_model_folders_give_readable_errors(model_dirs, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        Colorizer.load(tmp_path / "missing")

    no_json = tmp_path / "no-json"
    no_json.mkdir()
    (no_json / "model.safetensors").write_bytes((model_dirs[0] / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match=r"no model\.json") as e:
        Colorizer.load(no_json)
    assert "colorizer export" in str(e.value) and "model.safetensors" in str(e.value)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes(b"")
    (foreign / "model.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelLoadError, match="not a lineart-colorizer model"):
        read_model_info(foreign)
    (foreign / "model.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        Colorizer.load(foreign)

    # Weights of another architecture than model.json describes.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model.safetensors").write_bytes((model_dirs[0] / "model.safetensors").read_bytes())
    info = json.loads((model_dirs[0] / "model.json").read_text())
    info["architecture"]["generator"]["base_width"] = 16
    (wrong / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelLoadError, match="do not match"):
        Colorizer.load(wrong)


def test_export_load_round_trip_gives_identical_outputs(tmp_path, monkeypatch):
    from colorizer import export
    from colorizer.config import GeneratorConfig
    from colorizer.export import save_model
    from colorizer.models.generator import build_generator

    arch = GeneratorConfig(base_width=8, depth=3, max_width=32, norm="batch", upsample="transpose")
    torch.manual_seed(5)
    G = build_generator(arch)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        for m in G.modules():  # batch-norm statistics are state too: make them non-trivial
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    G.eval()
    # No git subprocess: a fixed "commit".
    monkeypatch.setattr(export, "git_info", lambda *a, **k: {"commit": "abc", "dirty": False})
    out = save_model(G.state_dict(), arch, tmp_path / "m", meta={"training": {"step": 7}})
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]  # no temp files left

    G2, info = load_generator(out)
    assert not G2.training
    assert info["code"] == {"commit": "abc", "dirty": False}
    assert info["training"]["step"] == 7 and info["architecture"]["generator"]["norm"] == "batch"
    x = torch.rand(2, 5, 16, 24) * 2 - 1
    with torch.no_grad():
        assert torch.equal(G(x), G2(x))
    for (k1, v1), (k2, v2) in zip(G.state_dict().items(), G2.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


# ------------------------------------------------------------------------------------------- modes, layers, scale


def closed_shapes(width: int = 300, height: int = 200) -> Image.Image:
    """Two closed outlines on white: a circle (left) and a box (right)."""
    img = Image.new("L", (width, height), 255)
    d = ImageDraw.Draw(img)
    d.ellipse((20, 30, 140, 170), outline=0, width=3)
    d.rectangle((170, 40, 280, 160), outline=0, width=3)
    return img


def dot(size: tuple[int, int], xy: tuple[int, int], color: tuple[int, int, int], r: int = 4) -> Image.Image:
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).ellipse((xy[0] - r, xy[1] - r, xy[0] + r, xy[1] + r), fill=(*color, 255))
    return layer


def test_flat_mode_fills_each_region_with_its_hint_exactly_and_keeps_the_paper(model):
    from colorizer.evaluate import delta_e76

    img = closed_shapes()
    brown = (141, 85, 36)  # the hint that came out bright red from the network alone
    out = np.asarray(model.colorize(img, hints=dot(img.size, (80, 100), brown)))
    inside = out[60:140, 50:110].reshape(-1, 3)
    assert delta_e76(inside[None].astype(np.uint8), np.full_like(inside[None], brown, np.uint8)) < 1.0
    assert (out[5:25, :] == 255).all() and (out[:, 290:] == 255).all()  # the paper: white
    box = out[70:130, 200:250].reshape(-1, 3)
    assert len(np.unique(box, axis=0)) == 1  # no hint: one color (the network's) for the whole box


def test_soft_mode_is_the_networks_colors_and_modes_are_checked(model):
    img = closed_shapes()
    flat = arr(model.colorize(img, mode="flat"))
    soft = arr(model.colorize(img, mode="soft"))
    assert soft.shape == flat.shape and not np.array_equal(soft, flat)
    assert len(np.unique(soft[5:25].reshape(-1, 3), axis=0)) > 1  # the network paints the paper too
    with pytest.raises(InputError, match="mode must be one of"):
        model.colorize(img, mode="watercolor")
    with pytest.raises(InputError, match="#rrggbb"):
        model.colorize(img, background="blue-ish")
    tinted = np.asarray(model.colorize(img, background="#ffe0c0"))
    assert tinted[10, 10].tolist() == [255, 224, 192]


@pytest.mark.parametrize("mode", ["flat", "soft"])
def test_layers_have_the_sketchs_size_and_compose_to_the_result(model, mode):
    img = closed_shapes(301, 203)
    layers = model.colorize_layers(img, hints=dot(img.size, (80, 100), (47, 158, 68)), mode=mode)
    assert layers.composite.size == layers.colors.size == layers.lines.size == img.size
    assert layers.lines.mode == "RGBA" and layers.colors.mode == "RGB"
    lines = np.asarray(layers.lines)
    assert (lines[..., :3] == 0).all()  # black ink...
    ink = np.asarray(img) < 128
    assert (lines[..., 3][ink] > 128).all() and (
        lines[..., 3][~ink] < 128
    ).mean() > 0.99  # ...on transparency
    # the colors under the lines, composited with the lines layer, give the composite
    redone = Image.alpha_composite(layers.colors.convert("RGBA"), layers.lines).convert("RGB")
    assert np.abs(arr(redone) - arr(layers.composite)).max() <= 2


def test_the_network_sees_the_scale_it_was_trained_at(model_dirs, tmp_path):
    """model.json's scale sets the processing size (not a fixed 512) and the target stroke width."""
    info = json.loads((model_dirs[0] / "model.json").read_text())
    m = Colorizer.load(model_dirs[0], device="cpu", tta=False)
    img = closed_shapes(600, 400)
    assert m.colorize_layers(img).network_hw == (
        round(400 * m.scale.side_px / 600),
        m.scale.side_px,
    )
    folder = tmp_path / "scaled"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((model_dirs[0] / "model.safetensors").read_bytes())
    info["scale"] = {"side_px": 128, "line_width_px": 1.0}
    (folder / "model.json").write_text(json.dumps(info))
    m128 = Colorizer.load(folder, device="cpu", tta=False)
    assert m128.scale.side_px == 128 and m128.colorize_layers(img).network_hw == (85, 128)
    assert m128.colorize_layers(img, resolution=256).network_hw == (171, 256)


def test_by_default_the_views_span_the_training_scales_and_their_mirror_images(model_dirs, tmp_path):
    """Training crops showed a drawing with its longer side between crop/sqrt(1.0) and crop/sqrt(0.6) and
    mirrored it: by default inference averages those four views; tta=False and `resolution` narrow them."""
    info = json.loads((model_dirs[0] / "model.json").read_text())
    info["scale"] = {"crop_hw": [128, 128], "crop_scale": [0.6, 1.0], "side_px": 143.1, "line_width_px": 1.0}
    folder = tmp_path / "ranged"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((model_dirs[0] / "model.safetensors").read_bytes())
    (folder / "model.json").write_text(json.dumps(info))
    m = Colorizer.load(folder, device="cpu")
    assert m.scale.sides_px == (128, 165)
    img = closed_shapes(600, 400)
    layers = m.colorize_layers(img, mode="soft")
    assert layers.views == 4 and layers.network_hw == (110, 165)  # the largest view's size
    one = Colorizer.load(folder, device="cpu", tta=False).colorize_layers(img, mode="soft")
    side = m.scale.side_px  # the middle of the range, rounded to the network's multiple
    assert one.views == 1 and one.network_hw == (round(400 * side / 600), side)
    assert np.abs(arr(layers.composite).astype(int) - arr(one.composite)).mean() > 0.5  # it changes colors
    assert m.colorize_layers(img, resolution=96).views == 2  # one scale, still mirrored
    info["scale"] = {"side_px": 128, "line_width_px": 1.0}  # a model that did not record its crops
    assert inference.ModelScale.from_info(info, 64).sides_px == (128,)


def test_mirrored_views_make_the_colors_of_a_mirrored_sketch_the_mirrored_colors(model):
    """Averaging a view with its mirror image: a drawing flipped left-right gets its colors flipped, exactly
    (a network alone does not promise this), and the average is the mean of the two passes."""
    rng = np.random.default_rng(0)
    lines = rng.random((32, 64), dtype=np.float32)
    flip = lambda x: np.ascontiguousarray(x[:, ::-1])  # noqa: E731
    plain, plain_flipped = model.colorize_lines(lines), model.colorize_lines(flip(lines))
    assert np.abs(plain - flip(plain_flipped)).mean() > 0.01  # the network alone is not symmetric
    both = model.colorize_lines(lines, mirror=True)
    np.testing.assert_allclose(both, (plain + flip(plain_flipped)) / 2, atol=1e-5)
    np.testing.assert_allclose(model.colorize_lines(flip(lines), mirror=True), flip(both), atol=1e-5)


def test_thick_strokes_are_thinned_toward_the_trained_width():
    from colorizer.lineart import stroke_width_px

    lines = np.ones((80, 120), np.float32)
    lines[30:37, 10:110] = 0.0  # a 7 px stroke
    assert stroke_width_px(lines) == pytest.approx(7, abs=0.6)
    thin = inference.thin_strokes(lines, 1.0)
    assert stroke_width_px(thin) == pytest.approx(1, abs=0.6)
    fine = np.ones((80, 120), np.float32)
    fine[40, 10:110] = 0.0
    assert np.array_equal(inference.thin_strokes(fine, 1.0), fine)  # already thin: untouched


def test_bright_saturated_drawings_are_color_images():
    """A yellow padlock on white has no pixel darker than V=245 but is a color illustration."""
    img = np.full((100, 100, 3), 255, np.uint8)
    img[20:80, 25:75] = (255, 230, 0)
    assert inference.is_color_image(img)
    grey = np.full((100, 100, 3), 255, np.uint8)
    grey[20:80, 48:52] = 90
    assert not inference.is_color_image(grey)
