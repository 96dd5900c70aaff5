"""Near duplicates: a 64-bit pHash (the same bits as `imagehash.phash`), hashes of 5% crops, and a
multi-index Hamming search (`HammingIndex`) that pairs 100,000 images in seconds, not 5e9 comparisons."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import combinations

import numpy as np
from PIL import Image


def _dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    # Unnormalized DCT-II rows (scipy.fftpack.dct's default); a positive scale per row does not move
    # a coefficient across the median, so the bits equal imagehash's.
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))


_DCT_8x32 = _dct_matrix(8, 32)


def phash(img: Image.Image) -> int:
    """64-bit perceptual hash, bit for bit `int(str(imagehash.phash(img)), 16)`.

    Grey, LANCZOS to 32x32, 2-D DCT-II, the 8x8 lowest frequencies compared with their median;
    the first coefficient is the most significant bit.
    """
    pixels = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT_8x32 @ pixels @ _DCT_8x32.T).ravel()  # the 8x8 lowest frequencies
    middle = np.sort(low)[31:33].mean()  # the median of 64 values (np.median is 15x slower here)
    return int.from_bytes(np.packbits(low > middle).tobytes(), "big")


def crop_boxes(width: int, height: int, fraction: float) -> list[tuple[int, int, int, int]]:
    """The 8 boxes that cut `fraction` of the width and/or height at one edge or one corner."""
    dx, dy = round(width * fraction), round(height * fraction)
    w, h = width, height
    return [
        (dx, 0, w, h),
        (0, 0, w - dx, h),
        (0, dy, w, h),
        (0, 0, w, h - dy),
        (dx, dy, w, h),
        (0, 0, w - dx, h - dy),
        (dx, 0, w, h - dy),
        (0, dy, w - dx, h),
    ]


def crop_hashes(img: Image.Image, fractions: Sequence[float]) -> tuple[int, ...]:
    """pHashes of `img` cropped at each edge and corner by each fraction (8 per fraction)."""
    grey_img = img.convert("L")  # once, not per crop
    return tuple(
        phash(grey_img.crop(box)) for f in fractions for box in crop_boxes(grey_img.width, grey_img.height, f)
    )


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (NumPy >= 2 has it built in; a byte table otherwise)."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], np.int64)
    return table[x.reshape(-1, 1).view(np.uint8)].sum(1).reshape(x.shape)


def to_uint64(values: Iterable[int]) -> np.ndarray:
    return np.fromiter((int(v) & 0xFFFFFFFFFFFFFFFF for v in values), dtype=np.uint64)


_TABLE_MAX_BITS = 22  # chunks this narrow get a start table (4M entries, 16 MB at most)


def _split_bits(n_chunks: int, n_bits: int = 64) -> list[tuple[int, int]]:
    """`n_chunks` (shift, width) pieces of a word, widths as equal as possible."""
    base, extra = divmod(n_bits, n_chunks)
    out, shift = [], 0
    for i in range(n_chunks):
        width = base + (1 if i < extra else 0)
        out.append((shift, width))
        shift += width
    return out


def _masks_within(width: int, radius: int) -> np.ndarray:
    """All `width`-bit words with at most `radius` bits set (the probes around a chunk)."""
    masks = [0]
    for r in range(1, radius + 1):
        masks.extend(sum(1 << b for b in bits) for bits in combinations(range(width), r))
    return np.array(masks, dtype=np.uint64)


def choose_chunks(n: int, radius: int) -> int:
    """The number of chunks with the least expected work per query, for well-spread hashes.

    Work = probes (a table lookup costs about 2 candidate checks, a binary search for a chunk too wide
    for a table about 10) + candidates (stored hashes sharing a probed chunk).
    """
    best, best_cost = 1, math.inf
    for m in range(1, min(radius + 1, 16) + 1):
        widths = [w for _, w in _split_bits(m)]
        if max(widths) > 32:
            continue
        sub = radius // m
        cost = 0.0
        for w in widths:
            probes = sum(math.comb(w, i) for i in range(sub + 1))
            cost += probes * (2.2 if w <= _TABLE_MAX_BITS else 10.0) + probes * n / 2.0**w
        if cost < best_cost:
            best, best_cost = m, cost
    return best


class HammingIndex:
    """Every stored 64-bit hash within `radius` bits of a query, without comparing against all.

    Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012): the 64 bits are cut into m chunks;
    two hashes within r bits differ in at most floor(r / m) bits on at least one chunk
    (pigeonhole), so the candidates are the stored hashes whose chunk equals one of the query's
    chunk with up to floor(r / m) bits flipped, found by binary search in a sorted copy of each
    chunk. Candidates are then checked on all 64 bits, so the answer is exact: the same pairs as
    comparing everything, at a cost that grows with n log n for well-spread hashes.
    """

    def __init__(self, hashes: np.ndarray | Sequence[int], *, radius: int, chunks: int | None = None):
        if not 0 <= radius < 64:
            raise ValueError(f"radius must be in [0, 63] bits, got {radius}")
        self.hashes = np.ascontiguousarray(
            hashes if isinstance(hashes, np.ndarray) else to_uint64(hashes), dtype=np.uint64
        )
        self.radius = radius
        self.chunks = _split_bits(chunks or choose_chunks(len(self.hashes), radius))
        self.sub_radius = radius // len(self.chunks)
        self._sorted: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._probes: list[np.ndarray] = []
        for shift, width in self.chunks:
            values = (self.hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
            order = np.argsort(values, kind="stable")
            starts = None
            if width <= _TABLE_MAX_BITS:
                # A table of where each chunk value starts: a probe is two gathers, not a binary search.
                counts = np.bincount(values.astype(np.int64), minlength=1 << width)
                starts = np.zeros((1 << width) + 1, np.int64 if len(values) >= 2**31 else np.int32)
                np.cumsum(counts, out=starts[1:])
            self._sorted.append((values[order], order, starts))
            self._probes.append(_masks_within(width, self.sub_radius))

    def __len__(self) -> int:
        return len(self.hashes)

    def search(
        self, queries: np.ndarray | Sequence[int], *, block: int = 2048, budget: int = 1 << 22
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query index, stored index, distance) with distance <= radius, sorted, no repeats.

        Memory stays bounded: queries go `block` at a time, and candidates are expanded at most
        `budget` at a time even when many stored hashes share a chunk (pictures alike in layout).
        """
        queries = np.ascontiguousarray(
            queries if isinstance(queries, np.ndarray) else to_uint64(queries), dtype=np.uint64
        )
        found_q, found_j = [], []
        for start in range(0, len(queries), block):
            q_block = queries[start : start + block]
            for (shift, width), (values, order, starts), probes in zip(
                self.chunks, self._sorted, self._probes, strict=True
            ):
                chunk = (q_block >> np.uint64(shift)) & np.uint64((1 << width) - 1)
                wanted = (chunk[:, None] ^ probes[None, :]).ravel()  # (B * P,)
                if starts is not None:
                    wanted = wanted.astype(np.int64)
                    lo = starts[wanted].astype(np.int64)
                    counts = starts[wanted + 1] - lo
                else:
                    lo = np.searchsorted(values, wanted, side="left")
                    counts = np.searchsorted(values, wanted, side="right") - lo
                hit = np.flatnonzero(counts)
                if len(hit) == 0:
                    continue
                lo, counts = lo[hit], counts[hit]
                owner = hit // len(probes)  # query (within the block) of each probe
                ends = np.cumsum(counts)
                cuts = np.searchsorted(ends, np.arange(budget, ends[-1], budget), side="left")
                for a, b in zip(np.r_[0, cuts + 1], np.r_[cuts + 1, len(hit)], strict=True):
                    if a >= b:
                        continue
                    c = counts[a:b]
                    first = np.repeat(lo[a:b] - (np.cumsum(c) - c), c) + np.arange(c.sum())
                    j = order[first]
                    q = np.repeat(owner[a:b], c)
                    near = popcount64(q_block[q] ^ self.hashes[j]) <= self.radius
                    found_q.append(q[near] + start)
                    found_j.append(j[near])
        if not found_q:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        q = np.concatenate(found_q).astype(np.int64)
        j = np.concatenate(found_j).astype(np.int64)
        key = np.unique(q * max(len(self.hashes), 1) + j)
        q, j = np.divmod(key, max(len(self.hashes), 1))
        return q, j, popcount64(queries[q] ^ self.hashes[j])

    def query(self, h: int) -> list[tuple[int, int]]:
        """(stored index, distance) of every stored hash within `radius` of `h`, nearest first."""
        _, j, d = self.search(to_uint64([h]))
        return sorted(zip(j.tolist(), d.tolist(), strict=True), key=lambda t: (t[1], t[0]))


def brute_force_pairs(hashes: np.ndarray, radius: int, *, block: int = 1024) -> set[tuple[int, int]]:
    """All (i, j), i < j, within `radius`, by comparing every pair: the reference for tests/benchmarks."""
    out: set[tuple[int, int]] = set()
    for start in range(0, len(hashes), block):
        d = popcount64(hashes[start : start + block, None] ^ hashes[None, :])
        qi, j = np.nonzero(d <= radius)
        out.update((int(a + start), int(b)) for a, b in zip(qi, j, strict=True) if a + start < b)
    return out


def near_duplicate_pairs(
    hashes: Sequence[int], crops: Sequence[Sequence[int]], radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, distance), i < j, whose pHashes are within `radius`, also via crop hashes.

    Image i's crop hashes are matched against every image's full hash: a copy of i cropped 5% at a
    corner hashes like i's own 5%-corner crop. Distance is the smallest found for the pair.
    """
    n = len(hashes)
    full = to_uint64(hashes)
    index = HammingIndex(full, radius=radius)
    owners = [np.arange(n)]
    queries = [full]
    width = max((len(c) for c in crops), default=0)
    if width:
        flat = [(i, h) for i, cs in enumerate(crops) for h in cs]
        owners.append(np.fromiter((i for i, _ in flat), np.int64, len(flat)))
        queries.append(to_uint64(h for _, h in flat))
    owner = np.concatenate(owners)
    q, j, d = index.search(np.concatenate(queries))
    i = owner[q]
    keep = i != j
    a, b, d = np.minimum(i, j)[keep], np.maximum(i, j)[keep], d[keep]
    if len(a) == 0:
        return a, b, d
    order = np.lexsort((d, b, a))
    a, b, d = a[order], b[order], d[order]
    first = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])]
    return a[first], b[first], d[first]


def group_labels(n: int, pairs_a: Iterable[int], pairs_b: Iterable[int]) -> list[int]:
    """Connected components of the pair graph (union-find): a label per item, the smallest member."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(pairs_a, pairs_b, strict=True):
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]
