import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer.config import load_config
from colorizer.data import (
    ColorizationDataset,
    EpochSampler,
    ImageLoadError,
    augment,
    denormalize,
    load_rgb,
    make_loader,
    read_manifest,
)
from tests.conftest import make_drawing, write_png


def tiny_cfg(source, *extra):
    return load_config(None, [f"data.source={source}", "data.height_px=96", "data.width_px=160", *extra])


# ---------------------------------------------------------------- loading odd files


def test_rgba_transparent_is_composited_on_white(tmp_path):
    rgba = np.zeros((40, 60, 4), np.uint8)  # fully transparent ...
    rgba[10:20, 10:20] = (0, 0, 0, 255)  # ... but a black opaque square
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = load_rgb(tmp_path / "a.png")
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 255).all()  # transparent -> white paper, not black
    assert (rgb[15, 15] == 0).all()


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (30, 20), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (5, 5, 15, 15))
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    rgb = load_rgb(tmp_path / "p.png")
    assert (rgb[0, 0] == 255).all()
    assert tuple(rgb[10, 10]) == (255, 0, 0)


@pytest.mark.parametrize(
    "mode, suffix",
    [
        ("L", ".png"),
        ("LA", ".png"),
        ("CMYK", ".jpg"),
        ("I;16", ".png"),
        ("1", ".png"),
        ("RGB", ".webp"),
        ("P", ".gif"),
    ],
)
def test_modes_are_converted_to_rgb(tmp_path, mode, suffix):
    src = Image.fromarray(make_drawing(48, 32))
    if mode == "I;16":
        grey = np.asarray(src.convert("L"), np.uint16) * 257
        img = Image.fromarray(grey)
    else:
        img = src.convert(mode)
    path = tmp_path / f"x{suffix}"
    img.save(path)
    rgb = load_rgb(path)
    assert rgb.shape == (48, 32, 3) and rgb.dtype == np.uint8
    # the drawing's white paper stays (near) white in every mode, 16-bit included
    assert rgb[0, 0].min() > 200 or rgb.mean() > 100


def test_sixteen_bit_scaled_not_clipped(tmp_path):
    grey = np.full((16, 16), 32768, np.uint16)  # mid grey in 16 bits
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert abs(int(load_rgb(tmp_path / "g.png")[0, 0, 0]) - 128) <= 1


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    rgb = load_rgb(tmp_path / "anim.gif")
    assert rgb.shape == (10, 20, 3) and rgb[5, 5, 0] > 200 and rgb[5, 5, 1] < 50


def test_large_images_are_reduced_on_load(tmp_path):
    write_png(tmp_path / "big.png", make_drawing(400, 1000))
    rgb = load_rgb(tmp_path / "big.png", max_side_px=250)
    assert rgb.shape == (100, 250, 3)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "not an image"),
        (b"<html><body>429 Too Many Requests</body></html>", "not an image"),
        ("truncated", "truncated"),
    ],
)
def test_broken_files_raise_a_clear_error(tmp_path, content, reason):
    path = tmp_path / "broken.jpg"
    if content == "truncated":
        Image.fromarray(make_drawing(200, 200)).save(path, quality=90)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ImageLoadError, match="broken.jpg") as e:
        load_rgb(path)
    assert reason in str(e.value)


def test_one_pixel_and_missing_files(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(ImageLoadError, match="too small"):
        load_rgb(tmp_path / "dot.png")
    with pytest.raises(ImageLoadError, match="not found"):
        load_rgb(tmp_path / "nope.png")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    write_png(tmp_path / "bomb.png", make_drawing(100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the same guard, scaled down
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_rgb(tmp_path / "bomb.png")


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize("h, w", [(96, 160), (160, 96)])
def test_augment_output_size_non_square(h, w):
    cfg = load_config(None, [f"data.height_px={h}", f"data.width_px={w}", "data.rotate_deg=10"])
    for seed, (sh, sw) in enumerate([(200, 120), (120, 200), (512, 512), (60, 50)]):
        out = augment(make_drawing(sh, sw, seed), np.random.default_rng(seed), cfg.data)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8


def test_augment_without_randomness_is_a_plain_resize():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 100:] = 255  # left black, right white
    cfg = load_config(
        None,
        [
            "data.height_px=50",
            "data.width_px=100",
            "data.crop_scale=[1,1]",
            "data.crop_ratio=[2,2]",
            "data.hflip=false",
            "data.rotate_deg=0",
        ],
    )
    out = augment(img, np.random.default_rng(0), cfg.data)
    # orientation kept: black on the left, white on the right (an H/W swap or flip would break this)
    assert out[:, :45].max() == 0 and out[:, 55:].min() == 255


def test_rotation_fills_borders_white():
    img = np.zeros((100, 100, 3), np.uint8)
    cfg = load_config(
        None,
        [
            "data.height_px=64",
            "data.width_px=64",
            "data.crop_scale=[1,1]",
            "data.crop_ratio=[1,1]",
            "data.rotate_deg=30",
        ],
    )
    outs = [augment(img, np.random.default_rng(s), cfg.data) for s in range(10)]
    assert any((o[0, 0] == 255).all() for o in outs)  # a rotated corner shows white paper, not black


# ---------------------------------------------------------------- dataset


@pytest.mark.parametrize("h, w", [(96, 160), (160, 96)])
def test_sample_shapes_and_ranges(drawings_dir, h, w):
    ds = ColorizationDataset(
        load_config(None, [f"data.source={drawings_dir}", f"data.height_px={h}", f"data.width_px={w}"])
    )
    assert len(ds) == 6
    for i in range(len(ds)):
        s = ds[i]
        assert s["line"].shape == (1, h, w) and s["hints"].shape == (3, h, w)
        assert s["mask"].shape == (1, h, w) and s["color"].shape == (3, h, w)
        for k in ("line", "hints", "color"):
            assert s[k].dtype == torch.float32
            assert s[k].min() >= -1 and s[k].max() <= 1
        assert s["mask"].min() >= 0 and s["mask"].max() <= 1
        assert (s["hints"][:, s["mask"][0] == 0] == 0).all()  # no color where no hint
    # the target de-normalizes back to the image's pixels
    back = (denormalize(ds[0]["color"]) * 255).round()
    assert back.min() >= 0 and back.max() <= 255


def test_same_seed_same_sample_other_epoch_other_sample(drawings_dir):
    cfg = tiny_cfg(drawings_dir)
    a, b = ColorizationDataset(cfg), ColorizationDataset(cfg)
    for k in ("line", "hints", "mask", "color"):
        assert torch.equal(a[(0, 2)][k], b[(0, 2)][k])
    assert not torch.equal(a[(0, 2)]["color"], a[(1, 2)]["color"])
    other = ColorizationDataset(tiny_cfg(drawings_dir, "seed=1"))
    assert not torch.equal(a[(0, 2)]["color"], other[(0, 2)]["color"])


def test_batches_do_not_depend_on_worker_count(drawings_dir):
    cfg = tiny_cfg(drawings_dir)
    ds = ColorizationDataset(cfg)

    def batches(workers):
        loader = make_loader(ds, batch_size=4, workers=workers, seed=3, epochs=2)
        return list(loader)

    one, two = batches(0), batches(2)
    assert len(one) == len(two) == 3  # 12 samples over 2 epochs
    for x, y in zip(one, two, strict=True):
        for k in ("line", "hints", "mask", "color", "index"):
            assert torch.equal(x[k], y[k])


def test_sampler_resume_equals_straight_run():
    straight = list(EpochSampler(7, seed=1, epochs=3))
    assert len(straight) == 21
    # each epoch is a permutation, and epochs differ
    assert sorted(i for e, i in straight[:7]) == list(range(7))
    assert [i for _, i in straight[:7]] != [i for _, i in straight[7:14]]
    for start in (0, 5, 7, 10, 20):
        assert list(EpochSampler(7, seed=1, epochs=3, start=start)) == straight[start:]


def test_unreadable_files_are_skipped_and_counted(drawings_dir, caplog):
    (drawings_dir / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (drawings_dir / "zz_html.jpg").write_text("<html>error</html>")
    ds = ColorizationDataset(tiny_cfg(drawings_dir))
    assert len(ds) == 8
    samples = [ds[(0, i)] for i in range(len(ds))]  # never raises
    assert sum(s["skipped"] for s in samples) >= 2
    assert "zz_broken.png" in caplog.text and "zz_html.jpg" in caplog.text
    # a stand-in is a real sample, not a copy of a neighbour's
    assert not torch.equal(samples[6]["color"], samples[0]["color"])


def test_all_files_broken_is_a_clear_error(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"nope")
    ds = ColorizationDataset(tiny_cfg(tmp_path))
    with pytest.raises(RuntimeError, match="could not be read"):
        ds[0]


def test_manifest_split_and_relative_paths(tmp_path):
    root = tmp_path / "curated"
    recs = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        write_png(root / "tag" / f"{i}.png", make_drawing(64, 80, i))
        recs.append(
            {
                "path": f"tag/{i}.png",
                "id": i,
                "md5": "x",
                "tags": [],
                "width": 80,
                "height": 64,
                "split": split,
            }
        )
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    assert [Path(it.path).name for it in read_manifest(root / "manifest.jsonl", "train")] == [
        "0.png",
        "1.png",
    ]
    cfg = tiny_cfg(root / "manifest.jsonl")
    assert len(ColorizationDataset(cfg)) == 2
    assert len(ColorizationDataset(cfg, split="val")) == 1
    with pytest.raises(ValueError, match="split='nope'"):
        ColorizationDataset(cfg, split="nope")


def test_bad_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="neither a manifest"):
        ColorizationDataset(tiny_cfg(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        ColorizationDataset(tiny_cfg(tmp_path / "empty"))
