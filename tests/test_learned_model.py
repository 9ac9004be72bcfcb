"""The learned shape model: network shapes and budget, training command (checkpoint, resume, export),
inference loading, that the loss and labels are wired right (overfit), and the framing round trips."""

import json
import os

import numpy as np
import pytest
import torch
from scipy import ndimage

from backend_local.engines.builtin.learned import infer, objective, train, weights
from backend_local.engines.builtin.learned.model import OUTSIDE_LOGIT, ModelConfig, ShapeNet, distance_to_outline, parameter_count
from backend_local.engines.builtin.learned.render import make_batch

TINY = ["--image-size", "32", "--grid", "16", "--batch", "2", "--device", "cpu", "--val-count", "4", "--seed", "5",
        "--eval-every", "1", "--checkpoint-every", "2", "--steps", "3"]


def tiny_batch(seed=1, count=2):
    return make_batch(count, torch.Generator().manual_seed(seed), torch.device("cpu"), image_size=32, grid=16)


def log_records(out):
    with open(os.path.join(out, train.LOG)) as f:
        return [json.loads(line) for line in f]


def losses_by_step(out):
    return {r["step"]: r["loss"] for r in log_records(out) if "loss" in r}


def test_output_shapes_and_masked_rays():
    torch.manual_seed(0)
    model = ShapeNet(ModelConfig(image_size=32, grid=16)).eval()
    rgba = torch.rand(2, 4, 32, 32)
    rgba[:, 3, :, :8] = 0  # the left quarter is background: its rays must be empty
    with torch.no_grad():
        out = model(rgba)
    assert out["occupancy_logits"].shape == (2, 16, 16, 16) and out["occupancy_logits"].dtype == torch.float32
    assert out["elevation"].shape == (2,) and out["confidence_logit"].shape == (2,)
    assert (out["occupancy_logits"][:, :, :, :4] == OUTSIDE_LOGIT).all()
    assert (out["occupancy_logits"][:, :, :, 4:] != OUTSIDE_LOGIT).all()


def test_default_model_fits_the_budget(tmp_path):
    model = ShapeNet()
    n = parameter_count(model)
    assert 2e6 < n < 8e6  # 4-16 MB as fp16: within the 50 MB limit with room for growth
    path = str(tmp_path / "w.safetensors")
    weights.save(path, model)
    assert os.path.getsize(path) < 16e6
    with torch.no_grad():
        out = model(torch.zeros(1, 4, 128, 128))
    assert out["occupancy_logits"].shape == (1, 64, 64, 64)


def test_distance_to_outline_is_exact():
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random((3, 40, 40)) > 0.3, iterations=1)
    got = distance_to_outline(torch.from_numpy(mask)).numpy()
    want = np.stack([ndimage.distance_transform_edt(m) for m in mask])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_labels_lie_in_the_silhouettes_rays():
    """The renderer's grid is indexed as the network assumes: occupancy projected along depth is the alpha."""
    batch = tiny_batch(seed=3, count=4)
    occ, alpha = batch["occupancy"], batch["rgba"][:, 3]
    support = ShapeNet(ModelConfig(image_size=32, grid=16)).ray_support(alpha)
    assert occ.sum() > 0
    assert float((occ * ~support[:, None]).sum() / occ.sum()) < 0.01
    # and fills most of it (rims thinner than a depth cell have no cell centre inside, so not all of it)
    projected = occ.amax(1) > 0.5
    covered = torch.nn.functional.avg_pool2d(alpha[:, None], 2)[:, 0] > 0.5
    assert float((projected & covered).sum() / (projected | covered).sum()) > 0.6


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "a")
    assert train.main(["--out", out, *TINY]) == 0
    return out


def test_training_writes_checkpoint_log_weights_and_card(uninterrupted):
    out = uninterrupted
    for name in (train.CHECKPOINT, train.LOG, train.WEIGHTS, train.CARD):
        assert os.path.exists(os.path.join(out, name)), name
    ckpt = torch.load(os.path.join(out, train.CHECKPOINT), weights_only=False)
    assert ckpt["state"]["step"] == 3 and sum(ckpt["state"]["families"].values()) == 6
    steps = [r for r in log_records(out) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and 0 <= r["iou"] <= 1 and r["s_per_step"] > 0 for r in steps)
    card = open(os.path.join(out, train.CARD)).read()
    assert "steps: 3 of 3" in card and "occupancy IoU" in card and "elevation error" in card
    for family in ckpt["state"]["families"]:
        assert family in card
    meta = weights.read_metadata(os.path.join(out, train.WEIGHTS))
    config = json.loads(meta["config"])
    assert (config["image_size"], config["grid"]) == (32, 16)


def test_resumed_run_matches_the_uninterrupted_one(uninterrupted, tmp_path):
    out = str(tmp_path / "b")
    # --time-limit 0: every invocation makes one step, checkpoints and stops (status 3); --export writes
    # the weights even so.
    assert train.main(["--out", out, *TINY, "--time-limit", "0", "--export"]) == train.EXIT_STOPPED
    assert os.path.exists(os.path.join(out, train.WEIGHTS))
    assert torch.load(os.path.join(out, train.CHECKPOINT), weights_only=False)["state"]["step"] == 1
    assert train.main(["--out", out, *TINY, "--time-limit", "0"]) == train.EXIT_STOPPED
    assert train.main(["--out", out, *TINY, "--time-limit", "0"]) == 0
    want, got = losses_by_step(uninterrupted), losses_by_step(out)
    assert sorted(got) == [1, 2, 3]
    for step in (1, 2, 3):
        assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-6), step
    a = weights.load(os.path.join(uninterrupted, train.WEIGHTS)).state_dict()
    b = weights.load(os.path.join(out, train.WEIGHTS)).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)
    assert [r["event"] for r in log_records(out) if "event" in r].count("resume") == 2


def test_init_starts_a_new_run_from_earlier_weights(uninterrupted, tmp_path):
    start = os.path.join(uninterrupted, train.WEIGHTS)
    out = str(tmp_path / "warm")
    # --steps 0: the run only takes the weights and exports them, so they must equal the start's.
    args = [a for a in TINY if a not in ("--steps", "3")]
    assert train.main(["--out", out, *args, "--steps", "0", "--init", start]) == 0
    a = weights.load(start).state_dict()
    b = weights.load(os.path.join(out, train.WEIGHTS)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    card = open(os.path.join(out, train.CARD)).read()
    assert "started from: shape_model.safetensors" in card and '"step": 3' in card
    fresh = str(tmp_path / "fresh")
    assert train.main(["--out", fresh, *args, "--steps", "0"]) == 0
    assert "started from: random weights (seed 5)" in open(os.path.join(fresh, train.CARD)).read()
    other = str(tmp_path / "other")
    with pytest.raises(SystemExit, match="config"):
        train.main(["--out", other, *[a if a != "16" else "8" for a in args], "--steps", "0", "--init", start])


def test_exported_weights_load_once_and_predict(uninterrupted):
    path = os.path.join(uninterrupted, train.WEIGHTS)
    model = infer.load(path, "cpu")
    assert infer.load(path, torch.device("cpu")) is model
    crop = (tiny_batch(seed=9, count=1)["rgba"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    prob, elevation = infer.predict(model, crop)
    assert prob.shape == (16, 16, 16) and prob.dtype == torch.float32
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1
    assert isinstance(elevation, float) and np.isfinite(elevation)
    with pytest.raises(ValueError):
        infer.predict(model, np.zeros((64, 64, 4), np.uint8))


def test_overfits_one_batch():
    """Labels, indexing and loss agree: one fixed batch is learned to a high IoU in 120 steps."""
    torch.manual_seed(0)
    batch = tiny_batch(seed=11)
    model = ShapeNet(ModelConfig(image_size=32, grid=16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(120):
        loss, parts = objective.shape_losses(model(batch["rgba"]), batch["occupancy"], batch["elevation"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = float(loss.detach()) if first is None else first
    with torch.no_grad():
        out = model(batch["rgba"])
    loss, parts = objective.shape_losses(out, batch["occupancy"], batch["elevation"])
    assert float(loss) < first / 3
    assert float(parts["iou_per_image"].min()) > 0.8
    assert float(objective.elevation_error_deg(out["elevation"], batch["elevation"]).max()) < 3.0


def disc_image(h=240, w=320, cx=200.0, cy=90.0, r=40.0):
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    img = np.zeros((h, w, 4), np.uint8)
    img[..., :3] = (200, 120, 40)
    img[..., 3] = np.where((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r, 255, 0)
    return img


def alpha_box(alpha):
    rows = np.flatnonzero((alpha >= 0.5).any(1))
    cols = np.flatnonzero((alpha >= 0.5).any(0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def test_crop_frames_the_object_centred_with_the_margin():
    size = 64
    crop, framing = infer.frame_crop(disc_image(), size)
    assert crop.shape == (size, size, 4) and crop.dtype == np.float32
    r0, r1, c0, c1 = alpha_box(crop[..., 3])
    assert abs((r0 + r1) / 2 - size / 2) <= 1 and abs((c0 + c1) / 2 - size / 2) <= 1
    assert abs((r1 - r0) - size / infer.MARGIN) <= 1.5 and abs((c1 - c0) - size / infer.MARGIN) <= 1.5
    inside = crop[..., 3] > 0.99
    np.testing.assert_allclose(crop[inside][:, :3].mean(0), np.array([200, 120, 40]) / 255, atol=0.01)
    assert (crop[crop[..., 3] == 0][:, :3] == 0).all()
    # The window in the source: 80 px disc * 1.2, centred on (200, 90).
    assert framing.side == 96 and (framing.x0, framing.y0) == (152, 42) and framing.image_shape == (240, 320)


def test_training_renders_are_framed_like_frame_crop():
    """The renders are framed as frame_crop frames: alpha box centred, window side ~MARGIN times its larger
    side (the renderer draws the margin from 1.1-1.3 around frame_crop's 1.2, its box up to 3% wide)."""
    batch = tiny_batch(seed=7, count=4)
    for rgba in batch["rgba"]:
        r0, r1, c0, c1 = alpha_box(rgba[3].numpy())
        assert abs((r0 + r1) / 2 - 16) <= 1.5 and abs((c0 + c1) / 2 - 16) <= 1.5
        assert 1.05 <= 32 / max(r1 - r0, c1 - c0) <= 1.45
        _, framing = infer.frame_crop(rgba.permute(1, 2, 0).numpy(), 32)
        assert abs(framing.x0 + framing.side / 2 - 16) <= 1.5 and abs(framing.y0 + framing.side / 2 - 16) <= 1.5


def test_sphere_grid_maps_onto_the_disc_in_pixels():
    h, w, cx, cy, r = 240, 320, 200.0, 90.0, 40.0
    _, framing = infer.frame_crop(disc_image(h, w, cx, cy, r), 64)
    g = 48
    c = (np.arange(g) + 0.5) / g * 2 - 1
    z, y, x = np.meshgrid(c, -c, c, indexing="ij")
    radius = (2 * r / framing.side)  # the disc's radius in normalised units (side spans 2)
    occupancy = torch.from_numpy(((x ** 2 + y ** 2 + z ** 2) <= radius ** 2).astype(np.float32))
    vertices, faces = infer.occupancy_to_mesh(occupancy)
    pixels = infer.to_pixel_frame(vertices, framing)
    cell = framing.side / g
    centre = np.array([cx - w / 2, h / 2 - cy, 0.0])
    np.testing.assert_allclose((pixels.min(0) + pixels.max(0)) / 2, centre, atol=cell / 2)
    np.testing.assert_allclose(pixels.max(0) - pixels.min(0), [2 * r] * 3, atol=cell)
    tri = pixels[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert volume == pytest.approx(4 / 3 * np.pi * r ** 3, rel=0.05)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()  # closed: every edge shared by exactly two faces


def test_reconstruct_puts_a_full_depth_prediction_on_the_silhouette():
    """End to end through reconstruct(): a network made to fill every ray the silhouette touches gives
    the disc's cylinder, through the whole depth window, where the disc is in the source image."""
    h, w, cx, cy, r = 240, 320, 200.0, 90.0, 40.0
    model = ShapeNet(ModelConfig(image_size=64, grid=32)).eval()
    with torch.no_grad():
        final = model.head[-1]
        final.weight.zero_()
        final.bias.fill_(5.0)
    vertices, faces, elevation, confidence = infer.reconstruct(model, disc_image(h, w, cx, cy, r))
    side = 96  # the disc's 80 px times the margin
    cell = side / 32
    np.testing.assert_allclose(vertices[:, :2].min(0), [cx - w / 2 - r, h / 2 - cy - r], atol=1.5 * cell)
    np.testing.assert_allclose(vertices[:, :2].max(0), [cx - w / 2 + r, h / 2 - cy + r], atol=1.5 * cell)
    np.testing.assert_allclose([vertices[:, 2].min(), vertices[:, 2].max()], [-side / 2, side / 2], atol=cell)
    assert faces.dtype == np.int64 and np.isfinite(elevation) and 0 < confidence < 1


def test_outline_rays_keep_their_most_likely_depths_and_nothing_else_changes():
    g, s = 4, 8
    prob = torch.full((g, g, g), 0.05)
    prob[:, 0, 0] = torch.tensor([0.1, 0.3, 0.25, 0.1])   # unsure ray inside the outline: peak 0.3 at depth 1
    prob[:, 1, 1] = torch.tensor([0.9, 0.2, 0.1, 0.0])    # confident ray: left as it is
    prob[:, 3, 3] = torch.tensor([0.1, 0.4, 0.1, 0.1])    # unsure ray outside the outline: left as it is
    alpha = torch.zeros(s, s)
    alpha[:4, :4] = 1.0                                   # cells (0, 0), (0, 1), (1, 0), (1, 1) are covered
    filled = infer.fill_outline_rays(prob, alpha)
    ray = filled[:, 0, 0]
    assert (ray > 0.5).tolist() == [False, True, True, False]   # within two thirds of the peak: 0.3 and 0.25
    assert ray.max() == pytest.approx(infer.RAY_PEAK)
    assert torch.equal(filled[:, 1, 1], prob[:, 1, 1])
    assert torch.equal(filled[:, 3, 3], prob[:, 3, 3])
    batched = infer.fill_outline_rays(prob[None].expand(2, -1, -1, -1), alpha[None].expand(2, -1, -1))
    assert torch.equal(batched[1], filled)


def test_global_heads_read_the_bottleneck_at_any_scale():
    """Format 1 fed the raw pooled bottleneck to its heads; in training its scale grew to ~340 and every
    hidden unit went dead, so elevation and confidence were one constant for every image. The heads now
    see it layer-normalised: the same features at 300 times the scale give the same answers, and
    different images still give different ones."""
    torch.manual_seed(0)
    model = ShapeNet(ModelConfig(image_size=32, grid=16)).eval()
    with torch.no_grad():
        model.global_head[2].weight.normal_(0, 0.5)
    rgba = tiny_batch(seed=3, count=2)["rgba"]
    with torch.no_grad():
        plain = model(rgba)
        handle = model.mid.register_forward_hook(lambda module, inputs, output: output * 300.0)
        scaled = model(rgba)
        handle.remove()
    torch.testing.assert_close(scaled["elevation"], plain["elevation"], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(scaled["confidence_logit"], plain["confidence_logit"], atol=1e-3, rtol=1e-3)
    assert abs(float(plain["elevation"][0] - plain["elevation"][1])) > 1e-3


def test_empty_rays_take_their_neighbours_depths_and_filled_rays_stay():
    g = 8
    prob = torch.zeros(g, g, g)
    prob[2:5, 3, 3] = 0.9                      # one filled ray, solid at depths 2-4
    out = infer.extend_rays(prob, cells=2)
    assert torch.equal(out[:, 3, 3], prob[:, 3, 3])
    for r, c in [(3, 4), (2, 2), (3, 5), (1, 3), (5, 5)]:   # within two cells: the same depths
        assert torch.equal(out[:, r, c], prob[:, 3, 3]), (r, c)
    assert (out[:, 3, 6] == 0).all() and (out[:, 0, 0] == 0).all()   # three cells away: still empty


def test_the_mesh_outline_follows_the_image_not_the_coarse_grid():
    """A network that fills every ray the silhouette touches, on an image whose outline is finer than its
    16-cell grid (a ring: a disc with a hole): cut by the image's alpha on the finer surface grid, the
    mesh's projection matches the ring far better than the grid's own staircase does."""
    from PIL import Image, ImageDraw

    h = w = 200
    yy, xx = np.mgrid[:h, :w]
    rr = np.hypot(xx + 0.5 - 100, yy + 0.5 - 100)
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = 180
    rgba[..., 3] = (((rr <= 70) & (rr >= 30)) * 255).astype(np.uint8)
    model = ShapeNet(ModelConfig(image_size=32, grid=16)).eval()
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.fill_(5.0)

    def outline_iou(surface_grid):
        vertices, faces, _, _ = infer.reconstruct(model, rgba, surface_grid=surface_grid)
        img = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(img)
        xs, ys = vertices[:, 0] + w / 2, h / 2 - vertices[:, 1]
        for tri in faces:
            draw.polygon([(xs[i], ys[i]) for i in tri], fill=255)
        mesh, mask = np.asarray(img) > 127, rgba[..., 3] > 127
        return (mesh & mask).sum() / (mesh | mask).sum()

    coarse, cut = outline_iou(None), outline_iou(96)
    assert cut > 0.97 and cut > coarse + 0.03, (coarse, cut)
