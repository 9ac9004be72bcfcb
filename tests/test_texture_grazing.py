"""Surfaces the input view sees at a grazing angle (the top of a mug or a bowl seen from 20 degrees up):
they must count as seen all over, not in stripes, and the de-lighting must not print their ripples into
the albedo (bake.visible's slope-scaled depth bias, delight's low-passed shading)."""

import numpy as np
import pytest
import torch

from backend_local.engines.base import ViewMapping
from backend_local.texturing import bake, delight

SIZE = 256
VIEW = ViewMapping(scale=SIZE / 2.4, cx=SIZE / 2, cy=SIZE / 2)
ELEVATION = np.radians(20.0)     # the camera 20 degrees above the lid: its normal has |n.z| = 0.34


def rippled_lid(n=120, amplitude=0.003, period=0.09):
    """A flat disc-like plate (as a grid) tilted so the camera sees it at 20 degrees, with the small height
    ripple marching cubes leaves on a nearly flat field (slopes of 12 degrees: no crest truly hides a
    valley from 20 degrees up). Returns vertices, faces, vertex normals."""
    u, v = np.meshgrid(np.linspace(-0.8, 0.8, n), np.linspace(-0.8, 0.8, n), indexing="ij")
    h = amplitude * np.sin(2 * np.pi * v / period)
    plane = np.stack([u, h, v], -1).reshape(-1, 3)                 # y up, ripple across z
    c, s = np.cos(ELEVATION), np.sin(ELEVATION)
    # Turned about x, the plate's normal (0, 1, 0) becomes (0, cos 20, sin 20): 70 degrees off the view axis.
    rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    vertices = plane @ rotation.T
    idx = np.arange(n * n).reshape(n, n)
    a, b, d, e = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, d, b], 1), np.stack([b, d, e], 1)])
    dh = 2 * np.pi * amplitude / period * np.cos(2 * np.pi * v / period)
    normals = np.stack([np.zeros_like(u), np.ones_like(u), -dh], -1).reshape(-1, 3)
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True) @ rotation.T
    if (normals[:, 2] < 0).mean() > 0.5:
        faces, normals = faces[:, ::-1], -normals
    return vertices, faces, normals


def seen_share(vertices, faces, normals):
    zbuf, _normals, _covered = bake.view_buffers(VIEW, vertices, faces, normals, SIZE, "cpu")
    # Points on the surface between the vertices: the face centres.
    points = torch.as_tensor(vertices[faces].mean(1), dtype=torch.float32)
    face_normals = torch.as_tensor(normals[faces].mean(1), dtype=torch.float32)
    face_normals = face_normals / face_normals.norm(dim=1, keepdim=True)
    return float(bake.visible(VIEW, zbuf, points, face_normals, SIZE).float().mean())


def test_a_rippled_surface_seen_at_a_grazing_angle_is_seen_everywhere(monkeypatch):
    vertices, faces, normals = rippled_lid()
    assert 0.3 < np.median(normals[:, 2]) < 0.4
    assert seen_share(vertices, faces, normals) > 0.99
    monkeypatch.setattr(bake, "SLOPE_BIAS_PIXELS", 0.0)      # the plain depth test leaves stripes
    assert seen_share(vertices, faces, normals) < 0.97


def test_the_far_side_is_still_hidden():
    vertices, faces, normals = rippled_lid()
    zbuf, _n, _c = bake.view_buffers(VIEW, vertices, faces, normals, SIZE, "cpu")
    # The same plate 0.3 units behind itself (further along -z), facing the camera: hidden by the plate.
    points = torch.as_tensor(vertices[faces].mean(1) - np.array([0.0, 0.0, 0.3]), dtype=torch.float32)
    face_normals = torch.as_tensor(normals[faces].mean(1), dtype=torch.float32)
    inside = torch.as_tensor(np.abs(vertices[faces].mean(1)[:, 0]) < 0.6)
    seen = bake.visible(VIEW, zbuf, points, face_normals, SIZE)
    assert float(seen[inside].float().mean()) < 0.01


def test_delighting_does_not_print_the_normals_ripple_into_the_albedo(monkeypatch):
    # A white cylinder lit from the side: the image's shading varies smoothly across the columns. The
    # reconstruction's normals are right across the columns but ripple row by row (a reconstruction's
    # error); the image has no ripple, so the gain must have none either.
    h, w = 128, 128
    phi = torch.linspace(-1.2, 1.2, w)[None, :].expand(h, w)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    def unit(x, y, z):
        n = torch.stack([x, y, z])
        return n / n.norm(dim=0, keepdim=True)
    true = unit(torch.sin(phi), torch.full_like(phi, 0.3), torch.cos(phi))
    light = torch.tensor([0.6, 0.4, 0.7])
    lum = 0.15 + 0.8 * (true * (light / light.norm())[:, None, None]).sum(0).clamp(min=0)
    rgb = lum[None].expand(3, h, w).clone()
    rippled = unit(torch.sin(phi), 0.3 + 0.35 * torch.sin(2 * np.pi * rows / 5.0), torch.cos(phi))
    valid = torch.zeros(h, w, dtype=torch.bool)
    valid[16:112, 16:112] = True

    def ripple(gain):
        g = gain[24:104, 24:104]
        return float((g[1:] - g[:-1]).abs().mean())

    gain, explained = delight.shading_gain(rgb, rippled, valid)
    assert explained > delight.FULL_EXPLAINED
    monkeypatch.setattr(delight, "SHADING_BLUR", 0.0)
    raw_gain, _ = delight.shading_gain(rgb, rippled, valid)
    assert ripple(raw_gain) > 0.01                     # unsmoothed, the ripple is in the gain
    assert ripple(gain) < 0.3 * ripple(raw_gain)
    # The broad correction is kept: across the columns the smoothed gain follows the unsmoothed one.
    assert torch.allclose(gain[24:104, 24:104].mean(0), raw_gain[24:104, 24:104].mean(0), rtol=0.05)
