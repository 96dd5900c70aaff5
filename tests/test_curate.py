"""`crawler filter`: rules, duplicates, splits, caching and the manifest the trainer reads.

Every picture is drawn here; the crawl layout is the one `crawler crawl` writes (tag folders,
`<id>.json` sidecars, `.query` files, a hard link / symlink / bare sidecar for a post found twice).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crawler.curation import STAGES, ConfigError, assign_split, curate, load_curate_config
from crawler.curation.cli import add_filter_parser, main, run_filter
from crawler.curation.measure import AnalysisParams, analyze_image
from crawler.curation.phash import HammingIndex, brute_force_pairs, near_duplicate_pairs, phash, popcount64

# --------------------------------------------------------------------------------------------------
# Pictures


def colorful(h: int, w: int, seed: int) -> np.ndarray:
    """A busy, saturated drawing `(h, w, 3) uint8`: filled shapes with dark outlines on a tinted paper."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(200, 256, 3)
    for _ in range(int(rng.integers(10, 20))):
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(120, 256)]]])
        color = tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(w // 12, w // 3)), int(rng.integers(h // 12, h // 3)))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(img, center, axes, angle, 0, 360, color, -1)
        cv2.ellipse(img, center, axes, angle, 0, 360, (20, 20, 20), 2)
    return img


def grey(rgb: np.ndarray) -> np.ndarray:
    y = (rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])).round().astype(np.uint8)
    return np.repeat(y[..., None], 3, axis=2)


def desaturate(rgb: np.ndarray, keep: float) -> np.ndarray:
    """Blend toward grey, keeping `keep` of the colour."""
    return (grey(rgb) * (1 - keep) + rgb * keep).round().astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg_again(data: bytes, quality: int = 80) -> bytes:
    return encode(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), "JPEG", quality=quality)


def resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    img = Image.fromarray(rgb)
    return np.asarray(img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS))


def corner_crop(rgb: np.ndarray, share: float = 0.05) -> np.ndarray:
    h, w = rgb.shape[:2]
    return rgb[round(h * share) :, round(w * share) :]


class Crawl:
    """Writes a crawl the way `crawler crawl` lays it out."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def folder(self, name: str, query: str | None = None) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        if query is not None:
            (d / ".query").write_text(query + "\n")
        return d

    def post(self, rel: str, data: bytes | None, tags=("1girl", "solo"), *, md5: str | None = None) -> Path:
        """An image file (when `data`) plus its sidecar `<id>.json`."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
            md5 = hashlib.md5(data).hexdigest()
        sidecar = {
            "id": int(path.stem),
            "md5": md5,
            "tags": list(tags),
            "rating": "general",
            "width": 0,
            "height": 0,
            "file_url": f"https://safebooru.org/images/1/{md5}{path.suffix}",
            "source": "",
            "score": None,
            "query": path.parent.name,
        }
        path.with_suffix(".json").write_text(json.dumps(sidecar))
        return path


def small_cfg(*extra: str):
    return load_curate_config(None, ["pixels.min_short_side_px=64", "workers=1", *extra])


def reasons(result) -> dict[str, str]:
    return {r["src_path"]: r["reason"] for r in result.rejected}


# --------------------------------------------------------------------------------------------------
# The crawl with one file for each way of being left out


@pytest.fixture
def crawl(tmp_path: Path) -> Crawl:
    c = Crawl(tmp_path / "raw")
    c.folder("1girl_solo", "1girl solo")
    c.folder("blue_hair_solo", "blue_hair solo")
    big = colorful(240, 200, seed=1)
    other = colorful(220, 180, seed=2)
    page = colorful(200, 200, seed=3)
    cropped_source = colorful(260, 220, seed=4)
    c.post("1girl_solo/100.png", encode(big))
    c.post("1girl_solo/101.png", encode(other))
    c.post("1girl_solo/102.png", encode(grey(page)), tags=("solo",))  # untagged monochrome page
    c.post("1girl_solo/103.jpg", encode(grey(colorful(200, 160, 5)), "JPEG", quality=85))
    c.post("1girl_solo/104.png", encode(desaturate(colorful(200, 160, 6), 0.06)))
    c.post("1girl_solo/105.png", encode(colorful(40, 40, 7)))  # tiny
    c.post("1girl_solo/106.png", encode(colorful(70, 400, 8)))  # extreme aspect
    c.post("1girl_solo/107.png", encode(colorful(200, 160, 9))[:-400])  # truncated download
    blank = np.full((200, 160, 3), 250, np.uint8)
    blank[100:102, 80:82] = (255, 0, 0)
    c.post("1girl_solo/108.png", encode(blank))  # near blank
    c.post("1girl_solo/109.jpg", jpeg_again(encode(big), 80))  # near dup: JPEG re-encode of 100
    c.post("1girl_solo/110.png", encode(resized(other, 0.6)))  # near dup: 60% of 101
    c.post("1girl_solo/111.png", encode(cropped_source))
    c.post("1girl_solo/112.png", encode(corner_crop(cropped_source, 0.05)))  # near dup: 5% cropped off 111
    c.post("1girl_solo/113.png", encode(colorful(200, 160, 10)), tags=("2girls", "multiple_girls"))
    c.post("1girl_solo/114.png", encode(colorful(200, 160, 11)), tags=("1girl", "smile"))  # no solo
    (c.root / "1girl_solo" / "notes.txt").write_text("not an image")
    # The same posts found by a second query: a hard link, a symlink, a bare sidecar.
    os.link(c.root / "1girl_solo/100.png", c.root / "blue_hair_solo/100.png")
    shutil.copy(c.root / "1girl_solo/100.json", c.root / "blue_hair_solo/100.json")
    os.symlink("../1girl_solo/101.png", c.root / "blue_hair_solo/101.png")
    c.post("blue_hair_solo/101.json", None, md5=hashlib.md5(encode(other)).hexdigest())  # beside the link
    c.post("blue_hair_solo/111.json", None, md5=hashlib.md5(encode(cropped_source)).hexdigest())
    c.post("blue_hair_solo/300.json", None, md5="0" * 32)  # sidecar of a post never downloaded
    c.post("blue_hair_solo/200.png", encode(colorful(210, 170, 12), "PNG"))
    # A folder of plain images: no sidecars, no tags.
    plain = c.folder("plain")
    (plain / "a.png").write_bytes(encode(colorful(190, 150, 13)))
    shutil.copy(c.root / "blue_hair_solo/200.png", plain / "b.png")  # same bytes, separate file
    (c.root / "archive.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    return c


EXPECTED_REJECTIONS = {
    "1girl_solo/102.png": "greyscale",
    "1girl_solo/103.jpg": "greyscale",
    "1girl_solo/104.png": "low_saturation",
    "1girl_solo/105.png": "too_small",
    "1girl_solo/106.png": "aspect",
    "1girl_solo/107.png": "unreadable",
    "1girl_solo/108.png": "near_blank",
    "1girl_solo/109.jpg": "near_duplicate",
    "1girl_solo/110.png": "near_duplicate",
    "1girl_solo/112.png": "near_duplicate",
    "1girl_solo/113.png": "tag_rejected",
    "1girl_solo/114.png": "tag_required",
    "blue_hair_solo/100.png": "duplicate_md5",
    "blue_hair_solo/101.png": "duplicate_md5",
    "blue_hair_solo/111.json": "duplicate_md5",
    "blue_hair_solo/300.json": "missing_image",
    "plain/b.png": "duplicate_md5",
}
EXPECTED_KEPT = {
    "1girl_solo/100.png",
    "1girl_solo/101.png",
    "1girl_solo/111.png",
    "blue_hair_solo/200.png",
    "plain/a.png",
}


def test_each_file_is_kept_or_left_out_for_the_right_reason(crawl, tmp_path):
    result = curate(crawl.root, tmp_path / "curated", small_cfg())
    assert reasons(result) == EXPECTED_REJECTIONS
    assert {r["src_path"] for r in result.kept} == EXPECTED_KEPT
    # Every image and every sidecar without an image is accounted for exactly once.
    entries = {
        p.relative_to(crawl.root).as_posix() for p in crawl.root.rglob("*") if p.suffix in {".png", ".jpg"}
    }
    entries |= {
        p.relative_to(crawl.root).as_posix()
        for p in crawl.root.rglob("*.json")
        if not any(p.with_suffix(ext).exists() or p.with_suffix(ext).is_symlink() for ext in (".png", ".jpg"))
    }
    assert entries == set(EXPECTED_REJECTIONS) | EXPECTED_KEPT


def test_duplicates_point_at_the_copy_that_is_kept(crawl, tmp_path):
    result = curate(crawl.root, tmp_path / "curated", small_cfg())
    by_path = {r["src_path"]: r for r in result.rejected}
    assert by_path["blue_hair_solo/100.png"]["duplicate_of"] == "1girl_solo/100.png"
    assert by_path["plain/b.png"]["duplicate_of"] == "blue_hair_solo/200.png"
    # near duplicates: the largest copy stays; the lossless one when sizes are equal
    assert by_path["1girl_solo/109.jpg"]["duplicate_of"] == "1girl_solo/100.png"
    assert by_path["1girl_solo/110.png"]["duplicate_of"] == "1girl_solo/101.png"
    assert by_path["1girl_solo/112.png"]["duplicate_of"] == "1girl_solo/111.png"
    assert by_path["1girl_solo/112.png"]["distance"] <= 8
    kept = {r["src_path"]: r for r in result.kept}
    # a post found by two queries is one record that remembers both folders
    assert kept["1girl_solo/100.png"]["folders"] == ["1girl_solo", "blue_hair_solo"]
    assert kept["1girl_solo/101.png"]["folders"] == ["1girl_solo", "blue_hair_solo"]
    assert kept["1girl_solo/100.png"]["near_duplicates"] == 1
    assert kept["plain/a.png"]["tag_source"] == "none" and kept["plain/a.png"]["tags"] == []


def test_manifest_format_paths_and_atomic_outputs(crawl, tmp_path):
    dest = tmp_path / "curated"
    result = curate(crawl.root, dest, small_cfg())
    lines = (dest / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == len(EXPECTED_KEPT)
    for line in lines:
        rec = json.loads(line)
        assert {"path", "id", "md5", "tags", "width", "height", "split", "folder"} <= set(rec)
        target = dest / rec["path"]
        assert rec["path"].startswith("images/") and target.is_file()
        # hard-linked, not copied: DEST costs no space and survives SRC being cleaned up
        assert os.path.samefile(target, crawl.root / rec["src_path"])
        assert hashlib.md5(target.read_bytes()).hexdigest() == rec["md5"]
        with Image.open(target) as img:
            assert img.size == (rec["width"], rec["height"])
    assert json.loads(lines[0])["id"] == 100 and json.loads(lines[0])["tags"] == ["1girl", "solo"]
    rejected = [json.loads(x) for x in (dest / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == len(EXPECTED_REJECTIONS)
    for rec in rejected:
        # rejected paths resolve like manifest paths: relative to DEST, here pointing back into SRC
        assert (dest / rec["path"]).resolve() == (crawl.root / rec["src_path"]).resolve()
        assert rec["reason"] and rec["detail"]
    assert not [p for p in dest.iterdir() if ".tmp" in p.name]
    assert "| 1girl_solo | 1girl solo |" in (dest / "summary.md").read_text()
    assert result.manifest_path == dest / "manifest.jsonl"


def test_link_none_writes_paths_back_into_src(crawl, tmp_path):
    dest = tmp_path / "curated"
    result = curate(crawl.root, dest, small_cfg("output.link=none"))
    assert not (dest / "images").exists()
    for rec in result.kept:
        assert rec["path"].startswith("../raw/")
        assert (dest / rec["path"]).resolve() == (crawl.root / rec["src_path"]).resolve()


def test_manifest_feeds_the_trainer(crawl, tmp_path):
    torch = pytest.importorskip("torch")
    from colorizer.config import load_config
    from colorizer.data import ColorizationDataset, read_manifest

    dest = tmp_path / "curated"
    result = curate(crawl.root, dest, small_cfg())
    manifest = dest / "manifest.jsonl"
    items = read_manifest(manifest)
    assert len(items) == len(result.kept) and all(Path(i.path).is_file() for i in items)
    split = result.kept[0]["split"]
    cfg = load_config(
        None, [f"data.source={manifest}", f"data.split={split}", "data.height_px=32", "data.width_px=48"]
    )
    ds = ColorizationDataset(cfg)
    assert len(ds) == sum(r["split"] == split for r in result.kept)
    sample = ds[0]
    assert sample["skipped"] == 0
    assert sample["color"].shape == (3, 32, 48) and sample["line"].shape == (1, 32, 48)
    assert torch.isfinite(sample["color"]).all()


# --------------------------------------------------------------------------------------------------
# Splits, caps, incremental runs


def test_split_is_a_function_of_md5_with_the_configured_shares():
    shares = {"train": 0.7, "val": 0.2, "test": 0.1}
    md5s = [hashlib.md5(str(i).encode()).hexdigest() for i in range(4000)]
    splits = [assign_split(m, shares) for m in md5s]
    assert splits == [assign_split(m, dict(shares)) for m in md5s]  # deterministic
    counts = {s: splits.count(s) / len(splits) for s in shares}
    assert counts == pytest.approx(shares, abs=0.03)
    assert [assign_split(m, shares, salt="other") for m in md5s] != splits
    assert {assign_split(m, {"train": 1.0, "val": 0.0}) for m in md5s} == {"train"}


def near_dup_crawl(root: Path, n_groups: int = 12) -> tuple[Crawl, dict[str, int]]:
    """Groups of an original and its re-encoded, resized and cropped copies, spread over 2 folders."""
    c = Crawl(root)
    group_of = {}
    for g in range(n_groups):
        folder = "a" if g % 2 else "b"
        src = colorful(200 + 4 * g, 160 + 2 * g, seed=100 + g)
        copies = {
            f"{folder}/{g * 10}.png": encode(src),
            f"{folder}/{g * 10 + 1}.jpg": encode(src, "JPEG", quality=75),
            f"{folder}/{g * 10 + 2}.png": encode(resized(src, 0.7)),
            f"{'a' if folder == 'b' else 'b'}/{g * 10 + 3}.png": encode(corner_crop(src, 0.05)),
        }
        for rel, data in copies.items():
            c.post(rel, data)
            group_of[rel] = g
    return c, group_of


def test_near_duplicate_groups_never_span_two_splits(tmp_path):
    c, group_of = near_dup_crawl(tmp_path / "raw")
    result = curate(c.root, tmp_path / "out", small_cfg())
    kept_groups = [group_of[r["src_path"]] for r in result.kept]
    assert sorted(kept_groups) == list(range(12))  # exactly one per group: the original
    assert all(r["src_path"].endswith("0.png") for r in result.kept)
    assert len({r["split"] for r in result.kept}) > 1
    # Nothing in one split is a near copy of anything in another (checked on fresh hashes).
    hashes = {r["src_path"]: analyze_image(c.root / r["src_path"]).phash for r in result.kept}
    for ra in result.kept:
        for rb in result.kept:
            if ra["split"] != rb["split"]:
                assert popcount64(np.uint64(hashes[ra["src_path"]] ^ hashes[rb["src_path"]])) > 8
    # Without near-dup removal the copies would be kept, and they do land in different splits.
    loose = curate(c.root, tmp_path / "loose", small_cfg("dedup.near=false"))
    splits_per_group = {}
    for r in loose.kept:
        splits_per_group.setdefault(group_of[r["src_path"]], set()).add(r["split"])
    assert any(len(s) > 1 for s in splits_per_group.values())


def test_same_input_same_manifest_and_rerun_reads_nothing(crawl, tmp_path):
    cfg = small_cfg()
    first = curate(crawl.root, tmp_path / "one", cfg)
    second = curate(crawl.root, tmp_path / "two", cfg)
    assert (tmp_path / "one/manifest.jsonl").read_text() == (tmp_path / "two/manifest.jsonl").read_text()
    assert first.measured == second.measured > 0
    again = curate(crawl.root, tmp_path / "one", cfg)
    assert again.measured == 0 and again.from_cache == first.measured
    assert (tmp_path / "one/manifest.jsonl").read_text() == (tmp_path / "two/manifest.jsonl").read_text()


def test_adding_images_later_measures_only_them_and_reshuffles_nothing(tmp_path):
    c, _ = near_dup_crawl(tmp_path / "raw", n_groups=6)
    dest = tmp_path / "out"
    before = {r["md5"]: r["split"] for r in curate(c.root, dest, small_cfg()).kept}
    for i in range(4):
        c.post(f"a/{900 + i}.png", encode(colorful(200, 170, seed=900 + i)))
    changed = c.root / "a/3.png"  # was a cropped copy of b/0.png; now a picture of its own
    changed.write_bytes(encode(colorful(200, 160, seed=777)))
    after = curate(c.root, dest, small_cfg())
    assert after.measured == 5
    now = {r["md5"]: r["split"] for r in after.kept}
    assert set(before) <= set(now) and len(now) == len(before) + 5
    assert {m: now[m] for m in before} == before
    # the old file's link in DEST is gone, the new content is there
    assert all((dest / r["path"]).is_file() for r in after.kept)
    assert len(list((dest / "images").rglob("*.*"))) == len(after.kept)


def test_folder_caps_keep_a_stable_subset(tmp_path):
    c = Crawl(tmp_path / "raw")
    for i in range(9):
        c.post(f"big/{i}.png", encode(colorful(150, 130, seed=200 + i)))
    for i in range(3):
        c.post(f"small/{i}.png", encode(colorful(150, 130, seed=300 + i)))
    result = curate(c.root, tmp_path / "out", small_cfg("balance.max_ratio_to_smallest=2"))
    per_folder = {f: sum(r["folder"] == f for r in result.kept) for f in ("big", "small")}
    assert per_folder == {"big": 6, "small": 3}
    assert sum(r["reason"] == "folder_cap" for r in result.rejected) == 3
    again = curate(c.root, tmp_path / "out2", small_cfg("balance.max_per_folder=6"))
    assert {r["md5"] for r in again.kept} == {r["md5"] for r in result.kept}


def test_summary_shows_kept_per_folder_per_split(crawl, tmp_path, capsys):
    code = main(
        [
            str(crawl.root),
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "--set",
            "pixels.min_short_side_px=64",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| folder | query | files | kept | train | val | test | left out |" in out
    assert "| greyscale | 2 |" in out and "| near_duplicate | 3 |" in out
    row = next(line for line in out.splitlines() if line.startswith("| 1girl_solo "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["1girl_solo", "1girl solo", "15"]
    assert int(cells[3]) == sum(int(x) for x in cells[4:7])  # kept = train + val + test


# --------------------------------------------------------------------------------------------------
# Command line and config


def test_filter_subcommand_registers_on_a_parent_parser(crawl, tmp_path):
    import argparse

    parser = argparse.ArgumentParser(prog="crawler")
    add_filter_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "filter",
            str(crawl.root),
            "--out",
            str(tmp_path / "o"),
            "-q",
            "--set",
            "pixels.min_short_side_px=64",
        ]
    )
    assert args.func is run_filter
    assert args.func(args) == 0
    assert (tmp_path / "o/manifest.jsonl").is_file()


def test_config_file_and_errors_name_the_key(tmp_path):
    cfg = load_curate_config(Path(__file__).resolve().parent.parent / "configs" / "curate.yaml")
    assert cfg.pixels.min_short_side_px >= 256 and "multiple_girls" in cfg.tags.reject
    assert cfg.split.shares == {"train": 0.7, "val": 0.2, "test": 0.1}
    with pytest.raises(ConfigError, match="pixels.min_short_sid"):
        load_curate_config(None, ["pixels.min_short_sid=3"])
    with pytest.raises(ConfigError, match="pixels.min_short_side_px"):
        load_curate_config(None, ["pixels.min_short_side_px=big"])
    with pytest.raises(ConfigError, match="output.link"):
        load_curate_config(None, ["output.link=move"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("dedup:\n  max_distance: 80\n")
    with pytest.raises(ConfigError, match="dedup.max_distance"):
        load_curate_config(bad)
    assert load_curate_config(None, ["tagger.threshold=1e-1"]).tagger.threshold == 0.1
    # a mapping is the whole setting: no split the user left out comes back from the defaults
    assert load_curate_config(None, ["split.shares={train: 0.9, test: 0.1}"]).split.shares == {
        "train": 0.9,
        "test": 0.1,
    }
    with pytest.raises(ConfigError, match=r"split.shares.val"):
        load_curate_config(None, ["split.shares={val: lots}"])


def test_bad_command_lines_exit_2_with_a_message(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "src").mkdir()
    assert main([str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--set", "nope=1"]) == 2
    assert "unknown config key 'nope'" in capsys.readouterr().err  # the loader the model side uses
    assert main([str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--tagger", "i2v"]) == 2
    assert "--i2v-weights" in capsys.readouterr().err
    assert main([str(tmp_path / "src"), "--out", str(tmp_path / "src")]) == 2


def test_parallel_measuring_gives_the_same_manifest(tmp_path):
    c, _ = near_dup_crawl(tmp_path / "raw", n_groups=5)
    one = curate(c.root, tmp_path / "one", small_cfg("workers=1"))
    two = curate(c.root, tmp_path / "two", small_cfg("workers=2"))
    assert one.measured == two.measured == 20
    assert (tmp_path / "one/manifest.jsonl").read_text() == (tmp_path / "two/manifest.jsonl").read_text()


def test_crawler_modules_import_no_torch():
    code = (
        "import sys, crawler.cli, crawler.crawl, crawler.local_server, crawler.curation.cli, crawler.curation.tagger; "
        "bad = [m for m in ('torch', 'cv2', 'scipy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


# --------------------------------------------------------------------------------------------------
# Pixel measurements and hashing


def test_colour_measurements_separate_grey_tinted_and_colour(tmp_path):
    params = AnalysisParams()
    art = colorful(200, 160, seed=42)
    cases = {
        "colour.png": encode(art),
        "grey.png": encode(grey(art)),
        "grey.jpg": encode(grey(art), "JPEG", quality=70),
        "sepia.png": encode(
            np.clip(grey(art).astype(np.float32) * np.float32([1.0, 0.85, 0.62]), 0, 255).astype(np.uint8)
        ),
    }
    stats = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        stats[name] = analyze_image(tmp_path / name, params)
    assert stats["colour.png"].chroma_p99 > 100 and stats["colour.png"].color_share > 0.5
    assert stats["grey.png"].chroma_p99 == 0
    assert stats["grey.jpg"].chroma_p99 <= 12  # JPEG chroma noise stays under the greyscale line
    assert stats["sepia.png"].color_share > 0.3  # colour by chroma ...
    assert stats["sepia.png"].hue_spread_deg < 5 < 30 < stats["colour.png"].hue_spread_deg  # ... one hue
    rejected = curate(
        tmp_path, tmp_path / "out", small_cfg("pixels.min_hue_spread_deg=10", "dedup.near=false")
    )
    assert reasons(rejected) == {
        "grey.png": "greyscale",
        "grey.jpg": "greyscale",
        "sepia.png": "tinted_monochrome",
    }


def test_exif_rotation_and_transparency(tmp_path):
    art = colorful(120, 200, seed=5)  # landscape pixels ...
    img = Image.fromarray(art)
    exif = img.getexif()
    exif[0x0112] = 6  # ... shown rotated by 90 degrees
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=90)
    assert (analyze_image(tmp_path / "rot.jpg").width, analyze_image(tmp_path / "rot.jpg").height) == (
        120,
        200,
    )
    rgba = np.zeros((100, 100, 4), np.uint8)  # transparent: white paper, not black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    s = analyze_image(tmp_path / "clear.png")
    assert s.error is None and s.content_share == 0.0


def test_decompression_bomb_and_junk_are_unreadable(tmp_path, monkeypatch):
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    assert analyze_image(tmp_path / "junk.png").error_reason == "unreadable"
    (tmp_path / "big.png").write_bytes(encode(colorful(100, 100, 1)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # 10,000 px is now "too many"
    s = analyze_image(tmp_path / "big.png")
    assert s.error_reason == "too_many_pixels" and s.md5


def test_truncated_jpeg_is_unreadable(tmp_path):
    data = encode(colorful(300, 240, 3), "JPEG", quality=90)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert analyze_image(tmp_path / "cut.jpg").error_reason == "unreadable"


def test_phash_matches_imagehash_bit_for_bit():
    # A golden value computed with imagehash 4.3.2 (imagehash.phash) on this exact picture.
    img = Image.fromarray(colorful(150, 110, seed=0))
    assert f"{phash(img):016x}" == GOLDEN_PHASH
    imagehash = pytest.importorskip("imagehash")
    for seed in range(40):
        img = Image.fromarray(colorful(60 + 7 * seed, 90 + 3 * seed, seed))
        assert phash(img) == int(str(imagehash.phash(img)), 16)


GOLDEN_PHASH = "9e90bdfa291cec03"


@pytest.mark.parametrize(
    "copy",
    [
        lambda a: Image.open(io.BytesIO(encode(a, "JPEG", quality=70))).convert("RGB"),
        lambda a: Image.fromarray(resized(a, 0.5)),
        lambda a: Image.fromarray(corner_crop(a, 0.05)),
        lambda a: Image.fromarray(a[:, round(a.shape[1] * 0.05) :]),  # 5% off the left edge only
        lambda a: Image.fromarray(a[: round(a.shape[0] * 0.95), : round(a.shape[1] * 0.95)]),
    ],
    ids=["jpeg70", "half-size", "corner-crop-5%", "left-crop-5%", "bottom-right-crop-5%"],
)
def test_near_copies_are_found_distinct_pictures_are_not(copy, tmp_path):
    params = AnalysisParams()
    originals = [colorful(220, 180, seed=500 + i) for i in range(8)]
    for i, a in enumerate(originals):
        Image.fromarray(a).save(tmp_path / f"o{i}.png")
        copy(a).save(tmp_path / f"c{i}.png")
    stats = [analyze_image(tmp_path / f"o{i}.png", params) for i in range(8)]
    stats += [analyze_image(tmp_path / f"c{i}.png", params) for i in range(8)]
    a, b, _ = near_duplicate_pairs([s.phash for s in stats], [s.crop_hashes for s in stats], 8)
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == [(i, i + 8) for i in range(8)]


def test_hamming_index_finds_exactly_what_brute_force_finds():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 3000, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, 3000, dtype=np.uint64
    )
    for k, s in enumerate(rng.integers(0, 2000, 600)):  # plant near copies 0..12 bits away
        v = int(hashes[s])
        for bit in rng.choice(64, int(rng.integers(0, 13)), replace=False):
            v ^= 1 << int(bit)
        hashes[2400 + k] = v
    for radius in (0, 3, 8, 12):
        index = HammingIndex(hashes, radius=radius)
        q, j, d = index.search(hashes)
        found = {(a, b) for a, b in zip(q.tolist(), j.tolist(), strict=True) if a < b}
        assert found == brute_force_pairs(hashes, radius) and len(found) > 0
        assert (d <= radius).all()
    assert HammingIndex(hashes, radius=8).query(int(hashes[5]))[0] == (5, 0)


# --------------------------------------------------------------------------------------------------
# Inputs nobody planned for


def disc(
    color: tuple[int, int, int], *, band: tuple[int, int, int] | None = None, size: int = 200
) -> np.ndarray:
    """A big filled circle with a dark outline on white (clip art): pHash sees only the outline."""
    import cv2

    img = np.full((size, size, 3), 255, np.uint8)
    cv2.circle(img, (size // 2, size // 2), size * 2 // 5, color, -1)
    cv2.circle(img, (size // 2, size // 2), size * 2 // 5, (20, 20, 20), 2)
    return img


def test_look_alikes_that_differ_in_colour_are_kept_in_one_split(tmp_path):
    """Two discs (an orange smiley, a pink ball) and a drawing and its recolour have near pHashes:
    not copies, so both are kept, but each pair shares a split; a real re-encode is still dropped."""
    c = Crawl(tmp_path / "raw")
    art = colorful(200, 200, seed=21)
    # The same drawing recoloured: grey, plus a tint that leaves the luminance (what pHash sees) as it was.
    tint = np.float32([60, -40, 48])  # 0.299 * 60 - 0.587 * 40 + 0.114 * 48 ~ 0
    recolour = np.clip(grey(art) + tint, 0, 255).astype(np.uint8)
    c.post("a/1.png", encode(disc((240, 160, 40))))  # orange
    c.post("b/2.png", encode(disc((100, 180, 255))))  # light blue, about as bright
    c.post("a/3.png", encode(art))
    c.post("b/4.png", encode(recolour))
    c.post("b/5.jpg", jpeg_again(encode(art), 85))  # a copy: dropped
    filler = {f"a/{10 + i}.png": encode(colorful(180, 150, seed=50 + i)) for i in range(12)}
    for rel, data in filler.items():
        c.post(rel, data)
    for salt in ("", "x", "y", "z"):
        result = curate(c.root, tmp_path / f"out{salt}", small_cfg(f"split.salt={salt!r}"))
        by_rel = {r["src_path"]: r for r in result.kept}
        assert reasons(result) == {"b/5.jpg": "near_duplicate"}
        assert by_rel["a/1.png"]["split"] == by_rel["b/2.png"]["split"]
        assert by_rel["a/3.png"]["split"] == by_rel["b/4.png"]["split"]
        assert by_rel["a/1.png"]["similar"] == 1 and "similar" not in by_rel["a/10.png"]
    unlinked = curate(c.root, tmp_path / "unlinked", small_cfg("dedup.lookalike_distance=0"))
    assert len(unlinked.kept) == len(result.kept) and not any("similar" in r for r in unlinked.kept)
    # With the colour check off, the pHash alone decides: the look-alikes are dropped as copies.
    strict = curate(c.root, tmp_path / "strict", small_cfg("dedup.max_color_diff=null"))
    assert sum(r["reason"] == "near_duplicate" for r in strict.rejected) == 3


def test_small_coloured_drawing_on_a_big_page_is_not_low_saturation(tmp_path):
    page = np.full((400, 400, 3), 255, np.uint8)
    page[170:230, 160:240] = colorful(60, 80, seed=3)  # 3% of the page, all colour
    (tmp_path / "small_drawing.png").write_bytes(encode(page))
    s = analyze_image(tmp_path / "small_drawing.png")
    assert s.content_share > 0.01 and s.color_share > 0.5
    result = curate(tmp_path, tmp_path / "out", small_cfg())
    assert [r["src_path"] for r in result.kept] == ["small_drawing.png"]


def test_odd_files_animated_cmyk_16_bit_palette_and_names(tmp_path):
    src = tmp_path / "plain"
    src.mkdir()
    frames = [Image.fromarray(colorful(160, 160, seed=s)) for s in (1, 2, 3)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.fromarray(colorful(160, 140, seed=4)).convert("CMYK").save(src / "cmyk.jpg", quality=90)
    Image.fromarray(np.linspace(0, 65535, 160 * 160).reshape(160, 160).astype(np.uint16)).save(
        src / "g16.png"
    )
    pal = Image.fromarray(colorful(160, 160, seed=5)).convert("P")
    pal.save(src / "pal.png", transparency=0)
    Image.fromarray(colorful(160, 160, seed=6)).save(src / "same name.png")
    Image.fromarray(colorful(160, 160, seed=7)).save(src / "same name.webp")
    Image.fromarray(colorful(160, 160, seed=8)).save(src / "ÜBER.PNG")
    (src / "empty.jpg").write_bytes(b"")
    (src / "page.jpg").write_bytes(b"<html>a Cloudflare page saved as .jpg</html>")
    (src / "folder.png").mkdir()
    os.symlink("gone.png", src / "dangling.png")
    result = curate(tmp_path, tmp_path / "out", small_cfg())
    assert reasons(result) == {
        "plain/g16.png": "greyscale",
        "plain/empty.jpg": "unreadable",
        "plain/page.jpg": "unreadable",
        "plain/dangling.png": "unreadable",
    }
    kept = {r["src_path"]: r for r in result.kept}
    assert set(kept) == {
        "plain/anim.gif",
        "plain/cmyk.jpg",
        "plain/pal.png",
        "plain/same name.png",
        "plain/same name.webp",
        "plain/ÜBER.PNG",
    }
    assert len({r["id"] for r in result.kept}) == len(result.kept)  # ids unique without sidecars
    assert (kept["plain/cmyk.jpg"]["width"], kept["plain/cmyk.jpg"]["height"]) == (140, 160)
    assert all((tmp_path / "out" / r["path"]).is_file() for r in result.kept)


def test_junk_in_sidecars_is_not_a_tag(tmp_path):
    c = Crawl(tmp_path / "raw")
    p = c.post("q/1.png", encode(colorful(150, 150, seed=1)))
    p.with_suffix(".json").write_text(json.dumps({"id": 1, "tags": [1, {"a": 2}, None, "solo"]}))
    p = c.post("q/2.png", encode(colorful(150, 150, seed=2)))
    p.with_suffix(".json").write_text(json.dumps({"id": 2, "tags": "1girl  solo\tblue_hair"}))
    result = curate(c.root, tmp_path / "out", small_cfg())
    assert {r["id"]: r["tags"] for r in result.kept} == {1: ["solo"], 2: ["1girl", "blue_hair", "solo"]}


def test_interrupted_run_leaves_the_old_manifest_and_keeps_what_it_measured(
    crawl, tmp_path, monkeypatch, capsys
):
    import crawler.curation.measure as curate_mod

    dest = tmp_path / "out"
    args = [str(crawl.root), "--out", str(dest), "--workers", "1", "--set", "pixels.min_short_side_px=64"]
    assert main(args) == 0
    before = (dest / "manifest.jsonl").read_bytes()
    shutil.rmtree(dest / "images")
    (dest / "cache.sqlite").unlink()
    real = curate_mod.analyze_image
    calls = []

    def interrupted(path, params):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(path, params)

    monkeypatch.setattr(curate_mod, "analyze_image", interrupted)
    assert main(args) == 130
    assert "interrupted" in capsys.readouterr().err
    assert (dest / "manifest.jsonl").read_bytes() == before
    assert not list(dest.glob(".*.tmp*"))
    monkeypatch.setattr(curate_mod, "analyze_image", real)
    capsys.readouterr()
    assert main(args) == 0
    assert (dest / "manifest.jsonl").read_bytes() == before
    assert "4 from cache" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Photographs


DATA = Path(__file__).parent / "data"


def natural_photo(h: int, w: int, seed: int, beta: float = 2.0) -> np.ndarray:
    """A photo-like picture: colour noise with a natural image's 1/f^beta spectrum, plus sensor grain."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    layers = [
        np.fft.irfft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** (beta / 2), s=(h, w))
        for _ in range(3)
    ]
    mix = rng.normal(0, 0.3, (3, 3)) + np.eye(3)
    out = np.stack([sum(mix[c, k] * layers[k] for k in range(3)) for c in range(3)], axis=2)
    out = (out - out.mean()) / out.std() * 45 + rng.uniform(90, 160, 3) + rng.normal(0, 2.0, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def anime_like(h: int, w: int, seed: int) -> np.ndarray:
    """Cel shading: a gradient sky, filled shapes with a soft airbrush gradient, a hard shadow, a
    highlight and dark anti-aliased outlines; hair strokes."""
    import cv2

    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = np.ascontiguousarray(
        np.broadcast_to(rng.uniform(0, 255, 3) * (1 - t) + rng.uniform(0, 255, 3) * t, (h, w, 3))
    ).astype(np.float32)
    yy = np.mgrid[0:h, 0:w][0].astype(np.float32)
    for _ in range(10):
        base = rng.uniform(60, 255, 3).astype(np.float32)
        c = (int(rng.integers(w // 5, 4 * w // 5)), int(rng.integers(h // 5, 4 * h // 5)))
        ax = (int(rng.integers(w // 20, w // 5)), int(rng.integers(h // 20, h // 4)))
        ang = float(rng.uniform(0, 180))
        masks = []
        for center, axes in (
            (c, ax),
            ((c[0] + ax[0] // 3, c[1] + ax[1] // 3), ax),
            (c, (ax[0] // 4, ax[1] // 5)),
        ):
            m = np.zeros((h, w), np.uint8)
            cv2.ellipse(m, center, axes, ang, 0, 360, 1, -1)
            masks.append(m.astype(bool))
        fill, shadow, light = masks
        shade = 1.0 - 0.25 * np.clip((yy - (c[1] - ax[1])) / (2 * ax[1] + 1), 0, 1)
        img[fill] = base * shade[fill][:, None]
        img[shadow & fill] = base * 0.7
        img[light & fill] = np.minimum(base * 1.3 + 40, 255)
        cv2.ellipse(img, c, ax, ang, 0, 360, (30, 20, 25), 3, cv2.LINE_AA)
    for _ in range(25):
        p = np.cumsum(rng.integers(-80, 80, (4, 2)), axis=0) + rng.integers(0, min(h, w), 2)
        cv2.polylines(img, [p.astype(np.int32)], False, (40, 25, 30), 2, cv2.LINE_AA)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_photos_are_rejected_drawings_and_jpeg_anime_are_kept(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    photos = {
        "noise_photo.jpg": encode(natural_photo(600, 800, seed=1), "JPEG", quality=85),
        "noise_photo_coarse.png": encode(natural_photo(700, 500, seed=2, beta=2.6)),
        "fruit_photo.png": (DATA / "photos" / "fruitcollection_leif_lod_07.png").read_bytes(),
    }
    drawings = {
        "flat.png": encode(colorful(600, 500, seed=3)),
        "flat_q75.jpg": encode(colorful(600, 500, seed=4), "JPEG", quality=75),
        "anime_q75.jpg": encode(anime_like(900, 700, seed=5), "JPEG", quality=75),
        "anime_q92.jpg": encode(anime_like(700, 900, seed=6), "JPEG", quality=92),
        "anime_small_q80.jpg": encode(resized(anime_like(1000, 800, seed=7), 0.55), "JPEG", quality=80),
    }
    for name, data in {**photos, **drawings}.items():
        (src / name).write_bytes(data)
    # real drawings: the openclipart test files and the example sketches are not photos either
    real = sorted((DATA / "openclipart").rglob("*.png"))
    real += sorted((Path(__file__).parent.parent / "examples").glob("*.png"))
    assert len(real) >= 40
    for i, path in enumerate(real):
        shutil.copy(path, src / f"real_{i:02d}_{path.name}")

    cfg = small_cfg("dedup.near=false", "pixels.min_short_side_px=16", "pixels.aspect_range=[0.1,10]")
    result = curate(src, tmp_path / "out", cfg)
    photo_rejections = {k for k, v in reasons(result).items() if v == "photo"}
    assert photo_rejections == set(photos)
    detail = next(r["detail"] for r in result.rejected if r["src_path"] == "noise_photo.jpg")
    assert "textured" in detail and "flat or smooth" in detail

    stats = {name: analyze_image(src / name) for name in [*photos, *drawings]}
    for name in drawings:  # flat fills, gradients and JPEG noise: mostly flat or smooth
        assert stats[name].flat_share > 0.5 and stats[name].texture_share < 0.3, name
    for name in ("noise_photo.jpg", "noise_photo_coarse.png"):
        assert stats[name].flat_share < 0.05 and stats[name].texture_share > 0.8, name

    off = curate(src, tmp_path / "off", small_cfg("dedup.near=false", "pixels.photo_min_texture_share=0"))
    assert "photo" not in set(reasons(off).values())


def test_curate_runs_its_named_stages_in_order(crawl, tmp_path, monkeypatch):
    """The stages the README and `STAGES` name are what `curate` runs, in that order."""
    from crawler.curation import stages

    called = []
    for name in STAGES:
        real = getattr(stages, name)
        monkeypatch.setattr(
            stages, name, lambda *a, _real=real, _name=name, **k: called.append(_name) or _real(*a, **k)
        )

    class Tagger:  # sees no tag anywhere
        tags, fingerprint = ["solo", "monochrome"], "none"

        def predict_files(self, paths, *, batch_size=16):
            return np.zeros((len(paths), 2), np.float32)

    result = curate(crawl.root, tmp_path / "out", small_cfg(), tagger=Tagger())
    assert called == list(STAGES) and result.kept
    called.clear()
    curate(crawl.root, tmp_path / "again", small_cfg())  # no tagger: no tagging stage
    assert called == [s for s in STAGES if s != "tagging"]
