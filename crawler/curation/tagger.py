"""Illustration2Vec tags in PyTorch, the weights read straight from the released .caffemodel.

Not the `illustration2vec` package: it needs chainer 7.8.1 (broken under NumPy 2 and protobuf >= 4) and
leaves dropout on at inference (`chainer.using_config` without `with`). Here the net runs in eval mode,
batched, on the GPU when there is one; `parse_caffemodel` reads the protobuf wire format by hand, and
layer widths come from the blobs, so a small synthetic model loads through the same code (the tests).
torch is imported inside functions only. Weights: illust2vec_tag_ver200.caffemodel + tag_list.json from
https://github.com/rezoo/illustration2vec/releases (v2.0.0).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

I2V_RELEASES_URL = "https://github.com/rezoo/illustration2vec/releases"
I2V_WEIGHTS_NAME = "illust2vec_tag_ver200.caffemodel"
I2V_TAGS_NAME = "tag_list.json"

INPUT_PX = 224
MEAN_BGR = (164.76139251, 167.47864617, 181.13838569)
NUM_TAGS = 1539
# Where each kind of tag sits in the 1,539 outputs (i2v/base.py, estimate_top_tags).
SECTIONS = {"general": (0, 512), "character": (512, 1024), "copyright": (1024, 1536), "rating": (1536, 1539)}
CONV_LAYERS = (
    "conv1_1",
    "conv2_1",
    "conv3_1",
    "conv3_2",
    "conv4_1",
    "conv4_2",
    "conv5_1",
    "conv5_2",
    "conv6_1",
    "conv6_2",
    "conv6_3",
    "conv6_4",
)
POOL_AFTER = {
    "conv1_1": "pool1",
    "conv2_1": "pool2",
    "conv3_2": "pool3",
    "conv4_2": "pool4",
    "conv5_2": "pool5",
}
DROPOUT_BEFORE = "conv6_4"  # the prototxt's dropout (ratio 0.5) sits between relu6_3 and conv6_4


class CaffeModelError(ValueError):
    """The .caffemodel (or tag list) cannot be used; the message says what is wrong and what to do."""


# --------------------------------------------------------------------------------------------------
# Protobuf wire format (https://protobuf.dev/programming-guides/encoding/), read by hand

WIRE_VARINT, WIRE_FIXED64, WIRE_LEN, WIRE_FIXED32 = 0, 1, 2, 5


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A base-128 varint at `pos` -> (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CaffeModelError("truncated protobuf: a varint runs past the end of the file")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CaffeModelError("corrupt protobuf: a varint longer than 10 bytes")


def iter_fields(buf: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of each field in `buf[start:end]`.

    value: an int for varints; a (start, end) span into `buf` for length-delimited, fixed32 and
    fixed64 fields (payloads are never copied here, so 200 MB of weights cost nothing to skip).
    """
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise CaffeModelError(f"corrupt protobuf: field number 0 at byte {pos}")
        if wire == WIRE_VARINT:
            value, pos = read_varint(buf, pos)
        elif wire == WIRE_LEN:
            size, pos = read_varint(buf, pos)
            value, pos = (pos, pos + size), pos + size
        elif wire == WIRE_FIXED32:
            value, pos = (pos, pos + 4), pos + 4
        elif wire == WIRE_FIXED64:
            value, pos = (pos, pos + 8), pos + 8
        else:
            raise CaffeModelError(f"unsupported protobuf wire type {wire} (field {number}) at byte {pos}")
        if pos > end:
            raise CaffeModelError(f"truncated protobuf: field {number} runs past its message")
        yield number, wire, value


def _varints(buf: bytes, wire: int, value) -> list[int]:
    """A repeated integer field's values, packed or not."""
    if wire == WIRE_VARINT:
        return [value]
    if wire != WIRE_LEN:
        raise CaffeModelError(f"expected an integer field, got wire type {wire}")
    out, pos = [], value[0]
    while pos < value[1]:
        v, pos = read_varint(buf, pos)
        out.append(v)
    return out


def _string(buf: bytes, span) -> str:
    return bytes(buf[span[0] : span[1]]).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------------
# caffe.proto, the parts needed here

# NetParameter
NET_LAYERS_V1, NET_LAYER = 2, 100
# LayerParameter (current) / V1LayerParameter (before 2015)
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS, LAYER_CONV = 1, 2, 7, 106
V1_NAME, V1_TYPE, V1_BLOBS, V1_CONV = 4, 5, 6, 10
V1_TYPES = {4: "Convolution", 6: "Dropout", 14: "InnerProduct", 17: "Pooling", 18: "ReLU", 19: "Sigmoid"}
# BlobProto / BlobShape
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4  # legacy 4-D shape
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1
# ConvolutionParameter
CONV_BIAS_TERM, CONV_PAD, CONV_KERNEL, CONV_GROUP, CONV_STRIDE = 2, 3, 4, 5, 6
CONV_PAD_H, CONV_PAD_W, CONV_KERNEL_H, CONV_KERNEL_W, CONV_STRIDE_H, CONV_STRIDE_W = 9, 10, 11, 12, 13, 14
CONV_DILATION = 18


@dataclass(frozen=True)
class ConvParams:
    """A convolution's geometry as (h, w) pairs."""

    pad: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    group: int = 1


@dataclass
class CaffeLayer:
    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)  # float32, in their stored shapes
    conv: ConvParams | None = None  # None when the file carries no convolution_param


def parse_blob(buf: bytes, start: int, end: int) -> np.ndarray:
    """BlobProto -> float32 array shaped by `shape.dim`, else by the legacy num/channels/height/width."""
    dims: list[int] = []
    legacy = {BLOB_NUM: 0, BLOB_CHANNELS: 0, BLOB_HEIGHT: 0, BLOB_WIDTH: 0}
    chunks: list[np.ndarray] = []
    singles: list[float] = []
    for number, wire, value in iter_fields(buf, start, end):
        if number == BLOB_SHAPE and wire == WIRE_LEN:
            for n2, w2, v2 in iter_fields(buf, value[0], value[1]):
                if n2 == SHAPE_DIM:
                    dims.extend(_varints(buf, w2, v2))
        elif number in legacy and wire == WIRE_VARINT:
            legacy[number] = value
        elif number == BLOB_DATA:
            if wire == WIRE_LEN:  # packed (how Caffe writes it)
                a, b = value
                if (b - a) % 4:
                    raise CaffeModelError("corrupt blob: packed float data not a multiple of 4 bytes")
                chunks.append(np.frombuffer(buf, dtype="<f4", count=(b - a) // 4, offset=a))
            elif wire == WIRE_FIXED32:  # one float per field (also legal protobuf)
                singles.append(struct.unpack_from("<f", buf, value[0])[0])
        elif number == BLOB_DOUBLE_DATA and wire == WIRE_LEN:
            a, b = value
            chunks.append(np.frombuffer(buf, dtype="<f8", count=(b - a) // 8, offset=a).astype(np.float32))
    if singles:
        chunks.append(np.asarray(singles, dtype=np.float32))
    data = np.concatenate(chunks).astype(np.float32, copy=True) if chunks else np.zeros(0, np.float32)
    if not dims:
        dims = [legacy[k] for k in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH)]
    if int(np.prod(dims)) != data.size:
        raise CaffeModelError(f"corrupt blob: shape {tuple(dims)} does not hold {data.size} values")
    return data.reshape(dims)


def _pair(values: list[int], h: int | None, w: int | None, default: int) -> tuple[int, int]:
    if h is not None or w is not None:
        return (h if h is not None else default, w if w is not None else default)
    if not values:
        return (default, default)
    return (values[0], values[1] if len(values) > 1 else values[0])


def parse_conv_params(buf: bytes, start: int, end: int) -> ConvParams:
    """ConvolutionParameter -> pad/stride/dilation/group (Caffe's defaults: 0, 1, 1, 1)."""
    rep: dict[int, list[int]] = {CONV_PAD: [], CONV_STRIDE: [], CONV_DILATION: []}
    one: dict[int, int] = {}
    for number, wire, value in iter_fields(buf, start, end):
        if number in rep:
            rep[number].extend(_varints(buf, wire, value))
        elif wire == WIRE_VARINT:
            one[number] = value
    return ConvParams(
        pad=_pair(rep[CONV_PAD], one.get(CONV_PAD_H), one.get(CONV_PAD_W), 0),
        stride=_pair(rep[CONV_STRIDE], one.get(CONV_STRIDE_H), one.get(CONV_STRIDE_W), 1),
        dilation=_pair(rep[CONV_DILATION], None, None, 1),
        group=one.get(CONV_GROUP, 1),
    )


def parse_caffemodel(buf: bytes) -> list[CaffeLayer]:
    """A serialized NetParameter -> its layers (both the `layer` and the V1 `layers` form)."""
    layers: list[CaffeLayer] = []
    for number, wire, value in iter_fields(buf):
        if wire != WIRE_LEN or number not in (NET_LAYER, NET_LAYERS_V1):
            continue
        v1 = number == NET_LAYERS_V1
        f_name, f_type, f_blobs, f_conv = (
            (V1_NAME, V1_TYPE, V1_BLOBS, V1_CONV) if v1 else (LAYER_NAME, LAYER_TYPE, LAYER_BLOBS, LAYER_CONV)
        )
        layer = CaffeLayer(name="", type="")
        for n2, w2, v2 in iter_fields(buf, value[0], value[1]):
            if n2 == f_name and w2 == WIRE_LEN:
                layer.name = _string(buf, v2)
            elif n2 == f_type:
                layer.type = V1_TYPES.get(v2, f"V1:{v2}") if v1 and w2 == WIRE_VARINT else _string(buf, v2)
            elif n2 == f_blobs and w2 == WIRE_LEN:
                layer.blobs.append(parse_blob(buf, v2[0], v2[1]))
            elif n2 == f_conv and w2 == WIRE_LEN:
                layer.conv = parse_conv_params(buf, v2[0], v2[1])
        layers.append(layer)
    return layers


def read_caffemodel(path: str | os.PathLike) -> list[CaffeLayer]:
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise CaffeModelError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        layers = parse_caffemodel(buf)
    except CaffeModelError as e:
        raise CaffeModelError(f"{path}: {e}") from None
    if not layers:
        raise CaffeModelError(f"{path}: no layers found; is this a .caffemodel (binary NetParameter)?")
    return layers


# --------------------------------------------------------------------------------------------------
# Tags


def load_tag_list(path: str | os.PathLike) -> list[str]:
    """tag_list.json (a JSON list of 1,539 names, i2v spelling; or the release's tag_list.json.gz as
    downloaded) -> Safebooru spelling ("multiple_girls")."""
    import gzip

    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic: the release ships tag_list.json.gz
            raw = gzip.decompress(raw)
        tags = json.loads(raw.decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaffeModelError(f"{path}: not a readable JSON tag list ({e})") from None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise CaffeModelError(f"{path}: expected a JSON list of tag names")
    return ["_".join(t.strip().lower().split()) for t in tags]


# --------------------------------------------------------------------------------------------------
# The network


def check_i2v_layers(layers: Sequence[CaffeLayer]) -> dict[str, CaffeLayer]:
    """The 12 convolutions by name, checked to chain (3 -> ... -> n_tags); a clear error otherwise."""
    by_name = {layer.name: layer for layer in layers if layer.blobs}
    missing = [name for name in CONV_LAYERS if name not in by_name]
    if missing:
        have = ", ".join(sorted(by_name)) or "none"
        hint = (
            " This looks like the feature model (illust2vec_ver200.caffemodel); tags need "
            f"{I2V_WEIGHTS_NAME}."
            if "encode1" in by_name
            else ""
        )
        raise CaffeModelError(
            f"not an Illustration2Vec tag model: missing layers {', '.join(missing)} "
            f"(layers with weights: {have}).{hint}"
        )
    in_channels = 3
    for name in CONV_LAYERS:
        blobs = by_name[name].blobs
        w = blobs[0]
        if w.ndim != 4:
            raise CaffeModelError(f"{name}: weights have shape {w.shape}, expected (out, in, kh, kw)")
        if w.shape[1] != in_channels:
            raise CaffeModelError(
                f"{name}: takes {w.shape[1]} channels but the layer before gives {in_channels}"
            )
        if len(blobs) > 1 and blobs[1].size != w.shape[0]:
            raise CaffeModelError(f"{name}: {blobs[1].size} biases for {w.shape[0]} outputs")
        in_channels = w.shape[0]
    return {name: by_name[name] for name in CONV_LAYERS}


def build_i2v_net(layers: Sequence[CaffeLayer]):
    """The tag network as a `torch.nn.Sequential` holding the given weights, in eval mode, as i2v runs it:
    conv 3x3 (pad 1) + ReLU stacks conv1_1 | conv2_1 | conv3_1-2 | conv4_1-2 | conv5_1-2, each followed by
    a 2x2 max pool (ceil mode, as Caffe), then conv6_1-3, conv6_4 (no ReLU), a global average, a sigmoid.

    `(B, 3, 224, 224) float32` (BGR minus mean) -> `(B, n_tags) float32` probabilities in [0, 1].
    """
    import torch
    from torch import nn

    convs = check_i2v_layers(layers)
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for name in CONV_LAYERS:
        layer = convs[name]
        w = layer.blobs[0]
        kh, kw = w.shape[2:]
        # Without a convolution_param in the file, i2v's prototxt values: "same" padding, stride 1.
        geometry = layer.conv or ConvParams(pad=(kh // 2, kw // 2))
        conv = nn.Conv2d(
            w.shape[1] * geometry.group,
            w.shape[0],
            (kh, kw),
            stride=geometry.stride,
            padding=geometry.pad,
            dilation=geometry.dilation,
            groups=geometry.group,
            bias=len(layer.blobs) > 1,
        )
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w))
            if conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(layer.blobs[1].reshape(-1)))
        if name == DROPOUT_BEFORE:
            modules["drop6_3"] = nn.Dropout(0.5)
        modules[name] = conv
        if name != "conv6_4":
            modules["relu" + name[4:]] = nn.ReLU(inplace=True)
        if name in POOL_AFTER:
            modules[POOL_AFTER[name]] = nn.MaxPool2d(2, stride=2, ceil_mode=True)
    modules["pool6"] = nn.AdaptiveAvgPool2d(1)  # = i2v's average_pooling_2d(ksize=7) at 224 px
    modules["flatten"] = nn.Flatten()
    modules["prob"] = nn.Sigmoid()
    net = nn.Sequential(modules)
    net.requires_grad_(False)
    return net.eval()


def preprocess(images: Sequence[np.ndarray]) -> np.ndarray:
    """RGB `(H, W, 3) uint8` images, any sizes -> `(N, 3, 224, 224) float32` BGR minus i2v's mean.

    Resized (aspect not kept, as i2v does) with Pillow's bilinear filter, which widens on downscale
    (i2v's skimage resize did not: its results on large images differ slightly, ours alias less).
    """
    out = np.empty((len(images), 3, INPUT_PX, INPUT_PX), np.float32)
    for i, rgb in enumerate(images):
        img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
        if img.size != (INPUT_PX, INPUT_PX):
            img = img.resize((INPUT_PX, INPUT_PX), Image.Resampling.BILINEAR)
        x = np.asarray(img, dtype=np.float32)[:, :, ::-1] - np.asarray(MEAN_BGR, np.float32)
        out[i] = x.transpose(2, 0, 1)
    return out


def load_for_i2v(path: str | os.PathLike) -> np.ndarray:
    """A file -> `(224, 224, 3) uint8` RGB on white, EXIF-rotated (JPEGs decoded at reduced scale)."""
    from .measure import open_image

    img, _ = open_image(Path(path).read_bytes(), max_side_px=2 * INPUT_PX)
    return np.asarray(img.resize((INPUT_PX, INPUT_PX), Image.Resampling.BILINEAR))


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CaffeModelError(f"device={device!r} asked for, but torch sees no CUDA device; use cpu or auto")
    return device


class Illustration2Vec:
    """Tag probabilities for illustrations: `Illustration2Vec.load(weights, tags).predict(images)`."""

    def __init__(self, net, tags: Sequence[str], *, device: str = "cpu", fingerprint: str = ""):
        self.net = net
        self.tags = list(tags)
        self.index = {t: i for i, t in enumerate(self.tags)}
        self.device = device
        self.fingerprint = fingerprint

    @classmethod
    def load(
        cls, weights: str | os.PathLike, tags: str | os.PathLike | None = None, *, device: str = "auto"
    ) -> Illustration2Vec:
        """Read the .caffemodel once; `tags` defaults to tag_list.json beside it."""
        weights = Path(weights)
        tags_path = Path(tags) if tags else weights.with_name(I2V_TAGS_NAME)
        if not tags and not tags_path.is_file() and weights.with_name(I2V_TAGS_NAME + ".gz").is_file():
            tags_path = weights.with_name(I2V_TAGS_NAME + ".gz")  # as downloaded, not yet gunzipped
        if not weights.is_file():
            raise CaffeModelError(
                f"{weights}: no such file. Download {I2V_WEIGHTS_NAME} and {I2V_TAGS_NAME} "
                f"(as tag_list.json.gz) from {I2V_RELEASES_URL} (v2.0.0)"
            )
        if not tags_path.is_file():
            raise CaffeModelError(
                f"{tags_path}: no tag list. Download {I2V_TAGS_NAME}.gz from {I2V_RELEASES_URL} (v2.0.0) "
                "and put it next to the weights (gunzipped or not), or pass --i2v-tags"
            )
        tag_names = load_tag_list(tags_path)
        layers = read_caffemodel(weights)
        net = build_i2v_net(layers)
        n_out = net.conv6_4.out_channels
        if n_out != len(tag_names):
            raise CaffeModelError(
                f"{weights} has {n_out} outputs but {tags_path} lists {len(tag_names)} tags; "
                f"use the pair from the same release ({NUM_TAGS} tags)"
            )
        device = resolve_device(device)
        # Names cached tag scores: the weights' size and first MiB, and the tag list.
        digest = hashlib.sha1(usedforsecurity=False)
        with weights.open("rb") as f:
            digest.update(f.read(1 << 20))
        digest.update(str(weights.stat().st_size).encode())
        digest.update(tags_path.read_bytes())
        fingerprint = digest.hexdigest()[:16]
        return cls(net.to(device), tag_names, device=device, fingerprint=fingerprint)

    def predict(self, images: Sequence[np.ndarray], *, batch_size: int = 16) -> np.ndarray:
        """RGB `(H, W, 3) uint8` images -> `(N, n_tags) float32` probabilities. Deterministic (eval mode)."""
        import torch

        out = np.empty((len(images), len(self.tags)), np.float32)
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(preprocess(images[start : start + batch_size])).to(self.device)
                out[start : start + len(x)] = self.net(x).float().cpu().numpy()
        return out

    def predict_files(self, paths: Sequence[str | os.PathLike], *, batch_size: int = 16) -> np.ndarray:
        """Like `predict`, reading files `batch_size` at a time (memory stays flat)."""
        out = np.empty((len(paths), len(self.tags)), np.float32)
        for start in range(0, len(paths), batch_size):
            batch = [load_for_i2v(p) for p in paths[start : start + batch_size]]
            out[start : start + len(batch)] = self.predict(batch, batch_size=batch_size)
        return out

    @property
    def rating_tags(self) -> set[str]:
        """The rating outputs' names (safe, questionable, explicit), which describe no content."""
        return set(self.tags[self.section("rating")]) if len(self.tags) == NUM_TAGS else set()

    def section(self, name: str) -> slice:
        """The outputs of one kind of tag ("general", "character", "copyright", "rating")."""
        a, b = SECTIONS[name]
        return slice(a, min(b, len(self.tags)))

    def estimate_tags(self, probs: np.ndarray, threshold: float = 0.5) -> list[str]:
        """The general/character/copyright tags of one image at or above `threshold` (not rating)."""
        a, b = 0, SECTIONS["copyright"][1]
        keep = np.flatnonzero(probs[a:b] >= threshold) + a
        return sorted(self.tags[i] for i in keep)
