"""Texturing pieces: UV charts, rasterizer, gutter fill, AO, tangent frames, GLB writer."""

import numpy as np
import pytest
import torch
import trimesh

from backend_local import export
from backend_local.texturing import ao, raster
from backend_local.texturing.bake import vertex_tangents
from backend_local.texturing.fill import push_pull
from backend_local.texturing.uv import unwrap
from bench.render_psnr import read_glb


def test_rasterizer_covers_each_pixel_once_with_exact_barycentrics():
    square = np.array([[[0, 0], [16, 0], [0, 16]], [[16, 0], [16, 16], [0, 16]]], np.float64)
    ids = raster.face_ids(square, 16, 16)
    assert (ids >= 0).all() and set(np.unique(ids)) == {0, 1}
    flat, faces, weights = raster.barycentric(ids, square, "cpu")
    corners = torch.as_tensor(square, dtype=torch.float32)[faces]
    rebuilt = (corners * weights[:, :, None]).sum(1)
    centres = torch.stack([(flat % 16).float() + 0.5, (flat // 16).float() + 0.5], 1)
    assert torch.allclose(rebuilt, centres, atol=1e-4)


def test_depth_order_keeps_the_nearest_triangle():
    tri = np.array([[[0, 0], [10, 0], [0, 10]], [[0, 0], [10, 0], [0, 10]]], np.float64)
    ids = raster.face_ids(tri, 10, 10, depth=np.array([5.0, 1.0]))
    assert (ids[ids >= 0] == 0).all()


def test_gpu_rasterizer_agrees_with_opencv():
    """The torch rasterizer used on CUDA (run here on the CPU) covers what OpenCV covers and keeps the
    nearest triangle where they overlap."""
    mesh = trimesh.creation.icosphere(subdivisions=4)
    tri = (mesh.vertices[mesh.faces][:, :, :2] * 0.45 + 0.5) * 256
    depth = mesh.vertices[mesh.faces][:, :, 2].max(axis=1)
    reference = raster.face_ids(tri, 256, 256, depth=depth)
    ids = raster._face_ids_torch(tri, 256, 256, depth, torch.device("cpu")).numpy()
    both = (reference >= 0) & (ids >= 0)
    assert both.sum() > 0.97 * (ids >= 0).sum() and (ids >= 0).sum() > 0.95 * (reference >= 0).sum()
    assert np.asarray(mesh.face_normals[ids[both]][:, 2] > -0.2).mean() > 0.99     # front faces win
    # where the two pick different faces (pixels on a shared edge), the faces are neighbours
    differ = both & (ids != reference)
    faces = np.asarray(mesh.faces)
    shared = [len(set(faces[a]) & set(faces[b])) > 0 for a, b in zip(ids[differ], reference[differ])]
    assert np.mean(shared) > 0.98


def test_unwrap_charts_do_not_overlap_and_keep_area():
    mesh = trimesh.creation.torus(0.6, 0.25, major_sections=64, minor_sections=32)
    vertex_map, faces, uvs = unwrap(np.asarray(mesh.vertices), np.asarray(mesh.faces, np.int64), 512)
    assert len(faces) == len(mesh.faces)
    assert np.allclose(np.asarray(mesh.vertices)[vertex_map][faces], np.asarray(mesh.vertices)[mesh.faces])
    assert uvs.min() >= 0 and uvs.max() <= 1
    # draw every triangle, shrunk a little towards its centre so neighbours never touch, into a count
    # image: overlapping charts would cover texels twice
    import cv2
    counts = np.zeros((1024, 1024), np.int32)
    for tri in uvs[faces] * 1024:
        tri = tri + (tri.mean(axis=0) - tri) * 0.2
        single = np.zeros((1024, 1024), np.uint8)
        cv2.fillPoly(single, [np.round((tri - 0.5) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        counts += single
    assert (counts > 1).sum() < 0.001 * (counts > 0).sum()
    assert (counts > 0).mean() > 0.3            # the packer uses the space


def test_push_pull_fills_gutters_and_keeps_known_texels():
    values = torch.zeros(3, 64, 64)
    known = torch.zeros(64, 64, dtype=torch.bool)
    known[10:20, 10:20] = True
    values[:, 10:20, 10:20] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
    known[40:50, 40:50] = True
    values[:, 40:50, 40:50] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    filled = push_pull(values, known)
    assert torch.equal(filled[:, known], values[:, known])
    assert filled[0, 12, 22] > 0.8 and filled[2, 52, 45] > 0.8     # just outside each chart: its own colour


def test_ambient_occlusion_darkens_the_inside_of_a_torus():
    mesh = trimesh.creation.torus(0.6, 0.3)
    grid = ao.occupancy(mesh.vertices, mesh.faces, "cpu")
    expected_volume = 2 * np.pi ** 2 * 0.6 * 0.3 ** 2
    assert grid.mean().item() * (2 * ao.EXTENT) ** 3 == pytest.approx(expected_volume, rel=0.05)
    values = ao.bake(torch.tensor(mesh.vertices, dtype=torch.float32),
                     torch.tensor(mesh.vertex_normals, dtype=torch.float32), grid)
    radius = np.linalg.norm(mesh.vertices[:, :2], axis=1)
    outer, inner = values[torch.tensor(radius > 0.85)].mean(), values[torch.tensor(radius < 0.35)].mean()
    assert outer > 0.97 and inner < outer - 0.1


def test_tangent_frame_follows_uv_directions():
    # a quad in the XY plane whose u runs along +X and whose image-up (v decreasing) runs along +Y
    positions = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=torch.float32)
    uvs = torch.tensor([[0, 1], [1, 1], [1, 0], [0, 0]], dtype=torch.float32)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    normals = torch.tensor([[0, 0, 1]] * 4, dtype=torch.float32)
    tangent, bitangent = vertex_tangents(positions, uvs, faces, normals)
    assert torch.allclose(tangent, torch.tensor([1.0, 0, 0]).expand(4, 3), atol=1e-5)
    assert torch.allclose(bitangent, torch.tensor([0, 1.0, 0]).expand(4, 3), atol=1e-5)


def test_glb_writer_round_trip(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=2)
    uvs = (mesh.vertices[:, :2] + 1) / 2
    png = export.encode_png(np.full((8, 8, 3), 200, np.uint8))
    path = str(tmp_path / "m.glb")
    export.write_glb(path, mesh.vertices, mesh.faces, mesh.vertex_normals, uvs,
                     {"albedo": png, "normal": png, "orm": png})
    vertices, faces, read_uvs, images = read_glb(path)
    assert np.allclose(vertices, mesh.vertices, atol=1e-6) and np.array_equal(faces, mesh.faces)
    assert np.allclose(read_uvs, uvs, atol=1e-6)
    assert set(images) == {"baseColor", "metallicRoughness", "normal", "occlusion"}
    loaded = trimesh.load(path, force="mesh")       # an independent reader agrees
    assert len(loaded.faces) == len(mesh.faces)


def test_unwrap_leaves_a_gutter_that_scales_with_the_texture():
    """Charts are packed on a coarse grid; at the final texture size the gap between any two charts must
    still be at least the gutter (4 texels per 1024) so mipmaps and bilinear filtering never mix them."""
    import cv2
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    mesh = trimesh.creation.torus(0.6, 0.25, major_sections=64, minor_sections=32)
    for size, gutter in ((512, 2), (1024, 4), (2048, 8)):
        _, faces, uvs = unwrap(np.asarray(mesh.vertices), np.asarray(mesh.faces, np.int64), size)
        incidence = coo_matrix((np.ones(faces.size), (np.repeat(np.arange(len(faces)), 3), faces.reshape(-1))))
        count, chart = connected_components(incidence @ incidence.T, directed=False)
        assert count > 1
        label = np.full((size, size), -1, np.int32)
        for index, tri in enumerate(uvs[faces] * size):
            cv2.fillPoly(label, [np.round((tri - 0.5) * 16).astype(np.int32)], int(chart[index]),
                         lineType=cv2.LINE_8, shift=4)
        # a texel of one chart within (gutter - 1) texels of another chart's texel would be a bleed
        near = gutter - 1
        kernel = np.ones((2 * near + 1, 2 * near + 1), np.uint8)
        for c in range(count):
            own = (label == c).astype(np.uint8)
            grown = cv2.dilate(own, kernel) > 0
            assert not np.any(grown & (label >= 0) & (label != c)), (size, c)


def test_material_blur_on_gpu_matches_opencv():
    """The GPU path of the material estimates (separable torch convolution, checked here on the CPU)
    gives OpenCV's Gaussian blur, so maps do not depend on the device."""
    from backend_local.texturing import materials

    x = torch.rand(96, 128)
    x[:, :40] = 0.0                                  # an edge, so border and mask handling matter
    for sigma in (0.75, 2.0, 6.0):
        assert torch.allclose(materials._blur_conv(x, sigma), materials._blur(x, sigma), atol=1e-5)


def test_gpu_gutter_fill_matches_opencv():
    """The torch gutter fill used on CUDA (run here on the CPU) keeps every known texel, gives the ring
    around each chart its nearest edge colour and the far gutters the same smooth blend as OpenCV's."""
    import cv2
    from backend_local.texturing import fill

    rng = np.random.default_rng(3)
    known = np.zeros((256, 256), np.uint8)
    for _ in range(12):
        x, y = rng.integers(20, 236, 2)
        cv2.circle(known, (int(x), int(y)), int(rng.integers(5, 30)), 1, -1)
    known = known.astype(bool)
    yy, xx = np.mgrid[0:256, 0:256]
    values = np.stack([np.sin(xx / 20.0), np.cos(yy / 15.0), (xx + yy) / 512.0], -1).astype(np.float32)
    values[~known] = 0.0
    reference = fill.fill_gutters(values, known)
    result = fill._fill_gutters_torch(torch.from_numpy(values).permute(2, 0, 1),
                                      torch.from_numpy(known)).permute(1, 2, 0).numpy()
    assert np.array_equal(result[known], values[known])
    distance = cv2.distanceTransform((~known).astype(np.uint8), cv2.DIST_L2, 5)
    ring, far = (~known) & (distance <= 7), distance > 9
    assert np.abs(result[ring] - reference[ring]).mean() < 0.005        # ties may pick another edge texel
    assert np.abs(result[far] - reference[far]).max() < 0.1
    assert np.abs(result[far] - reference[far]).mean() < 0.005
    assert np.isfinite(result).all()


def test_detail_normals_refine_but_never_overturn_the_mesh_normal():
    """Across a sharp crease the grid-sampled field normal turns over a grid cell; where it strays far
    from the mesh normal the bake falls back to the mesh normal, small refinements pass unchanged."""
    import math

    from backend_local.texturing.bake import _trusted_detail

    normal = torch.tensor([[0.0, 0.0, 1.0]] * 3)
    angles = torch.tensor([10.0, 30.0, 60.0]) * math.pi / 180
    fine = torch.stack([torch.sin(angles), torch.zeros(3), torch.cos(angles)], dim=1)
    out = _trusted_detail(fine, normal)
    assert torch.allclose(out[0], fine[0], atol=1e-6)                 # a refinement is kept
    assert torch.allclose(out[2], normal[2], atol=1e-6)               # a crease smear is dropped
    tilt = math.degrees(math.acos(float(out[1, 2])))
    assert 0.0 < tilt < 30.0                                          # in between: faded
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-6)
