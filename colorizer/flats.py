"""Flat colors: one color per closed region of the line art, as a comic colorist's flatting pass.

    regions = segment(lines)                                  # lines (H, W) float32 in [0, 1], 1 = paper
    flats = fill(regions, network_rgb, hint_rgb, hint_alpha)  # (H, W, 3) float32 in [0, 1], no lines

Segmentation is trapped-ball filling (style2paints V3/V4): a ball of radius r cannot pass a gap in an
outline narrower than 2r, so regions are grown from where the largest ball fits, then smaller balls fill
the narrow parts; a narrow part that touches one region only is that region's tail and joins it. Every pixel
ends in a region, the lines too (flats run under the ink, so no paper shows at their edges).

Each region takes one color: the user's hint inside it, exactly; else the network's mean color there. Two
hint colors in one region split it between them by shortest paths that cost more near a line, so they meet
inside a gap (as LazyBrush cuts at gaps). The paper (the region holding most of the frame) stays white unless
a background color is asked for; a hint that leaked into it through an open outline takes only what lies
behind the opening. The frame counts as a line: a figure cut by it is closed. A hint on the paper behind an
opening too wide for that (a bust whose body stops above the frame) colors its pocket: the paper inside the
drawing's convex hull, closed by the hull's edge, where the network (which saw the hint) agrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

INK_THRESHOLD = 0.7  # line art below this is ink (anti-aliased edges included: they close gaps)
RADII_PX = (4, 2, 1)  # trapped-ball radii at the working scale: gaps up to ~8 px are closed
SAME_COLOR = 12.0  # hint colors closer than this (max over R, G, B, 0..255) are one color
PAPER_MIN_BORDER_SHARE = 0.1  # a region holding this share of the frame is paper (if it holds the most)
PAPER_ALSO_BORDER_SHARE = 0.25  # ...and any other region holding this much of it
PASSAGE_PX = 8.0  # closer than this to a line, a step in a region costs more (up to PASSAGE_COST)
PASSAGE_COST = 20.0
SPLIT_MAX_PX = 16_000  # a region split on more pixels than this is split on a coarser grid
LEAK_CUT_RATIO = 1.2  # a leaked hint's cut must be shorter than this x sqrt(area behind it)
HINT_ALPHA = 0.5  # a hint pixel: painted with at least this opacity
AGREE = 0.3  # a hint on open paper takes the pixels where the network went this far from paper toward it
AGREE_SIGMA_PX = 2.0  # ...judged on the network's colors blurred by this much (no ragged edges)
AGREE_WHOLE = 0.6  # ...and its whole pocket when that covers this share of it


@dataclass
class Regions:
    """A segmentation of line art: `labels (H, W) int32` in 1..n (every pixel, ink included),
    `ink (H, W) bool`, `dist (H, W) float32` (px to the nearest ink), `paper (n + 1,) bool` by label."""

    labels: np.ndarray
    n: int
    ink: np.ndarray
    dist: np.ndarray
    paper: np.ndarray


def _nearest_labels(labels: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel, the label of the nearest pixel where `known` is True, and the distance to it."""
    dist, idx = cv2.distanceTransformWithLabels(
        (~known).astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )
    lut = np.zeros(int(idx.max()) + 1, np.int32)
    lut[idx[known]] = labels[known]
    return lut[idx], dist


def _neighbor_pairs(a: np.ndarray, b: np.ndarray, offset: int) -> np.ndarray:
    """Unique `(a_label, b_label)` pairs of pixels `offset` px apart horizontally or vertically, both > 0."""
    pairs = []
    for s1, s2 in (
        ((slice(None), slice(offset, None)), (slice(None), slice(None, -offset))),
        ((slice(None), slice(None, -offset)), (slice(None), slice(offset, None))),
        ((slice(offset, None), slice(None)), (slice(None, -offset), slice(None))),
        ((slice(None, -offset), slice(None)), (slice(offset, None), slice(None))),
    ):
        x, y = a[s1], b[s2]
        keep = (x > 0) & (y > 0)
        pairs.append(np.stack([x[keep], y[keep]], axis=1))
    p = np.concatenate(pairs)
    return np.unique(p, axis=0) if len(p) else p.reshape(0, 2)


def segment(
    lines: np.ndarray, *, ink_threshold: float = INK_THRESHOLD, radii: tuple[int, ...] = RADII_PX
) -> Regions:
    """Trapped-ball segmentation of line art `(H, W) float32 in [0, 1]` (1 = paper) -> `Regions`."""
    ink = lines < ink_threshold
    h, w = ink.shape
    free = ~ink
    # The frame is a line too: a figure cut by the edge of the picture (a bust, a car leaving the panel) is
    # closed by it, as a colorist reads it.
    dist = cv2.distanceTransform(np.pad(free, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    labels = np.zeros((h, w), np.int32)
    n = 0
    for i, r in enumerate(sorted(radii, reverse=True)):
        seeds = (dist > r) & (labels == 0)
        count, comp = cv2.connectedComponents(seeds.astype(np.uint8), connectivity=4)
        if count <= 1:
            continue
        comp = comp.astype(np.int32)
        if i > 0 and n > 0:
            # A narrow part touching exactly one region is that region's tail (an ear tip, a sleeve end);
            # one touching two or more is a passage between them (a gap): it stays a region of its own.
            pairs = np.unique(np.concatenate([_neighbor_pairs(comp, labels, d) for d in (1, 2)]), axis=0)
            if len(pairs):
                touched = np.bincount(pairs[:, 0], minlength=count)
                owner = np.zeros(count, np.int32)
                single = touched == 1
                sel = single[pairs[:, 0]]
                owner[pairs[sel, 0]] = pairs[sel, 1]
                new_ids = np.where(owner > 0, owner, 0)
                fresh = np.flatnonzero((owner == 0) & (np.arange(count) > 0))
                new_ids[fresh] = n + 1 + np.arange(len(fresh))
                n += len(fresh)
                comp = new_ids[comp]
            else:
                comp = np.where(comp > 0, comp + n, 0)
                n += count - 1
        else:
            comp = np.where(comp > 0, comp + n, 0)
            n += count - 1
        labels[seeds] = comp[seeds]
        if i == len(radii) - 1:
            break  # the last rims go to the nearest region below, with the ink
        # Give back what the ball's radius took off each region (its rim along the lines), within the free area.
        nearest, d = _nearest_labels(labels, labels > 0)
        grow = free & (labels == 0) & (d <= r + 1.5)
        labels[grow] = nearest[grow]
    if n == 0:  # no room at all (a blank or all-ink image): one region
        labels[:] = 1
        n = 1
    elif (labels == 0).any():
        nearest, _ = _nearest_labels(labels, labels > 0)
        labels = np.where(labels > 0, labels, nearest)
    # Renumber densely (tails merged away some numbers).
    used = np.unique(labels)
    lut = np.zeros(int(used.max()) + 1, np.int32)
    lut[used] = np.arange(1, len(used) + 1)
    labels = lut[labels]
    n = len(used)
    return Regions(labels=labels, n=n, ink=ink, dist=dist, paper=_paper(labels, n))


def _paper(labels: np.ndarray, n: int) -> np.ndarray:
    """Which labels are the paper: the region holding the most of the frame (at least a tenth of it), and any
    other holding a quarter of it."""
    frame = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    share = np.bincount(frame, minlength=n + 1) / max(1, len(frame))
    paper = share >= PAPER_ALSO_BORDER_SHARE
    top = int(np.argmax(share))
    if share[top] >= PAPER_MIN_BORDER_SHARE:
        paper[top] = True
    paper[0] = False
    return paper


def _region_means(labels: np.ndarray, n: int, rgb: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted mean color `(n + 1, 3)` of each label."""
    lab = labels.ravel()
    wt = weight.ravel().astype(np.float64)
    total = np.bincount(lab, weights=wt, minlength=n + 1)
    out = np.stack(
        [np.bincount(lab, weights=rgb[..., c].ravel() * wt, minlength=n + 1) for c in range(3)], axis=1
    )
    return out / np.maximum(total, 1e-9)[:, None]


@dataclass
class _Hint:
    color: np.ndarray  # (3,) in [0, 1]
    pixels: np.ndarray  # flat indices of its hint pixels off the ink


def _hints(hint_rgb: np.ndarray | None, hint_alpha: np.ndarray | None, ink: np.ndarray) -> list[_Hint]:
    """The painted pixels grouped by color: one hint per distinct color (a user's many dots of one color are one
    intention; colors closer than SAME_COLOR are one). The colors are those painted solidly (a pixel whose eight
    neighbours share its color); blends where two strokes overlap or where a brush edge is soft go to the nearest
    of them, so two touching strokes stay two colors and no color is made up."""
    if hint_rgb is None or hint_alpha is None:
        return []
    painted = hint_alpha >= HINT_ALPHA
    if not painted.any():
        return []
    q = np.clip(np.rint(hint_rgb * 255), 0, 255).astype(np.int32)
    key = np.where(painted, (q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2], -1)
    padded = np.pad(key, 1, constant_values=-1)
    h, w = key.shape
    solid = painted.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            solid &= padded[dy : dy + h, dx : dx + w] == key
    # 1-px dots have no solid pixel: take them as they are
    source = key[solid] if solid.any() else key[painted]
    values, counts = np.unique(source, return_counts=True)
    values = values[np.argsort(-counts, kind="stable")]
    candidates = np.stack([(values >> 16) & 255, (values >> 8) & 255, values & 255], axis=1)
    seeds: list[np.ndarray] = []
    left = np.ones(len(candidates), bool)
    while left.any():  # the most painted color of each group speaks for it; its near colors join it
        seed = candidates[np.argmax(left)]
        seeds.append(seed)
        left &= np.abs(candidates - seed).max(axis=1) > SAME_COLOR
    flat = np.flatnonzero(painted.ravel())
    colors = q.reshape(-1, 3)[flat]
    dist = np.stack([np.abs(colors - s).max(axis=1) for s in seeds], axis=1)
    nearest = np.argmin(dist, axis=1)
    off_ink = ~ink.ravel()[flat]
    hints = []
    for g, seed in enumerate(seeds):
        mine = nearest == g
        close = mine & (dist[:, g] <= SAME_COLOR)  # the color: the mean of what was painted as it
        color = colors[close].mean(axis=0) if close.any() else seed.astype(np.float64)
        where = flat[mine & off_ink] if (mine & off_ink).any() else flat[mine]
        hints.append(_Hint(np.asarray(color, np.float64) / 255.0, where))
    return hints


def _split(region: np.ndarray, dist: np.ndarray, markers: list[np.ndarray]) -> np.ndarray:
    """Split the pixels of `region` (bool) between `markers` (flat-index arrays): every pixel goes to the marker
    it is cheapest to reach without leaving the region, a step costing more the closer it runs to a line
    (PASSAGE_COST x where it touches one, 1 in the open). Where the region is open this is a geodesic Voronoi
    diagram; a gap in an outline is expensive to cross from either side, so two colors meet inside it.
    Returns `(H, W) int32` in 0..len(markers) (0 outside the region)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    h, w = region.shape
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    # Large regions are split on a reduced grid (the cut is then refined by nothing: it lies in open paper
    # or inside a gap, where a pixel more or less does not show).
    step = max(1, int(np.ceil(np.sqrt(int(region[y0:y1, x0:x1].sum()) / SPLIT_MAX_PX))))
    sub = region[y0:y1:step, x0:x1:step]
    d = dist[y0:y1:step, x0:x1:step] / step
    cost = 1.0 + (PASSAGE_COST - 1.0) * np.clip(1.0 - d * step / PASSAGE_PX, 0.0, 1.0)
    sh, sw = sub.shape
    ids = np.full(sub.shape, -1, np.int64)
    ids[sub] = np.arange(int(sub.sum()))
    rows, cols, weights = [], [], []
    for dy, dx, length in ((0, 1, 1.0), (1, 0, 1.0), (1, 1, 1.4142), (1, -1, 1.4142)):
        a = ids[: sh - dy, max(0, -dx) : sw - max(0, dx)]
        b = ids[dy:, max(0, dx) : sw - max(0, -dx) if dx < 0 else sw]
        ca = cost[: sh - dy, max(0, -dx) : sw - max(0, dx)]
        cb = cost[dy:, max(0, dx) : sw - max(0, -dx) if dx < 0 else sw]
        ok = (a >= 0) & (b >= 0)
        rows.append(a[ok])
        cols.append(b[ok])
        weights.append(0.5 * (ca[ok] + cb[ok]) * length)
    n = int(sub.sum())
    graph = coo_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    ).tocsr()
    node_label = np.zeros(n, np.int32)
    for k, idx in reversed(list(enumerate(markers))):  # where markers overlap, the first one wins
        yy, xx = (idx // w - y0) // step, (idx % w - x0) // step
        ok = (yy >= 0) & (yy < sh) & (xx >= 0) & (xx < sw)
        node = ids[yy[ok], xx[ok]]
        node_label[node[node >= 0]] = k + 1
    sources = np.flatnonzero(node_label)
    if len(sources) == 0:
        return np.zeros(region.shape, np.int32)
    _, _, nearest = dijkstra(graph, directed=False, indices=sources, return_predecessors=True, min_only=True)
    lut = np.where(nearest >= 0, node_label[np.maximum(nearest, 0)], 0)
    part = np.zeros(sub.shape, np.int32)
    part[sub] = lut
    if step > 1:
        part = cv2.resize(part.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        part = part.astype(np.int32)
    out = np.zeros(region.shape, np.int32)
    out[y0:y1, x0:x1] = np.where(region[y0:y1, x0:x1], part[: y1 - y0, : x1 - x0], 0)
    return out


def _cut_length(part: np.ndarray, rest: np.ndarray) -> int:
    """Pixels of `part` 4-adjacent to `rest` (pass both without the ink: a cut runs through paper)."""
    edge = np.zeros_like(part)
    edge[1:] |= rest[:-1]
    edge[:-1] |= rest[1:]
    edge[:, 1:] |= rest[:, :-1]
    edge[:, :-1] |= rest[:, 1:]
    return int((part & edge).sum())


def fill(
    regions: Regions,
    network_rgb: np.ndarray,
    hint_rgb: np.ndarray | None = None,
    hint_alpha: np.ndarray | None = None,
    *,
    background: tuple[float, float, float] | None = None,
    paper_takes_hints: bool = False,
) -> np.ndarray:
    """One color per region -> flats `(H, W, 3) float32 in [0, 1]` (no lines).

    `network_rgb (H, W, 3)` in [0, 1]: the network's colors at this size. `hint_rgb (H, W, 3)` (not
    premultiplied) and `hint_alpha (H, W)` in [0, 1]: what the user painted. `background`: the paper's
    color (default white). `paper_takes_hints`: a hint on the paper colors the whole paper (a colored
    background) instead of only what it reaches through a gap.
    """
    labels, n, dist = regions.labels, regions.n, regions.dist
    h, w = labels.shape
    away = np.clip(dist - 1.0, 0.0, 2.0)  # the network blurs along the lines: trust pixels off them
    away[regions.ink] = 0.0
    colors = _region_means(labels, n, network_rgb, away + 1e-3)
    paper_color = np.asarray(background if background is not None else (1.0, 1.0, 1.0), np.float64)
    colors[regions.paper] = paper_color
    out_labels = labels
    pockets: np.ndarray | None = None  # made when a hint on open paper needs them
    hints = _hints(hint_rgb, hint_alpha, regions.ink)
    if hints:
        flat_labels = labels.ravel()
        per_region: dict[int, list[int]] = {}
        for k, hint in enumerate(hints):
            lab, cnt = np.unique(flat_labels[hint.pixels], return_counts=True)
            total = cnt.sum()
            for region, c in zip(lab.tolist(), cnt.tolist(), strict=True):
                # a brush spilling over a line into the next region does not color it
                if c >= 0.25 * total or c >= 0.002 * h * w:
                    per_region.setdefault(region, []).append(k)
        for region, ks in per_region.items():
            is_paper = bool(regions.paper[region])
            if is_paper and paper_takes_hints and len(ks) == 1:
                colors[region] = hints[ks[0]].color
                continue
            if len(ks) == 1 and not is_paper:
                colors[region] = hints[ks[0]].color
                continue
            mask = labels == region
            markers = [hints[k].pixels for k in ks]
            if is_paper and not paper_takes_hints:
                frame = np.zeros((h, w), bool)
                frame[[0, -1], :] = True
                frame[:, [0, -1]] = True
                markers.append(np.flatnonzero((frame & mask).ravel()))
            split = _split(mask, dist, markers)
            parts: list[tuple[int, np.ndarray]] = []
            open_hints: list[int] = []
            for j, k in enumerate(ks):
                part = split == j + 1
                if is_paper and not paper_takes_hints:
                    # Only what lies behind a gap: a cut short against the area it closes off. A hint in
                    # the open paper (no gap) leaves the paper as paper.
                    cut = _cut_length(part & ~regions.ink, mask & ~part & ~regions.ink)
                    if cut > LEAK_CUT_RATIO * np.sqrt(max(1, part.sum())):
                        open_hints.append(k)
                        continue
                parts.append((k, part))
            if open_hints:
                if pockets is None:
                    pockets = _pockets(regions)
                for k, part in _pocket_parts(
                    pockets, mask, regions, [(k, hints[k].pixels) for k in open_hints]
                ):
                    part = _agreed(part, network_rgb, hints[k], paper_color, regions.ink)
                    if part.any():
                        parts.append((k, part))
            for k, part in parts:
                colors = np.vstack([colors, hints[k].color[None]])
                n += 1
                if out_labels is labels:
                    out_labels = labels.copy()
                out_labels[part] = n
    return colors[out_labels].astype(np.float32)


def _agreed(
    part: np.ndarray, network_rgb: np.ndarray, hint: _Hint, paper_color: np.ndarray, ink: np.ndarray
) -> np.ndarray:
    """What of a pocket a hint on open paper colors: where the network, which saw the hint, moved from the
    paper's color toward the hint's (AGREE of the way, smoothed), the parts joined to the hint, holes filled,
    with the ink along them; the whole pocket when that is most of it. The network knows a figure from the
    background where the lines do not say it (a triangle of paper between an arm and a leg stays white)."""
    axis = hint.color - paper_color
    norm = float(axis @ axis)
    if norm < 1e-6:
        return part
    toward = ((network_rgb - paper_color) @ axis / norm).astype(np.float32)
    toward = cv2.GaussianBlur(toward, (0, 0), AGREE_SIGMA_PX)
    keep = (part & ~ink & (toward >= AGREE)).astype(np.uint8)
    count, comp = cv2.connectedComponents(keep, connectivity=4)
    if count <= 1:
        return np.zeros_like(part)
    ids = np.unique(comp.ravel()[hint.pixels])
    ids = ids[ids > 0]
    if len(ids) == 0:
        return np.zeros_like(part)
    keep = ndimage.binary_fill_holes(np.isin(comp, ids)) & part
    if keep.sum() >= AGREE_WHOLE * (part & ~ink).sum():  # it agrees on most of it: the pocket, clean-edged
        return part
    return part & _with_ink_rim(keep, ink)


def _with_ink_rim(area: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """`area` and the ink within 2 px of it (flats run under the lines)."""
    rim = cv2.dilate(area.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))).astype(bool)
    return area | (rim & ink)


def _dabs_on(mask: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """The hint pixels of the dabs (connected strokes) that lie mostly inside `mask`: a stroke in a closed region
    that spills over its line onto the paper is that region's, and colors no pocket."""
    h, w = mask.shape
    painted = np.zeros(h * w, np.uint8)
    painted[pixels] = 1
    count, dab = cv2.connectedComponents(painted.reshape(h, w), connectivity=8)
    ids = dab.ravel()[pixels]
    inside = np.bincount(ids, weights=mask.ravel()[pixels].astype(np.float64), minlength=count)
    share = inside / np.maximum(np.bincount(ids, minlength=count), 1)
    return pixels[share[ids] > 0.5]


def _pockets(regions: Regions) -> np.ndarray:
    """The paper inside the drawing's convex hull, cut into pieces by the lines and the hull's edge `(H, W)
    int32` (0: not a pocket). An outline left open toward the outside (a bust whose body stops above the
    frame, a sleeve) is closed there by the straight line between its ends, as a colorist closes it."""
    h, w = regions.labels.shape
    points = cv2.findNonZero(regions.ink.astype(np.uint8))
    if points is None or len(points) < 3:
        return np.zeros((h, w), np.int32)
    hull = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    inside = cv2.erode(hull, np.ones((3, 3), np.uint8)).astype(bool)  # the hull's edge is a line
    open_paper = regions.paper[regions.labels] & ~regions.ink & inside
    _, pockets = cv2.connectedComponents(open_paper.astype(np.uint8), connectivity=4)
    return pockets.astype(np.int32)


def _pocket_parts(
    pockets: np.ndarray, mask: np.ndarray, regions: Regions, open_hints: list[tuple[int, np.ndarray]]
) -> list[tuple[int, np.ndarray]]:
    """Hints on open paper that fall in a pocket color it (with the ink around it); several hints in one
    pocket share it as in a region. A pocket that holds half the paper is the background: left as paper."""
    flat = pockets.ravel()
    paper_area = int((mask & ~regions.ink).sum())
    by_pocket: dict[int, list[tuple[int, np.ndarray]]] = {}
    for k, all_pixels in open_hints:
        pixels = _dabs_on(mask, all_pixels)
        if len(pixels) == 0:
            continue
        ids, counts = np.unique(flat[pixels], return_counts=True)
        ok = ids > 0
        if not ok.any():
            continue
        best = int(np.argmax(np.where(ok, counts, 0)))
        if counts[best] >= 0.25 * counts.sum():
            by_pocket.setdefault(int(ids[best]), []).append((k, pixels))
    out = []
    for pocket, members in by_pocket.items():
        room = pockets == pocket
        if room.sum() > 0.5 * paper_area:
            continue
        area = mask & _with_ink_rim(room, regions.ink)
        if len(members) == 1:
            out.append((members[0][0], area))
            continue
        split = _split(area, regions.dist, [pixels for _, pixels in members])
        out += [(k, split == j + 1) for j, (k, _) in enumerate(members)]
    return out
