"""The learned model's procedural training data: object families (SDFs), renderer, targets."""

import math

import pytest
import torch

from backend_local.engines.builtin.learned import sdf
from backend_local.engines.builtin.learned.families import FAMILIES
from backend_local.engines.builtin.learned.rand import Rand
from backend_local.engines.builtin.learned.materials import sample_materials
from backend_local.engines.builtin.learned.render import camera_rotation, make_batch, render
from backend_local.engines.builtin.learned.lattice import lattice_sdf
from backend_local.engines.builtin.learned.scenes import Objects, sample_objects
from backend_local.engines.builtin.learned.slots import Slots, rot_y

# One thread: this 2-core machine is often shared, and two spinning OpenMP threads then run ~10x slower.
torch.set_num_threads(1)
SIZE, GRID = 48, 24


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def batch():
    return make_batch(8, _gen(3), "cpu", image_size=SIZE, grid=GRID)


def _one_slot(kind, params, poly=None, rot=None):
    s = Slots.empty(1)
    s.put(0, kind, torch.tensor([params], dtype=torch.float32),
          poly=None if poly is None else torch.tensor([poly], dtype=torch.float32),
          rot=None if rot is None else rot[None])
    return s


def test_primitive_distances_match_brute_force():
    points = torch.rand(1, 4000, 3, generator=_gen(0)) * 3 - 1.5
    p = points[0]
    # Sphere: exact distance.
    d = _one_slot(sdf.SPHERE, [0.7]).evaluate(points)[0][0]
    assert torch.allclose(d, p.norm(dim=-1) - 0.7, atol=1e-5)
    # Box: sign from the coordinate test, distance outside from the clamped point.
    half = torch.tensor([0.6, 0.3, 0.9])
    d = _one_slot(sdf.BOX, [0.6, 0.3, 0.9, 0.0]).evaluate(points)[0][0]
    inside = (p.abs() < half).all(-1)
    assert torch.equal(d < 0, inside)
    nearest = torch.maximum(torch.minimum(p, half), -half)
    assert torch.allclose(d[~inside], (p - nearest).norm(dim=-1)[~inside], atol=1e-5)
    # A square outline extruded is the same box; a rectangle profile revolved is a cylinder.
    square = [[0.6, 0.9], [-0.6, 0.9], [-0.6, -0.9], [0.6, -0.9]]
    d_ext = _one_slot(sdf.EXTRUDE, [0.3, 0.0], poly=square).evaluate(points)[0][0]
    assert torch.allclose(d_ext, d, atol=1e-5)
    profile = [[0.0, -0.4], [0.5, -0.4], [0.5, 0.4], [0.0, 0.4]]  # half section, axis closes it
    d_rev = _one_slot(sdf.REVOLVE, [], poly=profile).evaluate(points)[0][0]
    d_cyl = _one_slot(sdf.CYLINDER, [0.5, 0.4, 0.0]).evaluate(points)[0][0]
    assert torch.allclose(d_rev, d_cyl, atol=1e-5)
    # Cone and torus signs against their defining inequalities.
    d = _one_slot(sdf.CONE, [0.6, 0.2, 0.5]).evaluate(points)[0][0]
    radial = p[:, [0, 2]].norm(dim=-1)
    cone_in = (p[:, 1].abs() < 0.5) & (radial < 0.6 + (0.2 - 0.6) * (p[:, 1] + 0.5) / 1.0)
    assert torch.equal(d < 0, cone_in)
    d = _one_slot(sdf.TORUS, [0.8, 0.2, math.pi]).evaluate(points)[0][0]
    ring = torch.stack([p[:, [0, 1]].norm(dim=-1) - 0.8, p[:, 2]], -1).norm(dim=-1)
    assert torch.allclose(d, ring - 0.2, atol=1e-5)
    # A rotated box: rotate the points instead.
    rot = rot_y(torch.tensor([0.7]))[0]
    d = _one_slot(sdf.BOX, [0.6, 0.3, 0.9, 0.0], rot=rot).evaluate(points)[0][0]
    assert torch.equal(d < 0, ((p @ rot).abs() < half).all(-1))


def test_smooth_union_and_subtract_fold():
    def scene(blend):
        s = Slots.empty(1)
        s.put(0, sdf.BOX, torch.tensor([[0.5, 0.5, 0.5, 0.0]]))
        s.put(1, sdf.SPHERE, torch.tensor([[0.3]]), pos=torch.tensor([[0.5, 0.5, 0.5]]), op=sdf.SUBTRACT, part=1)
        s.put(2, sdf.SPHERE, torch.tensor([[0.2]]), pos=torch.tensor([[0.0, 0.8, 0.0]]), blend=blend, part=2)
        return s
    # Box centre, the cut corner, the top sphere's centre, the gap between box and sphere, far out.
    probe = torch.tensor([[[0.0, 0.0, 0.0], [0.45, 0.45, 0.45], [0.0, 0.8, 0.0], [0.0, 0.55, 0.0], [2.0, 0, 0]]])
    hard, part = scene(0.0).evaluate(probe)
    smooth, _ = scene(0.3).evaluate(probe)
    assert hard[0, 0] < 0 and hard[0, 1] > 0 and hard[0, 2] < 0 and hard[0, 4] > 0
    assert hard[0, 3] == pytest.approx(0.05, abs=1e-6)   # a plain union leaves the gap open
    assert smooth[0, 3] < 0                              # the blend bridges it
    assert torch.allclose(hard[0, [0, 1, 4]], smooth[0, [0, 1, 4]])  # far from the seam: unchanged
    assert part[0, 1] == 1 and part[0, 2] == 2 and part[0, 0] == 0


def test_sparse_lattice_matches_dense_evaluation():
    objs = sample_objects(3, _gen(8), "cpu", families=["legs", "organic", "extrusion"])
    res, band = 32, 0.02
    origin = torch.tensor([-0.6, -0.1, -0.6]).expand(3, 3).clone()
    steps = torch.diag_embed(torch.full((3, 3), 1.2 / res))
    evaluated = []

    def counted(points):
        evaluated.append(points.shape[1])
        return objs.sdf(points)

    sparse = lattice_sdf(counted, origin, steps, res, band)
    k = torch.arange(res) + 0.5
    idx = torch.stack(torch.meshgrid(k, k, k, indexing="ij"), -1).reshape(1, -1, 3)
    dense = objs.sdf(origin[:, None, :] + idx @ steps).view(3, res, res, res)
    assert torch.equal(sparse < 0, dense < 0)
    assert torch.allclose(sparse.clamp(-band, band), dense.clamp(-band, band), atol=1e-6)
    assert (sparse.abs() <= dense.abs() + 1e-6).all()
    assert sum(evaluated) < 0.6 * res ** 3  # blocks far from the surface were filled, not evaluated


def _plane(objs, axis, value, res=90):
    """Distances (B, res * res) on the plane {x_axis = value}, over each object's measured box."""
    lo, hi = objs.lower - 0.05, objs.upper + 0.05
    t = (torch.arange(res) + 0.5) / res
    u, v = torch.meshgrid(t, t, indexing="ij")
    others = [a for a in range(3) if a != axis]
    p = torch.zeros(len(objs), res * res, 3)
    for a, w in zip(others, (u, v)):
        p[..., a] = lo[:, a, None] + (hi - lo)[:, a, None] * w.reshape(1, -1)
    p[..., axis] = value[:, None]
    return objs.sdf(p)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_objects_are_upright_closed_and_unit_sized(family):
    objs = sample_objects(4, _gen(11), "cpu", families=[family])
    assert objs.family == [family] * 4
    # Closed and bounded: positive on a shell well outside the unit box.
    shell = torch.randn(4, 400, 3, generator=_gen(1))
    shell = 1.6 * shell / shell.norm(dim=-1, keepdim=True) + torch.tensor([0.0, 0.5, 0.0])
    assert (objs.sdf(shell) > 0.3).all()
    # The measured box is the object's (to within what its 48^3 grid resolves, 2% of the size):
    # nothing inside a plane just outside each face, something inside a plane just inside it (so
    # the object is not empty, and touches each face).
    for axis in range(3):
        for bound, outward in ((objs.lower, -1.0), (objs.upper, 1.0)):
            face = bound[:, axis]
            assert (_plane(objs, axis, face + outward * 0.025) > 0).all(), (family, axis, outward)
            assert (_plane(objs, axis, face - outward * 0.035).min(1).values < 0).all(), (family, axis, outward)
    # Upright frame: base on y = 0, largest side 1, centred in x and z.
    assert objs.lower[:, 1].abs().max() < 1e-6
    assert torch.allclose((objs.upper - objs.lower).max(-1).values, torch.ones(4), atol=1e-5)
    assert (objs.lower + objs.upper)[:, [0, 2]].abs().max() < 1e-5


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_sdf_is_lipschitz(family):
    objs = sample_objects(4, _gen(5), "cpu", families=[family])
    p = torch.rand(4, 3000, 3, generator=_gen(2)) * torch.tensor([1.4, 1.3, 1.4]) - torch.tensor([0.7, 0.15, 0.7])
    q = p + 0.05 * torch.randn(4, 3000, 3, generator=_gen(3))
    ratio = (objs.sdf(p) - objs.sdf(q)).abs() / (p - q).norm(dim=-1)
    assert ratio.max() <= 1.0 + 1e-3


def test_families_all_drawn_and_materials_valid():
    seen = set()
    for seed in range(3):
        objs = sample_objects(24, _gen(seed), "cpu")
        seen.update(objs.family)
    assert seen == set(FAMILIES)
    m = sample_materials(50, Rand(_gen(0)))
    assert ((m.color_a >= 0) & (m.color_a <= 1)).all() and ((m.color_b >= 0) & (m.color_b <= 1)).all()
    assert set(m.texture.unique().tolist()) == {0, 1, 2, 3, 4}
    albedo, rough, metal = m.surface(torch.zeros(50, 10, dtype=torch.long), torch.rand(50, 10, 3))
    assert albedo.shape == (50, 10, 3) and ((albedo >= 0) & (albedo <= 1)).all()


def test_batch_shapes_and_ranges(batch):
    b = batch
    assert b["rgba"].shape == (8, 4, SIZE, SIZE) and b["rgba"].dtype == torch.float32
    assert b["occupancy"].shape == (8, GRID, GRID, GRID) and b["occupancy"].dtype == torch.float32
    assert set(b["occupancy"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(b["occupancy"], (b["sdf"] < 0).float())
    assert b["rgba"].min() >= 0 and b["rgba"].max() <= 1
    alpha = b["rgba"][:, 3]
    assert (b["rgba"][:, :3][(alpha == 0)[:, None].expand(-1, 3, -1, -1)] == 0).all()  # background 0
    assert ((alpha > 0) & (alpha < 1)).any()  # anti-aliased edge
    e = b["elevation"]
    assert e.shape == (8,) and (e >= 0).all() and (e <= math.radians(45)).all()
    assert len(b["family"]) == 8
    # Lit objects show shading: colour varies inside each silhouette.
    for i in range(8):
        inside = alpha[i] > 0.99
        assert b["rgba"][i, :3][:, inside].std() > 0.01


def test_alpha_is_the_projection_of_occupancy():
    b = make_batch(8, _gen(4), "cpu", image_size=32, grid=32, shadows=False)
    alpha = b["rgba"][:, 3] > 0.5
    column = b["occupancy"].amax(1) > 0
    # Every occupied column is covered (pixel centres and cell columns coincide when S = G).
    assert (alpha[column]).float().mean() > 0.995
    iou = (alpha & column).sum((1, 2)) / (alpha | column).sum((1, 2))
    # Where they differ it is parts thinner than a cell, which rays hit and cell centres miss.
    assert iou.mean() > 0.95 and iou.min() > 0.85, iou


def test_silhouette_is_framed_inside_the_image(batch):
    alpha = batch["rgba"][:, 3]
    border = torch.cat([alpha[:, 0], alpha[:, -1], alpha[:, :, 0], alpha[:, :, -1]], 1)
    assert border.max() == 0
    rows = (alpha > 0.5).any(2)
    cols = (alpha > 0.5).any(1)
    for i in range(len(alpha)):
        r, c = rows[i].nonzero()[:, 0], cols[i].nonzero()[:, 0]
        height, width = r.max() - r.min() + 1, c.max() - c.min() + 1
        extent = max(height, width).item()
        # The window is 1.1-1.3 times the larger side (a little more: the box is conservative).
        assert SIZE / 1.5 < extent <= SIZE / 1.1 + 1
        # Centred: equal margins on the longer axis to within a few pixels.
        lo, hi = (r.min(), r.max()) if height >= width else (c.min(), c.max())
        assert abs(lo.item() - (SIZE - 1 - hi.item())) <= 3


def test_occupied_cells_lie_in_the_object_in_the_upright_frame(batch):
    """window + rotation map grid cells back into the object's own frame."""
    objs = sample_objects(8, _gen(3), "cpu")  # make_batch draws its objects first
    assert objs.family == batch["family"]
    k = (2 * torch.arange(GRID) + 1) / GRID - 1
    z, y, x = torch.meshgrid(k, -k, k, indexing="ij")
    cells = torch.stack([x, y, z], -1).reshape(1, -1, 3)
    w = batch["window"]
    cam = w[:, None, :3] + w[:, 3, None, None] * cells
    upright = cam @ batch["rotation"]
    d = objs.sdf(upright) / w[:, 3, None]
    assert torch.equal((d < 0).view(8, GRID, GRID, GRID).float(), batch["occupancy"])


def test_same_seed_same_batch_other_seed_differs():
    a = make_batch(3, _gen(21), "cpu", image_size=24, grid=12)
    b = make_batch(3, _gen(21), "cpu", image_size=24, grid=12)
    c = make_batch(3, _gen(22), "cpu", image_size=24, grid=12)
    for key in ("rgba", "occupancy", "elevation"):
        assert torch.equal(a[key], b[key])
    assert a["family"] == b["family"]
    assert not torch.equal(a["rgba"], c["rgba"])


def test_camera_rotation_sign_pole_from_above():
    e = torch.tensor([math.radians(30)])
    r = camera_rotation(e, torch.tensor([0.0]))[0]
    pole = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    cam = pole @ r.T
    # Seen from above, the pole's top leans towards the camera (+z) and shows shortened.
    top = cam[1] - cam[0]
    assert top[2] == pytest.approx(math.sin(math.radians(30)), abs=1e-6)
    assert top[1] == pytest.approx(math.cos(math.radians(30)), abs=1e-6)
    # Turning the camera-frame points back by the elevation about x stands it straight.
    back = cam @ camera_rotation(e, torch.tensor([0.0]))[0]  # rot_x(e)^T p for row vectors
    assert torch.allclose(back, pole, atol=1e-6)
    # Azimuth 90 degrees: the camera stands on +x, so +x points towards it.
    r90 = camera_rotation(torch.tensor([0.0]), torch.tensor([math.pi / 2]))[0]
    assert torch.allclose(r90 @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(r90 @ torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_depth_order_nearer_object_has_higher_depth_index():
    """Two spheres, one at +z (nearer a camera at azimuth 0) and one behind it, to the side."""
    s = Slots.empty(1)
    s.put(0, sdf.SPHERE, torch.tensor([[0.25]]), pos=torch.tensor([[-0.2, 0.25, 0.3]]), part=0)
    s.put(1, sdf.SPHERE, torch.tensor([[0.25]]), pos=torch.tensor([[0.2, 0.25, -0.3]]), part=1)
    objs = Objects(slots=s, yaw=torch.zeros(1), scale=torch.ones(1), offset=torch.zeros(3)[None],
                   lower=torch.tensor([[-0.45, 0.0, -0.55]]), upper=torch.tensor([[0.45, 0.5, 0.55]]),
                   family=["test"], materials=sample_materials(1, Rand(_gen(0))))
    b = render(objs, torch.zeros(1), torch.zeros(1), torch.tensor([1.3]), Rand(_gen(1)),
               image_size=32, grid=32, shadows=False)
    occ = b["occupancy"][0]
    depth = torch.arange(32).view(32, 1, 1).float()
    left = occ[:, :, :10]   # the near sphere is on the left (x = -0.2), the far one on the right
    right = occ[:, :, -10:]
    assert left.sum() > 0 and right.sum() > 0
    mean_left = (left * depth).sum() / left.sum()
    mean_right = (right * depth).sum() / right.sum()
    assert mean_left > mean_right + 8
    assert b["depth_clipped"].item() is False  # 1.1 deep, the window 1.3 * 0.9 wide
