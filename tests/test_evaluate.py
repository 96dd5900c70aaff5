"""Metrics on images with known answers; `colorizer evaluate`, `lr-find`, ensembles."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer import metrics as M
from colorizer.cli import main
from colorizer.evaluate import evaluate
from tests.test_cli import tiny_model  # noqa: F401  (fixture)
from tests.test_train import images, tiny  # noqa: F401  (fixtures)


def test_identical_images_score_perfectly():
    x = torch.rand(2, 3, 24, 40)
    assert torch.equal(M.psnr(x, x), torch.full((2,), M.MAX_PSNR_DB))
    assert torch.allclose(M.ssim(x, x), torch.ones(2))
    assert float(M.delta_e2000(M.rgb_to_lab(x), M.rgb_to_lab(x)).max()) < 1e-3


def test_known_values():
    a = torch.zeros(1, 3, 16, 16)
    assert float(M.psnr(a, a + 0.1)) == pytest.approx(20.0, abs=1e-3)  # MSE 0.01 -> 20 dB
    assert float(M.ssim(a + 0.5, 1 - (a + 0.5))) == pytest.approx(1.0)  # same grey: same structure
    assert float(M.ssim(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))) < 0.2  # unrelated noise
    # CIEDE2000 reference pairs (Sharma, Wu, Dalal 2005, table 1)
    pairs = [((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
             ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
             ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
             ((50.0, -0.001, 2.49), (50.0, 0.0011, -2.49), 4.7461)]  # fmt: skip
    for lab1, lab2, expected in pairs:
        de = M.delta_e2000(torch.tensor(lab1).view(3, 1, 1), torch.tensor(lab2).view(3, 1, 1))
        assert float(de) == pytest.approx(expected, abs=1e-3)
    # sRGB white and red in Lab
    lab = M.rgb_to_lab(torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]]).view(3, 1, 2))
    assert lab[:, 0, 0].tolist() == pytest.approx([100, 0, 0], abs=0.01)
    assert lab[:, 0, 1].tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.02)
    # colorfulness: grey has none; pure red: sqrt(255^2 + 127.5^2) * 0.3
    assert float(M.colorfulness(torch.full((1, 3, 8, 8), 0.4))) == pytest.approx(0.0, abs=1e-4)
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1
    assert float(M.colorfulness(red)) == pytest.approx(0.3 * (255**2 + 127.5**2) ** 0.5, rel=1e-4)


def test_delta_e_at_hints_uses_only_hinted_pixels():
    out, target = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    out[:, :, :4] = 1.0  # wrong (white instead of black) in the top half only
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 6:, :] = 1  # image 0 hinted where the output is right
    mask[1, :, :2, :] = 1  # image 1 hinted where it is wrong
    de = M.delta_e_at_hints(out, target, mask)
    assert float(de[0]) == pytest.approx(0.0, abs=1e-4) and float(de[1]) == pytest.approx(100.0, abs=0.01)
    assert torch.isnan(M.delta_e_at_hints(out, target, torch.zeros(2, 1, 8, 8))).all()


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(500, 8))
    assert M.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    shifted = f + np.array([3.0] + [0.0] * 7)  # same covariance, mean moved by 3 along one axis
    assert M.frechet_distance(f, shifted) == pytest.approx(9.0, abs=1e-6)


def test_evaluate_report_is_repeatable_and_ensemble_of_itself_is_itself(drawings_dir, tiny_model, tmp_path):  # noqa: F811
    a = evaluate([tiny_model], data=str(drawings_dir), out_dir=tmp_path / "a", size_px=64)
    b = evaluate([tiny_model], data=str(drawings_dir), out_dir=tmp_path / "b", size_px=64)
    both = evaluate([tiny_model, tiny_model], data=str(drawings_dir), out_dir=tmp_path / "c", size_px=64)
    assert a["results"] == b["results"] == both["results"]  # fixed seed: runs and models compare
    assert set(a["results"]) == {"0", "4", "16", "64"} and a["images"] == 6
    for n, r in a["results"].items():
        assert 0 < r["psnr"] < 100 and -1 <= r["ssim"] <= 1 and r["colorfulness_diff"] >= 0
        assert ("delta_e_hints" in r) == (n != "0")
    saved = json.loads((tmp_path / "a" / "report.json").read_text())
    assert saved["results"] == json.loads(json.dumps(a["results"]))
    grid = Image.open(tmp_path / "a" / "grid.png")
    assert grid.width > 6 * 100  # line | 4 hint counts | target


def test_evaluate_cli_on_real_line_art_and_errors(tiny_model, tmp_path, capsys):  # noqa: F811
    art = tmp_path / "art"
    art.mkdir()
    lines = np.full((90, 70), 255, np.uint8)
    lines[20:22, :] = 0
    Image.fromarray(lines).save(art / "l.png")
    assert (
        main(["evaluate", "--model", str(tiny_model), "--lineart", str(art), "--out", str(tmp_path / "e")])
        == 0
    )
    assert (tmp_path / "e" / "grid.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tiny_model), "--out", str(tmp_path / "e")]) == 1
    assert "give --data" in capsys.readouterr().err
    assert main(["evaluate", "--out", str(tmp_path / "e"), "--data", str(art)]) == 1
    err = capsys.readouterr().err
    assert "--model" in err and "--baseline" in err


def test_real_line_art_pairs_are_scored_against_their_color_twins(drawings_dir, tiny_model, tmp_path):  # noqa: F811
    from colorizer.lineart import xdog

    black, color = tmp_path / "black", tmp_path / "color"
    black.mkdir()
    color.mkdir()
    for i, path in enumerate(sorted(drawings_dir.rglob("*.png"))[:3]):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(rgb).save(color / f"e{i}.png")
        Image.fromarray((xdog(rgb) * 255).astype(np.uint8)).save(
            black / f"e{i}.jpg"
        )  # twins by name, any type
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(black / "orphan.png")  # no color twin: not scored
    r = evaluate([tiny_model], data=str(color), lineart_dir=str(black), out_dir=tmp_path / "p", size_px=64)
    assert r["images"] == 3 and r["lineart"].startswith("real line art")
    assert all(0 < v["psnr"] < 100 for v in r["results"].values())
    with pytest.raises(ValueError, match="no file .* has a color twin"):
        evaluate([tiny_model], data=str(drawings_dir), lineart_dir=str(black), out_dir=tmp_path / "q")


def test_baselines_go_through_the_same_scoring(tmp_path, capsys):
    """On flat images of one color, the mean-color baseline is exactly right and the line art is not."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.new("RGB", (80 + 10 * i, 60), (200, 60, 30)).save(flat / f"{i}.png")
    mean = evaluate([], baseline="mean-color", mean_from=str(flat), data=str(flat), out_dir=tmp_path / "m",
                    size_px=64)  # fmt: skip
    lines = evaluate([], baseline="lineart", data=str(flat), out_dir=tmp_path / "l", size_px=64)
    assert mean["baseline"]["kind"] == "mean-color" and "[200, 60, 30]" in mean["baseline"]["detail"]
    for n in ("4", "16"):
        assert mean["results"][n]["delta_e_hints"] < 1.0  # the right color everywhere
        assert lines["results"][n]["delta_e_hints"] > 30  # white paper where the color should be
        assert mean["results"][n]["psnr"] > lines["results"][n]["psnr"] + 20
    assert (
        main(["evaluate", "--baseline", "mean-color", "--data", str(flat), "--out", str(tmp_path / "x")]) == 1
    )
    assert "--mean-from" in capsys.readouterr().err  # a folder has no train split to take the mean from


@pytest.mark.slow
def test_fid_with_user_given_inception_weights(drawings_dir, tiny_model, tmp_path):  # noqa: F811
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    torch.save(
        inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict(), tmp_path / "inc.pth"
    )
    r = evaluate([tiny_model], data=str(drawings_dir), out_dir=tmp_path / "f", size_px=64, hint_counts=(0,),
                 limit=3, fid_weights=str(tmp_path / "inc.pth"))  # fmt: skip
    assert r["fid"] is not None and np.isfinite(r["fid"]) and r["fid"] >= -1e-6
    (tmp_path / "bad.pth").write_bytes(b"not weights")
    with pytest.raises(Exception, match="bad.pth|Weights only|invalid"):
        M.load_inception(str(tmp_path / "bad.pth"))


def test_lr_find_gives_a_finite_suggestion_and_a_plot(images, tmp_path, capsys):  # noqa: F811
    cfg = tiny(images, tmp_path)
    from colorizer.lr_find import lr_find

    r = lr_find(cfg, steps=40, min_lr=1e-6, max_lr=1.0)
    assert np.isfinite(r.suggestion) and 1e-6 <= r.suggestion <= 1.0
    assert r.plot_path.is_file() and Image.open(r.plot_path).size == (640, 400)
    assert len(r.lrs) == len(r.smoothed) and r.lrs == sorted(r.lrs)
    # the sweep does not touch the run itself
    assert not (tmp_path / "runs" / "cpu-tiny").exists()


def test_hint_dots_sit_where_a_person_puts_them():
    """colored placement: on colored pixels of the target, away from the lines, in the target's exact color."""
    import cv2

    from colorizer.evaluate import hint_dots
    from colorizer.lineart import xdog

    target = np.full((120, 160, 3), 255, np.uint8)
    cv2.circle(target, (60, 60), 40, (200, 40, 30), -1)
    cv2.circle(target, (60, 60), 40, (0, 0, 0), 3)
    cv2.rectangle(target, (110, 20), (150, 100), (30, 90, 220), -1)
    lines = xdog(target)
    layer = hint_dots(target, lines, 30, np.random.default_rng(0), radius_px=2)
    painted = layer[..., 3] > 0
    assert painted.sum() > 30 * 9  # 30 dots of 13 px
    assert (np.abs(target[painted].astype(int) - 255).max(axis=1) > 24).all()  # never on the paper
    ink_dist = cv2.distanceTransform((lines >= 0.7).astype(np.uint8), cv2.DIST_L2, 3)
    assert ink_dist[painted].min() >= 1  # never on a line
    assert (layer[..., :3][painted] == target[painted]).all()  # the designer's own colors
    uniform = hint_dots(target, lines, 30, np.random.default_rng(0), placement="uniform")
    assert (np.abs(target[uniform[..., 3] > 0].astype(int) - 255).max(axis=1) <= 24).any()  # paper too


def test_evaluate_scores_exactly_what_colorize_returns(drawings_dir, tiny_model, tmp_path):  # noqa: F811
    """The report's numbers are those of `Colorizer.colorize` at its default settings on the same hints."""
    from colorizer.evaluate import _fit, delta_e76, hint_dots
    from colorizer.inference import Colorizer
    from colorizer.lineart import xdog

    one = tmp_path / "one"
    one.mkdir()
    src = sorted(drawings_dir.rglob("*.png"))[0]
    (one / "x.png").write_bytes(src.read_bytes())
    r = evaluate([tiny_model], data=str(one), out_dir=tmp_path / "e", size_px=96, hint_counts=(16,))
    assert r["mode"] == "flat" and r["hint_placement"] == "colored"
    target = _fit(np.asarray(Image.open(src).convert("RGB")), 96)
    lines = xdog(target, sigma=0.5)
    layer = hint_dots(target, lines, 16, np.random.default_rng([0, 0, 16]), radius_px=2)
    sketch = Image.fromarray((np.clip(lines, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
    out = np.asarray(Colorizer.load(tiny_model).colorize(sketch, Image.fromarray(layer, "RGBA")))
    psnr = float(M.psnr(torch.from_numpy(out / 255.0).permute(2, 0, 1)[None],
                        torch.from_numpy(target / 255.0).permute(2, 0, 1)[None])[0])  # fmt: skip
    assert r["results"]["16"]["psnr"] == pytest.approx(psnr, abs=1e-4)
    assert r["results"]["16"]["psnr_median"] == pytest.approx(psnr, abs=1e-4)
    assert r["results"]["16"]["delta_e76"] == pytest.approx(delta_e76(out, target), abs=1e-4)


def test_reports_keep_each_images_scores_for_paired_comparisons(drawings_dir, tiny_model, tmp_path):  # noqa: F811
    """Two settings on the same drawings compare drawing by drawing (scripts/scale_paired.py): the report keeps
    every image's PSNR and Delta E in the data's order, and the summary figures are made from them."""
    import subprocess
    import sys
    from pathlib import Path

    kw = dict(data=str(drawings_dir), size_px=64, hint_counts=(0, 4), limit=3)
    a = evaluate([tiny_model], out_dir=tmp_path / "a", **kw)
    evaluate([tiny_model], out_dir=tmp_path / "b", resolution=128, **kw)
    for n in ("0", "4"):
        per = a["results"][n]["per_image"]
        assert len(per["psnr"]) == len(per["delta_e76"]) == a["images"] == 3
        assert np.median(per["psnr"]) == pytest.approx(a["results"][n]["psnr_median"], abs=1e-3)
    script = Path(__file__).resolve().parent.parent / "scripts" / "scale_paired.py"
    run = lambda x, y: subprocess.run(  # noqa: E731
        [sys.executable, str(script), str(x / "report.json"), str(y / "report.json")],
        capture_output=True,
        text=True,
    )
    same = run(tmp_path / "a", tmp_path / "a")
    assert same.returncode == 0 and same.stdout.count("a - b = +0.00 +- 0.00") == 4
    paired = run(tmp_path / "a", tmp_path / "b")
    assert paired.returncode == 0 and "4 hints, psnr" in paired.stdout and "3 images" in paired.stdout
    evaluate([tiny_model], out_dir=tmp_path / "c", **{**kw, "limit": 2})
    other = run(tmp_path / "a", tmp_path / "c")  # different drawings: refused, not a wrong comparison
    assert other.returncode == 2 and "nothing to pair" in other.stdout
