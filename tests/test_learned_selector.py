"""The selector between the learned shape and the priors: both scored in the render's own frame, and the
refit that touches the confidence output only."""

import numpy as np
import torch

from backend_local.engines.builtin.learned import selector
from backend_local.engines.builtin.learned.model import ModelConfig, ShapeNet


def test_depth_centring_and_iou():
    truth = torch.zeros(8, 8, 8, dtype=torch.bool)
    truth[3:5, 2:6, 2:6] = True
    shifted = torch.roll(truth, 3, dims=0)
    assert selector.iou(shifted, truth) == 0.0
    assert torch.equal(selector.centred_on(shifted, truth), truth)
    assert selector.iou(truth, truth) == 1.0
    assert selector.iou(torch.zeros_like(truth), torch.zeros_like(truth)) == 1.0


def test_priors_occupancy_lies_on_the_image_window():
    """A disc in the middle of a 128 px image: the priors' solid, seen along the depth axis, is that disc
    on the 32-cell grid of the same window, and it is deep (a ball, not a sheet)."""
    s, g, radius = 128, 32, 40.0
    yy, xx = np.mgrid[:s, :s] + 0.5
    rgba = np.zeros((s, s, 4), np.uint8)
    rgba[..., :3] = 150
    rgba[..., 3] = np.where((xx - 64) ** 2 + (yy - 54) ** 2 <= radius ** 2, 255, 0)   # 10 px above the centre
    occupied = selector.priors_occupancy(rgba, g)
    c = (np.arange(g) + 0.5) / g * s
    cols, rows = np.meshgrid(c, c)
    disc = torch.from_numpy((cols - 64) ** 2 + (rows - 54) ** 2 <= radius ** 2)
    assert selector.iou(occupied.any(0), disc) > 0.9
    assert int(occupied.any(2).any(1).sum()) >= 0.8 * 2 * radius / (s / g)


def test_the_network_sees_the_render_window_at_its_size():
    rgba = torch.zeros(4, 64, 64)
    rgba[:3] = 0.25
    rgba[3, 16:48, 8:40] = 1.0
    view = selector.network_view(rgba, 32)
    assert view.shape == (32, 32, 4)
    np.testing.assert_allclose(view[..., 3], torch.nn.functional.avg_pool2d(rgba[3:4], 2)[0].numpy())
    assert np.allclose(view[8:24, 4:20, :3], 0.25)


def test_fit_learns_when_the_network_wins_and_touches_only_the_confidence_output():
    torch.manual_seed(0)
    model = ShapeNet(ModelConfig(image_size=32, grid=16)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(500):
        features = torch.from_numpy(rng.normal(size=128).astype(np.float32))
        wins = bool(rng.random() < 0.5)
        features[0] = 2.0 if wins else -2.0    # one feature tells, the other 127 are noise
        rows.append({"family": "x", "features": features, "learned": 0.6 if wins else 0.3, "priors": 0.45,
                     "confidence": 0.5})
    figures = selector.fit(model, rows)
    assert figures["accuracy"] > 0.9 and figures["samples_held_out"] == 100
    assert figures["iou_selected"] > max(figures["iou_priors"], figures["iou_learned"])
    after = model.state_dict()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert sorted(changed) == ["global_head.2.bias", "global_head.2.weight"]
    assert torch.equal(after["global_head.2.weight"][0], before["global_head.2.weight"][0])   # elevation kept
    assert after["global_head.2.bias"][0] == before["global_head.2.bias"][0]


def test_compare_scores_both_shapes_on_generated_objects():
    torch.manual_seed(0)
    model = ShapeNet(ModelConfig(image_size=32, grid=16)).eval()
    rows = selector.compare(model, 2, image_size=64, batch=2)
    assert len(rows) == 2
    for row in rows:
        assert 0.0 <= row["learned"] <= 1.0 and 0.0 < row["priors"] <= 1.0
        assert row["features"].shape == (128,) and 0 < row["confidence"] < 1
    assert selector.by_family(rows)[rows[0]["family"]]["n"] >= 1
