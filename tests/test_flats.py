"""colorizer.flats: closed regions take their hints exactly, the paper stays paper, gaps do not leak."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from colorizer import flats
from colorizer.metrics import delta_e2000, rgb_to_lab

RED, BLUE, GREEN = (0.88, 0.19, 0.19), (0.11, 0.49, 0.84), (0.18, 0.62, 0.27)


def paper(h: int = 160, w: int = 240) -> np.ndarray:
    return np.ones((h, w), np.float32)


def hint_layer(
    shape: tuple[int, int], dots: list[tuple[int, int, tuple[float, float, float]]], radius: int = 3
):
    """`(hint_rgb, hint_alpha)` with solid dots `(x, y, color)`."""
    rgb = np.zeros((*shape, 3), np.float32)
    alpha = np.zeros(shape, np.float32)
    for x, y, c in dots:
        cv2.circle(rgb, (x, y), radius, c, -1)
        cv2.circle(alpha, (x, y), radius, 1.0, -1)
    return rgb, alpha


def de(a, b) -> float:
    lab = [rgb_to_lab(torch.tensor(np.asarray(c, np.float32)).view(3, 1, 1)) for c in (a, b)]
    return float(delta_e2000(*lab))


def test_each_closed_region_takes_its_hint_exactly_and_the_paper_stays_white():
    lines = paper()
    cv2.circle(lines, (60, 80), 40, 0.0, 2)
    cv2.circle(lines, (170, 80), 40, 0.0, 2)
    cv2.rectangle(lines, (150, 60), (190, 100), 0.0, 2)  # a third region inside the second circle
    network = np.full((*lines.shape, 3), 0.5, np.float32)
    network[..., 1] = 0.8  # the network says pale green everywhere
    rgb, alpha = hint_layer(lines.shape, [(50, 70, RED), (140, 60, BLUE)])
    out = flats.fill(flats.segment(lines), network, rgb, alpha)
    assert de(out[90, 70], RED) < 3 and de(out[80, 60], RED) < 3  # the whole left circle, not just the dot
    assert de(out[120, 170], BLUE) < 3  # the ring of the right circle
    assert de(out[80, 170], (0.5, 0.8, 0.5)) < 3  # the square has no hint: the network's color
    assert np.allclose(out[5, 5], 1.0) and np.allclose(out[150, 230], 1.0)  # paper, far and near the frame
    # one color per region: within the left circle (off its outline) a single color
    inside = np.zeros(lines.shape, np.uint8)
    cv2.circle(inside, (60, 80), 36, 1, -1)
    assert len(np.unique(out[inside > 0].round(4), axis=0)) == 1


def test_a_6_px_gap_in_an_outline_does_not_let_a_hint_leak():
    lines = paper(200, 200)
    cv2.circle(lines, (100, 100), 60, 0.0, 2)
    lines[96:102, 155:170] = 1.0  # a 6 px gap in the right side of the circle
    assert (
        (lines[96:102, 150:] == 1).all()
        and (lines[95, 155:165] < 1).any()
        and (lines[102, 155:165] < 1).any()
    )
    regions = flats.segment(lines)
    assert regions.labels[100, 100] != regions.labels[100, 190]  # the gap is closed: two regions
    rgb, alpha = hint_layer(lines.shape, [(100, 100, RED)])
    out = flats.fill(regions, np.full((200, 200, 3), 0.5, np.float32), rgb, alpha)
    assert de(out[100, 60], RED) < 3
    outside = np.ones((200, 200), bool)
    cv2.circle(outside.view(np.uint8), (100, 100), 64, 0, -1)
    assert np.allclose(out[outside], 1.0)  # all the paper outside stays white, next to the gap too


def test_a_wide_opening_into_the_paper_gives_the_hint_only_what_lies_behind_it():
    """An outline open by 16 px (too wide to close): the hint colors the figure, cut at the opening."""
    lines = paper(200, 200)
    cv2.circle(lines, (100, 100), 60, 0.0, 2)
    lines[92:108, 150:170] = 1.0
    rgb, alpha = hint_layer(lines.shape, [(80, 100, RED)])
    regions = flats.segment(lines)
    assert regions.paper[regions.labels[100, 100]]  # one region with the paper
    out = flats.fill(regions, np.full((200, 200, 3), 0.5, np.float32), rgb, alpha)
    inside = np.zeros((200, 200), np.uint8)
    cv2.circle(inside, (100, 100), 55, 1, -1)
    assert np.mean([de(c, RED) < 3 for c in out[inside > 0]]) > 0.97
    assert np.allclose(out[10:40, 10:190], 1.0) and np.allclose(out[100, 185:], 1.0)


def test_a_hint_on_open_paper_leaves_it_paper_unless_a_background_is_asked_for():
    lines = paper()
    cv2.circle(lines, (60, 80), 30, 0.0, 2)
    rgb, alpha = hint_layer(lines.shape, [(180, 40, BLUE)])
    regions = flats.segment(lines)
    network = np.full((*lines.shape, 3), 0.5, np.float32)
    assert np.allclose(flats.fill(regions, network, rgb, alpha)[40, 180], 1.0)
    colored = flats.fill(regions, network, rgb, alpha, paper_takes_hints=True)
    assert de(colored[150, 10], BLUE) < 3 and de(colored[40, 180], BLUE) < 3
    tinted = flats.fill(regions, network, background=(1.0, 0.9, 0.8))
    assert np.allclose(tinted[5, 5], (1.0, 0.9, 0.8))


def test_two_hint_colors_in_one_region_split_it_at_its_narrowest_passage():
    """Two rooms joined by a 14 px corridor (too wide to close): each room takes its own hint."""
    lines = paper(120, 260)
    cv2.rectangle(lines, (10, 10), (110, 110), 0.0, 2)
    cv2.rectangle(lines, (150, 10), (250, 110), 0.0, 2)
    lines[53:67, 110:152] = 1.0  # open both walls...
    lines[52, 110:152] = 0.0  # ...and draw the corridor's walls
    lines[67, 110:152] = 0.0
    rgb, alpha = hint_layer(lines.shape, [(40, 40, RED), (220, 90, BLUE)])
    out = flats.fill(flats.segment(lines), np.full((120, 260, 3), 0.5, np.float32), rgb, alpha)
    assert all(de(out[y, x], RED) < 3 for y, x in [(20, 20), (100, 100), (60, 100), (100, 20)])
    assert all(de(out[y, x], BLUE) < 3 for y, x in [(20, 160), (100, 240), (60, 160), (20, 240)])


def test_two_strokes_of_different_colors_that_touch_stay_two_colors():
    """A red stroke up to a wall and a yellow one from it, overlapping on the wall with a soft edge (a blend
    where they meet): each room takes its stroke's color exactly, neither the orange nobody painted."""
    lines = paper(120, 260)
    cv2.rectangle(lines, (10, 10), (250, 110), 0.0, 2)
    cv2.line(lines, (127, 10), (127, 110), 0.0, 6)  # the wall: x 124..130
    yellow = (0.99, 0.77, 0.1)
    rgb = np.zeros((120, 260, 3), np.float32)
    alpha = np.zeros((120, 260), np.float32)
    cv2.line(rgb, (60, 60), (124, 60), RED, 9)
    cv2.line(alpha, (60, 60), (124, 60), 1.0, 9)
    cover = np.zeros_like(alpha)
    cv2.line(cover, (130, 60), (200, 60), 1.0, 9)
    cover = cv2.GaussianBlur(cover, (5, 5), 1.5)[..., None]  # a soft brush edge over the red
    over = cover + alpha[..., None] * (1 - cover)  # yellow painted over red (not premultiplied)
    painted = np.asarray(yellow, np.float32) * cover + rgb * alpha[..., None] * (1 - cover)
    rgb = painted / np.maximum(over, 1e-6)
    alpha = over[..., 0]
    out = flats.fill(flats.segment(lines), np.full((120, 260, 3), 0.5, np.float32), rgb, alpha)
    assert all(de(out[y, x], RED) < 1 for y, x in [(20, 20), (100, 110), (60, 118)])
    assert all(de(out[y, x], yellow) < 1 for y, x in [(20, 140), (100, 240), (60, 136)])


def test_the_frame_closes_a_figure_cut_by_the_edge_of_the_picture():
    lines = paper(160, 200)
    cv2.line(lines, (60, 159), (60, 80), 0.0, 2)  # a bust's two sides, running off the bottom edge
    cv2.line(lines, (140, 159), (140, 80), 0.0, 2)
    cv2.line(lines, (60, 80), (140, 80), 0.0, 2)
    rgb, alpha = hint_layer(lines.shape, [(100, 120, GREEN)])
    out = flats.fill(flats.segment(lines), np.full((160, 200, 3), 0.5, np.float32), rgb, alpha)
    assert de(out[155, 100], GREEN) < 3 and de(out[90, 70], GREEN) < 3
    assert np.allclose(out[150, 20], 1.0) and np.allclose(out[30, 100], 1.0)


def test_a_narrow_tail_of_a_region_takes_the_regions_color():
    lines = paper(160, 200)
    cv2.rectangle(lines, (20, 40), (100, 120), 0.0, 2)
    lines[77:83, 97:104] = 1.0  # a 6 px wide spout leaving the box to the right
    cv2.line(lines, (100, 75), (180, 75), 0.0, 2)
    cv2.line(lines, (100, 84), (180, 84), 0.0, 2)
    cv2.line(lines, (180, 75), (180, 84), 0.0, 2)
    rgb, alpha = hint_layer(lines.shape, [(60, 80, RED)])
    out = flats.fill(flats.segment(lines), np.full((160, 200, 3), 0.5, np.float32), rgb, alpha)
    assert de(out[80, 170], RED) < 3


def test_every_pixel_has_a_region_and_flats_run_under_the_lines():
    rng = np.random.default_rng(0)
    lines = paper(90, 130)
    for _ in range(12):
        p, q = rng.integers(0, 130, 2), rng.integers(0, 90, 2)
        cv2.line(lines, (int(p[0]), int(q[0])), (int(p[1]), int(q[1])), float(rng.uniform(0, 0.5)), 3)
    regions = flats.segment(lines)
    assert regions.labels.min() == 1 and set(np.unique(regions.labels)) == set(range(1, regions.n + 1))
    assert regions.paper.shape == (regions.n + 1,) and not regions.paper[0]
    network = rng.uniform(0.2, 0.8, (90, 130, 3)).astype(np.float32)
    out = flats.fill(regions, network)
    # under the ink, a region's color, not a white seam (the paper region aside)
    under = regions.ink & ~regions.paper[regions.labels]
    assert under.any() and not np.allclose(out[under], 1.0, atol=0.02)


@pytest.mark.parametrize("shape", [(8, 8), (1, 40)])
def test_blank_and_tiny_sketches_are_one_region(shape):
    regions = flats.segment(np.ones(shape, np.float32))
    assert regions.n == 1
    out = flats.fill(regions, np.zeros((*shape, 3), np.float32))
    assert out.shape == (*shape, 3)


def bust(h: int = 200, w: int = 200) -> np.ndarray:
    """A head and shoulders whose body outline stops 40 px above the frame (as OpenMoji draws a bust)."""
    lines = paper(h, w)
    cv2.circle(lines, (100, 60), 30, 0.0, 2)
    cv2.ellipse(lines, (100, 130), (50, 30), 0, 180, 360, 0.0, 2)  # the shoulders
    cv2.line(lines, (50, 130), (50, 160), 0.0, 2)
    cv2.line(lines, (150, 130), (150, 160), 0.0, 2)
    return lines


def test_a_hint_in_a_body_left_open_above_the_frame_colors_the_body():
    """The body's outline is open toward the frame by 100 px, far too wide to close; the hint colors the body up
    to the straight line between the outline's ends, as a colorist closes it, and not the paper around it."""
    lines = bust()
    regions = flats.segment(lines)
    assert regions.paper[regions.labels[145, 100]]  # the body is one region with the paper
    rgb, alpha = hint_layer(lines.shape, [(80, 145, BLUE), (120, 150, BLUE)])
    network = np.ones((*lines.shape, 3), np.float32)
    network[110:175, 40:160] = BLUE  # the network, shown the hints, paints the body (and spills a little)
    out = flats.fill(regions, network, rgb, alpha)
    body = np.zeros(lines.shape, np.uint8)
    cv2.ellipse(body, (100, 130), (46, 26), 0, 180, 360, 1, -1)
    body[130:158, 54:147] = 1
    assert np.mean([de(c, BLUE) < 3 for c in out[body > 0]]) > 0.97
    assert np.allclose(
        out[170:, :], 1.0
    )  # below the body's ends: the paper, though the network spilled there
    assert np.allclose(out[:, :40], 1.0) and np.allclose(out[100, 160:], 1.0)
    white = flats.fill(regions, network, None, None)
    assert np.allclose(white[145, 100], 1.0)  # without a hint the body is paper


def test_a_hint_on_open_paper_beside_a_line_takes_only_what_the_network_colors():
    """An arm drawn as one stroke meets a leg: between them a triangle of open paper inside the drawing's hull.
    A hint dabbed beside the arm (where the artist's color has a thick arm) colors the strip the network paints
    there, not the whole triangle."""
    lines = paper(200, 200)
    cv2.line(lines, (30, 40), (170, 40), 0.0, 2)  # the arm
    cv2.line(lines, (30, 40), (30, 170), 0.0, 2)  # the leg
    regions = flats.segment(lines)
    rgb, alpha = hint_layer(lines.shape, [(100, 47, RED)])
    network = np.ones((*lines.shape, 3), np.float32)
    network[41:54, 31:171] = RED
    out = flats.fill(regions, network, rgb, alpha)
    assert np.mean([de(c, RED) < 3 for c in out[44:50, 40:160].reshape(-1, 3)]) > 0.97
    assert np.allclose(out[70:, 40:], 1.0)  # the rest of the triangle, and outside it, stays paper
    network[:] = 1.0  # the network sees paper there: the dab alone colors nothing
    assert np.allclose(flats.fill(regions, network, rgb, alpha)[42:, 32:], 1.0)


def test_a_white_dab_keeps_paper_that_a_colored_dab_on_open_paper_would_take():
    """Where the network paints a whole pocket of open paper, a dab of white in part of it keeps that part white
    (the README's advice when the guess is wrong)."""
    lines = paper(200, 200)
    cv2.line(lines, (30, 40), (170, 40), 0.0, 2)
    cv2.line(lines, (30, 40), (30, 170), 0.0, 2)
    regions = flats.segment(lines)
    network = np.ones((*lines.shape, 3), np.float32)
    network[41:, 31:] = RED  # the network colors the whole triangle
    rgb, alpha = hint_layer(lines.shape, [(100, 47, RED)])
    assert de(flats.fill(regions, network, rgb, alpha)[100, 45], RED) < 3
    rgb, alpha = hint_layer(lines.shape, [(100, 47, RED), (45, 120, (1.0, 1.0, 1.0))])
    out = flats.fill(regions, network, rgb, alpha)
    assert de(out[50, 100], RED) < 3 and np.allclose(out[120, 40], 1.0)
