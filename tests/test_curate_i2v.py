"""Illustration2Vec in PyTorch: the .caffemodel reader, the network, and `crawler filter --tagger i2v`.

The real weights are a download (see README); these tests write a small synthetic .caffemodel with
i2v's layer names, narrow layers and the real 1,539 outputs, using a protobuf encoder written here
(independent of the reader under test), and check that every weight lands where it belongs by
comparing with a forward pass built from the same arrays with torch.nn.functional.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from crawler.curation import curate, load_curate_config  # noqa: E402
from crawler.curation.cli import main  # noqa: E402
from crawler.curation.tagger import (  # noqa: E402
    CONV_LAYERS,
    MEAN_BGR,
    CaffeModelError,
    Illustration2Vec,
    iter_fields,
    parse_caffemodel,
)
from tests.test_curate import Crawl, colorful, encode  # noqa: E402

# --------------------------------------------------------------------------------------------------
# A protobuf encoder (wire format: https://protobuf.dev/programming-guides/encoding/)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def f_varint(field: int, n: int) -> bytes:
    return tag(field, 0) + varint(n)


def f_bytes(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


def f_str(field: int, text: str) -> bytes:
    return f_bytes(field, text.encode())


def blob(arr: np.ndarray, *, legacy: bool = False, unpacked: bool = False) -> bytes:
    """BlobProto: shape (field 7, packed int64 dims) or legacy num/channels/height/width (1-4); data (5)."""
    arr = np.asarray(arr, np.float32)
    if legacy:
        dims = (1, 1, 1, arr.size) if arr.ndim == 1 else arr.shape
        out = b"".join(f_varint(k, d) for k, d in zip((1, 2, 3, 4), dims, strict=True))
    else:
        out = f_bytes(7, f_bytes(1, b"".join(varint(d) for d in arr.shape)))
    if unpacked:
        out += b"".join(tag(5, 5) + struct.pack("<f", v) for v in arr.ravel())
    else:
        out += f_bytes(5, arr.astype("<f4").tobytes())
    return out


def conv_param(num_output: int, *, pad: int = 1, kernel: int = 3) -> bytes:
    return f_varint(1, num_output) + f_varint(3, pad) + f_varint(4, kernel)


def layer(name: str, type_: str, blobs: list[bytes] = (), conv: bytes | None = None) -> bytes:
    """LayerParameter: name 1, type 2 (string), blobs 7, convolution_param 106."""
    out = f_str(1, name) + f_str(2, type_) + f_str(3, "bottom") + f_str(4, name)
    out += b"".join(f_bytes(7, b) for b in blobs)
    if conv is not None:
        out += f_bytes(106, conv)
    return out


V1_ENUM = {"Convolution": 4, "ReLU": 18, "Pooling": 17, "Dropout": 6}


def layer_v1(name: str, type_: str, blobs: list[bytes] = (), conv: bytes | None = None) -> bytes:
    """V1LayerParameter: name 4, type 5 (enum), blobs 6, convolution_param 10."""
    out = f_str(2, "bottom") + f_str(3, name) + f_str(4, name) + f_varint(5, V1_ENUM[type_])
    out += b"".join(f_bytes(6, b) for b in blobs)
    if conv is not None:
        out += f_bytes(10, conv)
    return out


WIDTHS = [3, 4, 5, 6, 7, 5, 6, 4, 5, 6, 7, 8]  # inputs of conv1_1 .. conv6_4: all different, narrow
N_TAGS = 1539
TAGS = (
    [f"general {i}" for i in range(512)]
    + [f"character {i}" for i in range(512)]
    + [f"copyright {i}" for i in range(512)]
    + ["safe", "questionable", "explicit"]
)
TAGS[3], TAGS[7], TAGS[9], TAGS[11], TAGS[20] = "solo", "monochrome", "multiple girls", "comic", "1girl"


def random_weights(seed: int = 0, *, final_bias: dict[int, float] | None = None) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    outs = WIDTHS[1:] + [N_TAGS]
    weights = {}
    for name, c_in, c_out in zip(CONV_LAYERS, WIDTHS, outs, strict=True):
        w = rng.normal(0, np.sqrt(2.0 / (9 * c_in)), (c_out, c_in, 3, 3)).astype(np.float32)
        if name == "conv1_1":
            w /= 60.0  # inputs are 0..255 minus the mean
        b = rng.normal(0, 0.1, c_out).astype(np.float32)
        if name == "conv6_4" and final_bias is not None:
            w[:] = 0.0
            b[:] = -12.0
            for k, v in final_bias.items():
                b[k] = v
        weights[name] = (w, b)
    return weights


def write_model(path: Path, weights: dict, *, v1: bool = False, unpacked_layers=()) -> Path:
    """A NetParameter in i2v's order, with the ReLU / Pooling / Dropout layers (no weights) between."""
    make = layer_v1 if v1 else layer
    parts = [f_str(1, "illust2vec_tag_synthetic")]
    if not v1:
        parts.append(f_bytes(100, f_str(1, "data") + f_str(2, "Input")))
    for name in CONV_LAYERS:
        w, b = weights[name]
        unpacked = name in unpacked_layers
        blobs = [blob(w, legacy=v1, unpacked=unpacked), blob(b, legacy=v1, unpacked=unpacked)]
        # Half the layers carry their convolution_param (pad 1), half rely on the 3x3 "same" default.
        conv = conv_param(w.shape[0]) if CONV_LAYERS.index(name) % 2 == 0 else None
        if name == "conv6_4":
            parts.append(f_bytes(2 if v1 else 100, make("drop6_3", "Dropout")))
        parts.append(f_bytes(2 if v1 else 100, make(name, "Convolution", blobs, conv)))
        if name != "conv6_4":
            parts.append(f_bytes(2 if v1 else 100, make("relu" + name[4:], "ReLU")))
    path.write_bytes(b"".join(parts))
    return path


def write_tags(path: Path, tags=TAGS) -> Path:
    path.write_text(json.dumps(tags))
    return path


def reference_probs(weights: dict, rgb: np.ndarray) -> np.ndarray:
    """i2v's forward, written out with torch.nn.functional from the same arrays."""
    img = Image.fromarray(rgb).resize((224, 224), Image.BILINEAR)
    x = np.asarray(img, np.float32)[:, :, ::-1] - np.float32(MEAN_BGR)  # RGB -> BGR, minus the BGR mean
    h = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    for name in CONV_LAYERS:
        w, b = weights[name]
        h = F.conv2d(h, torch.from_numpy(w), torch.from_numpy(b), padding=1)
        if name != "conv6_4":
            h = F.relu(h)
        if name in ("conv1_1", "conv2_1", "conv3_2", "conv4_2", "conv5_2"):
            h = F.max_pool2d(h, 2, 2, ceil_mode=True)
    assert h.shape[-2:] == (7, 7)
    return torch.sigmoid(F.avg_pool2d(h, 7)).flatten().numpy()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, Path, dict]:
    d = tmp_path_factory.mktemp("i2v")
    weights = random_weights(0)
    return (
        write_model(d / "illust2vec_tag_ver200.caffemodel", weights),
        write_tags(d / "tag_list.json"),
        weights,
    )


# --------------------------------------------------------------------------------------------------
# Reader and network


def test_weights_land_in_the_right_layers(model_files):
    model_path, tags_path, weights = model_files
    i2v = Illustration2Vec.load(model_path, tags_path, device="cpu")
    state = i2v.net.state_dict()
    for name in CONV_LAYERS:
        w, b = weights[name]
        assert torch.equal(state[f"{name}.weight"], torch.from_numpy(w)), name
        assert torch.equal(state[f"{name}.bias"], torch.from_numpy(b)), name
    assert i2v.tags[9] == "multiple_girls"  # i2v's spaces -> Safebooru's underscores
    assert i2v.rating_tags == {"safe", "questionable", "explicit"}


def test_forward_matches_a_reference_built_from_the_same_arrays(model_files):
    model_path, tags_path, weights = model_files
    i2v = Illustration2Vec.load(model_path, tags_path, device="cpu")
    images = [colorful(300, 200, seed=1), colorful(180, 260, seed=2)]  # non-square, both ways
    probs = i2v.predict(images)
    assert probs.shape == (2, N_TAGS) and probs.dtype == np.float32
    for rgb, p in zip(images, probs, strict=True):
        np.testing.assert_allclose(p, reference_probs(weights, rgb), rtol=1e-4, atol=1e-6)
    assert not np.allclose(probs[0], probs[1], atol=1e-4)  # the pictures matter


def test_eval_mode_is_deterministic_where_i2v_was_not(model_files):
    model_path, tags_path, _ = model_files
    i2v = Illustration2Vec.load(model_path, tags_path, device="cpu")
    rgb = colorful(224, 224, seed=3)
    first = i2v.predict([rgb, rgb])
    assert np.array_equal(first[0], first[1]) and np.array_equal(first, i2v.predict([rgb, rgb]))
    assert not i2v.net.training
    # What the i2v package does (dropout left on) would differ run to run: the test can tell ...
    from crawler.curation.tagger import preprocess

    x = torch.from_numpy(preprocess([rgb, rgb]))
    i2v.net.train()
    torch.manual_seed(0)
    with torch.no_grad():
        noisy = i2v.net(x).numpy()
    assert not np.allclose(noisy[0], noisy[1])
    # ... and predict() puts the network back in eval mode whatever state it was left in.
    assert np.array_equal(i2v.predict([rgb, rgb]), first) and not i2v.net.training


def test_v1_layers_legacy_shapes_and_unpacked_floats_load_the_same(model_files, tmp_path):
    model_path, tags_path, weights = model_files
    v1 = write_model(tmp_path / "v1.caffemodel", weights, v1=True, unpacked_layers=("conv1_1", "conv3_2"))
    rgb = colorful(200, 240, seed=4)
    new = Illustration2Vec.load(model_path, tags_path, device="cpu").predict([rgb])
    old = Illustration2Vec.load(v1, tags_path, device="cpu").predict([rgb])
    np.testing.assert_array_equal(new, old)
    layers = parse_caffemodel(v1.read_bytes())
    assert [lay.type for lay in layers if lay.name.startswith("conv")] == ["Convolution"] * 12


def test_reader_reads_what_the_encoder_wrote():
    msg = f_varint(1, 300) + f_str(2, "conv1_1") + tag(3, 5) + struct.pack("<f", 1.5) + f_varint(4, 2**40)
    fields = list(iter_fields(msg))
    assert [(n, w) for n, w, _ in fields] == [(1, 0), (2, 2), (3, 5), (4, 0)]
    assert fields[0][2] == 300 and fields[3][2] == 2**40
    a, b = fields[1][2]
    assert msg[a:b] == b"conv1_1"
    with pytest.raises(CaffeModelError, match="truncated"):
        list(iter_fields(f_str(2, "conv1_1")[:-3]))


def test_wrong_files_fail_with_a_message_that_says_what_to_do(model_files, tmp_path):
    model_path, tags_path, weights = model_files
    partial = {k: v for k, v in weights.items() if k != "conv6_4"}
    bad = tmp_path / "bad.caffemodel"
    data = b"".join(
        f_bytes(100, layer(n, "Convolution", [blob(w), blob(b)])) for n, (w, b) in partial.items()
    ) + f_bytes(100, layer("encode1", "InnerProduct", [blob(np.zeros((2, 2)))]))
    bad.write_bytes(data)
    with pytest.raises(CaffeModelError, match=r"missing layers conv6_4.*feature model"):
        Illustration2Vec.load(bad, tags_path)
    with pytest.raises(CaffeModelError, match="1539 outputs but .* lists 10 tags"):
        Illustration2Vec.load(model_path, write_tags(tmp_path / "short.json", TAGS[:10]))
    with pytest.raises(CaffeModelError, match="releases"):
        Illustration2Vec.load(tmp_path / "nowhere.caffemodel", tags_path)
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(model_path.read_bytes()[:5000])
    with pytest.raises(CaffeModelError, match="cut.caffemodel"):
        Illustration2Vec.load(cut, tags_path)


# --------------------------------------------------------------------------------------------------
# crawler filter --tagger i2v


def test_untagged_files_get_estimated_tags_and_the_rules_apply(tmp_path):
    solo_model = write_model(
        tmp_path / "solo.caffemodel", random_weights(1, final_bias={3: 12.0, 20: 12.0, 1536: 12.0})
    )
    mono_model = write_model(tmp_path / "mono.caffemodel", random_weights(1, final_bias={3: 12.0, 7: 12.0}))
    tags_path = write_tags(tmp_path / "tag_list.json")
    c = Crawl(tmp_path / "raw")
    plain = c.folder("plain")
    for i in range(3):
        (plain / f"{i}.png").write_bytes(encode(colorful(160, 130, seed=40 + i)))
    c.post("tagged/5.png", encode(colorful(160, 130, seed=50)), tags=("1girl", "solo"))
    cfg = load_curate_config(None, ["pixels.min_short_side_px=64", "workers=1", "tags.when_missing=reject"])

    kept = curate(
        c.root, tmp_path / "a", cfg, tagger=Illustration2Vec.load(solo_model, tags_path, device="cpu")
    )
    by_path = {r["src_path"]: r for r in kept.kept}
    assert set(by_path) == {"plain/0.png", "plain/1.png", "plain/2.png", "tagged/5.png"}
    assert by_path["plain/0.png"]["tags"] == ["1girl", "solo"]  # the rating output "safe" is no tag
    assert by_path["plain/0.png"]["tag_source"] == "i2v"
    assert by_path["tagged/5.png"]["tag_source"] == "sidecar"

    mono = Illustration2Vec.load(mono_model, tags_path, device="cpu")
    out = curate(c.root, tmp_path / "b", cfg, tagger=mono)
    assert {r["src_path"]: r["reason"] for r in out.rejected} == {
        f"plain/{i}.png": "tag_rejected" for i in range(3)
    }
    assert {r["src_path"] for r in out.kept} == {"tagged/5.png"}  # tagged: not re-checked by default
    recheck = load_curate_config(
        None, ["pixels.min_short_side_px=64", "workers=1", "tagger.recheck_tagged=true"]
    )
    out = curate(c.root, tmp_path / "c", recheck, tagger=mono)
    rejected = {r["src_path"]: r for r in out.rejected}
    assert rejected["tagged/5.png"]["reason"] == "i2v_rejected"
    assert (
        rejected["tagged/5.png"]["tags"] == ["monochrome"] and rejected["tagged/5.png"]["probability"] > 0.99
    )
    # Scores are cached by md5 and model: a re-run does not run the network again.
    mono.predict_files = None  # would raise if called
    again = curate(c.root, tmp_path / "c", recheck, tagger=mono)
    assert {r["src_path"] for r in again.rejected} == set(rejected)


def test_filter_command_line_with_i2v(tmp_path, capsys):
    model = write_model(
        tmp_path / "illust2vec_tag_ver200.caffemodel", random_weights(2, final_bias={3: 12.0})
    )
    write_tags(tmp_path / "tag_list.json")  # found beside the weights
    c = Crawl(tmp_path / "raw")
    for i in range(2):
        (c.folder("plain") / f"{i}.png").write_bytes(encode(colorful(150, 120, seed=60 + i)))
    code = main(
        [str(c.root), "--out", str(tmp_path / "out"), "--tagger", "i2v", "--i2v-weights", str(model)]
        + ["--device", "cpu", "--workers", "1", "-q", "--set", "pixels.min_short_side_px=64"]
    )
    assert code == 0
    records = [json.loads(x) for x in (tmp_path / "out/manifest.jsonl").read_text().splitlines()]
    assert [r["tags"] for r in records] == [["solo"], ["solo"]]
    assert "2 kept" in capsys.readouterr().out


def test_the_tag_list_as_downloaded_gzipped_is_found_beside_the_weights(model_files, tmp_path):
    import gzip

    model_path, tags_path, _ = model_files
    weights = tmp_path / "illust2vec_tag_ver200.caffemodel"
    os.link(model_path, weights)
    (tmp_path / "tag_list.json.gz").write_bytes(gzip.compress(tags_path.read_bytes()))
    i2v = Illustration2Vec.load(weights, device="cpu")
    assert i2v.tags == Illustration2Vec.load(model_path, tags_path, device="cpu").tags
