"""The built-in engine with a learned shape model: the network's mesh and elevation when it is confident,
the hand-made priors when it is not, when the setting says priors, or when extra views are given. The
network here is an untrained one whose heads are set by hand, so each path's outcome is known."""

import math
import tempfile

import numpy as np
import pytest
import torch
import trimesh

from backend_local.engines.base import JobContext
from backend_local.engines.builtin.engine import BuiltinEngine
from backend_local.engines.builtin.learned import weights
from backend_local.engines.builtin.learned.model import ModelConfig, ShapeNet
from shared.request import parse_request

ELEVATION_DEG = 20.0


def network_file(folder, confidence_logit):
    """A network that fills every ray the silhouette touches through the whole depth window (a flat-topped
    cylinder as deep as the window is wide: deeper than the priors would make a disc), says the camera is
    20 degrees up, and reports the given confidence."""
    torch.manual_seed(0)
    model = ShapeNet(ModelConfig(image_size=64, grid=32)).eval()
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.fill_(5.0)
        model.global_head[-1].weight.zero_()
        model.global_head[-1].bias.copy_(torch.tensor([math.radians(ELEVATION_DEG), confidence_logit]))
    path = "%s/shape_model_%s.safetensors" % (folder, "sure" if confidence_logit > 0 else "unsure")
    weights.save(path, model)
    return path


def disc_job(views=None):
    size = 256
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    image = np.zeros((size, size, 4), np.uint8)
    image[..., :3] = (200, 120, 40)
    image[..., 3] = np.where((xx - 128) ** 2 + (yy - 128) ** 2 <= 80 ** 2, 255, 0)
    request = parse_request({"image_path": "x.png", "face_count": 2000})
    return JobContext(request, image, torch.device("cpu"), tempfile.mkdtemp(), views=views)


def depth_over_width(result):
    extent = result.vertices.max(0) - result.vertices.min(0)
    return extent[2] / extent[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learned")
    return {"sure": network_file(folder, 3.0), "unsure": network_file(folder, -3.0)}


def test_a_confident_network_gives_the_shape_and_the_elevation(files):
    result = BuiltinEngine({"shape_model": files["sure"]}).generate_shape(disc_job())
    mesh = trimesh.Trimesh(result.vertices, result.faces, process=False)
    assert mesh.is_watertight and mesh.volume > 0
    assert abs(len(result.faces) - 2000) <= 200
    assert result.elevation_deg == pytest.approx(ELEVATION_DEG, abs=0.05)   # stored as fp16
    assert depth_over_width(result) > 1.05          # the window's full depth (1.2x the disc), not a ball
    assert result.view is not None and result.detail is None


def test_an_unsure_network_the_priors_setting_and_extra_views_keep_the_priors(files):
    priors = BuiltinEngine({"shape_model": "priors"}).generate_shape(disc_job())
    assert depth_over_width(priors) < 1.05 and priors.elevation_deg != pytest.approx(ELEVATION_DEG)
    unsure = BuiltinEngine({"shape_model": files["unsure"]}).generate_shape(disc_job())
    assert np.allclose(unsure.vertices, priors.vertices) and unsure.elevation_deg == priors.elevation_deg
    right = disc_job().image.copy()
    with_views = BuiltinEngine({"shape_model": files["sure"]}).generate_shape(disc_job(views={"right": right}))
    assert with_views.elevation_deg != pytest.approx(ELEVATION_DEG)


def test_a_shape_model_setting_naming_no_file_is_engine_unavailable(tmp_path):
    from shared.errors import ENGINE_UNAVAILABLE, Gen3DError

    with pytest.raises(Gen3DError) as raised:
        BuiltinEngine({"shape_model": str(tmp_path / "missing.safetensors")}).generate_shape(disc_job())
    assert raised.value.code == ENGINE_UNAVAILABLE and "missing.safetensors" in raised.value.message


def test_weights_of_another_format_version_are_engine_unavailable(files, tmp_path):
    """A file written by format 1 (heads on the raw bottleneck) is refused with a plain message, not a traceback."""
    import json as _json

    from safetensors import safe_open
    from safetensors.torch import save_file
    from shared.errors import ENGINE_UNAVAILABLE, Gen3DError

    with safe_open(files["sure"], framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("global_norm.")}
        metadata = dict(f.metadata())
    config = _json.loads(metadata["config"])
    config["version"] = 1
    metadata.update(config=_json.dumps(config), version="1")
    old = str(tmp_path / "format1.safetensors")
    save_file(tensors, old, metadata=metadata)
    with pytest.raises(Gen3DError) as raised:
        BuiltinEngine({"shape_model": old}).generate_shape(disc_job())
    assert raised.value.code == ENGINE_UNAVAILABLE and "format version 1" in raised.value.message
    assert "priors" in raised.value.message
