"""hunyuan3d-2mv (hy3dgen's multi-view shape pipeline) on a machine without hy3dgen, weights or a GPU:
the view names it is given, the model per preset and its step defaults, FlashVDM with 2.0's turbo VAE,
availability and its messages, what `install` fetches, and whole jobs through the test doubles
(tests/hunyuan_fakes.py), with the views reaching the built-in texturer."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from backend_local import vram_plan
from backend_local.engines import base, hunyuan_specs as specs, registry
from backend_local.engines.builtin.multiview import azimuth_rotation
from backend_local.engines.hunyuan2 import LIBRARY_VIEW_NAMES, PAINT_MODEL, Hunyuan2Engine, Hunyuan2MVEngine
from backend_local.install import spec as install_spec
from shared.errors import ENGINE_UNAVAILABLE, INVALID_INPUT, Gen3DError
from shared.request import TEXTURE_ENGINES, VIEW_AZIMUTHS, parse_request
from tests import hunyuan_fakes as fakes
from tests.test_hunyuan_engines import isolated, make_job  # noqa: F401 (isolated is a fixture)

MV = "hunyuan3d-2mv"
TURBO_VAE = os.path.join("tencent", "Hunyuan3D-2", "hunyuan3d-vae-v2-0-turbo")


@pytest.fixture
def mv(monkeypatch, isolated):  # noqa: F811
    library = fakes.install_library(monkeypatch, "hy3dgen")
    weights = fakes.make_weights(str(isolated / "weights"), Hunyuan2MVEngine.shape_model, PAINT_MODEL)
    return library, {"weights_dir": weights}


def coloured(colour, size=256):
    """A framed RGBA view: an opaque box of one colour on a transparent background."""
    image = np.zeros((size, size, 4), np.uint8)
    image[40:216, 70:186] = tuple(colour) + (255,)
    return image


# -- the view names


def test_our_views_are_given_under_the_side_of_the_object_each_camera_sees():
    """hy3dgen's MVImageProcessorV2 names the side of the object (front, left, back, right): the object faces
    +Z with +Y up, so its left side is +X (up x forward), which our `right` camera (azimuth 90) looks at."""
    forward, up = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    sides = {"left": np.cross(up, forward), "right": np.cross(forward, up), "back": -forward}
    assert np.allclose(sides["left"], [1, 0, 0])
    for ours, theirs in LIBRARY_VIEW_NAMES.items():
        toward_camera = azimuth_rotation(VIEW_AZIMUTHS[ours]).T @ forward     # the rotation takes it to +Z
        assert np.allclose(toward_camera, sides[theirs]), (ours, theirs)
    assert LIBRARY_VIEW_NAMES == {"right": "left", "back": "back", "left": "right"}


def test_views_reach_the_pipeline_as_one_dict_under_hy3dgens_names(mv):
    library, settings = mv
    engine = Hunyuan2MVEngine(settings)
    job, _events = make_job({"num_inference_steps": 3})
    job.views = {"right": coloured((200, 0, 0)), "back": coloured((0, 200, 0)), "left": coloured((0, 0, 200))}
    engine.generate_shape(job)
    image = library.named("pipeline")[0]["image"]
    assert isinstance(image, dict) and set(image) == {"front", "left", "back", "right"}
    for theirs, array in (("front", job.image), ("left", job.views["right"]), ("back", job.views["back"]),
                          ("right", job.views["left"])):
        assert image[theirs].mode == "RGBA" and np.array_equal(np.asarray(image[theirs]), array), theirs

    job, _events = make_job({"num_inference_steps": 3})
    job.views = {"back": coloured((0, 200, 0))}
    engine.generate_shape(job)
    assert set(library.named("pipeline")[1]["image"]) == {"front", "back"}
    engine.generate_shape(make_job({"num_inference_steps": 3})[0])           # one view: the front alone
    assert set(library.named("pipeline")[2]["image"]) == {"front"}


def test_shape_carries_the_views_registered_to_the_mesh(mv):
    """The library's mesh gets each view's camera (turned about +Y by its azimuth) and framing (the mesh seen
    from there fitted to the view's silhouette), so the built-in texturer can project every view."""
    _library, settings = mv
    job, _events = make_job({"num_inference_steps": 2})
    job.views = {"right": coloured((200, 0, 0)), "back": coloured((0, 200, 0))}
    shape = Hunyuan2MVEngine(settings).generate_shape(job)
    assert sorted(shape.views) == ["back", "right"] and shape.view is not None
    for name, extra in shape.views.items():
        assert np.allclose(extra.rotation, azimuth_rotation(VIEW_AZIMUTHS[name]))
        pixels = extra.mapping.to_pixels(shape.vertices @ extra.rotation.T)
        # the mesh seen from the view sits on the view's silhouette box (columns 70..186, rows 40..216):
        # same centre, and one scale making its box as large (fit_view: the geometric mean of both ratios)
        low, high = pixels.min(0), pixels.max(0)
        assert np.allclose((low + high) / 2, (128, 128), atol=1.0)
        assert np.isclose(np.prod(high - low), 116 * 176, rtol=0.03)
    assert Hunyuan2MVEngine(settings).generate_shape(make_job({"num_inference_steps": 2})[0]).views is None


# -- presets, steps, FlashVDM


def test_balanced_and_high_run_the_multiview_dit_with_upstreams_steps(mv):
    library, settings = mv
    engine = Hunyuan2MVEngine(settings)
    job, events = make_job()                                    # num_inference_steps null
    engine.generate_shape(job)
    loaded = library.named("from_pretrained")[0]
    assert loaded["model_path"] == os.path.join(settings["weights_dir"], "tencent", "Hunyuan3D-2mv")
    assert loaded["subfolder"] == "hunyuan3d-dit-v2-mv" and loaded["use_safetensors"]
    assert library.named("pipeline")[0]["num_inference_steps"] == 50 == job.request.num_inference_steps
    assert [m for _s, _f, m in events if "denoising step" in m][-1] == "denoising step 50 of 50"
    assert not library.named("enable_flashvdm")

    job, _events = make_job({"preset": "high"})
    engine.generate_shape(job)
    call = library.named("pipeline")[1]
    assert call["num_inference_steps"] == 75 and call["octree_resolution"] == 384
    assert len(library.named("from_pretrained")) == 1     # the same DiT at other steps: not read from disk again
    job, _events = make_job({"preset": "high", "num_inference_steps": 9})
    engine.generate_shape(job)
    assert library.named("pipeline")[2]["num_inference_steps"] == 9  # an explicit value wins


def test_fast_runs_the_turbo_dit_with_flashvdm_on_the_20_turbo_vae(mv):
    library, settings = mv
    engine = Hunyuan2MVEngine(settings)
    with pytest.raises(Gen3DError) as caught:                   # turbo folders not installed yet
        engine.generate_shape(make_job({"preset": "fast"})[0])
    message = caught.value.message
    assert caught.value.code == ENGINE_UNAVAILABLE
    assert "hunyuan3d-dit-v2-mv-turbo/config.yaml" in message and "tencent/Hunyuan3D-2mv" in message
    assert "hunyuan3d-vae-v2-0-turbo/config.yaml" in message and "repository tencent/Hunyuan3D-2." in message
    assert "python -m backend_local install hunyuan3d-2mv" in message

    fakes.make_weights(settings["weights_dir"], *Hunyuan2MVEngine.variant_files(specs.HUNYUAN_MV.shape["fast"]))
    written = fakes.write_vae_folder(os.path.join(settings["weights_dir"], TURBO_VAE), seed=5)
    job, _events = make_job({"preset": "fast"})
    engine.generate_shape(job)
    assert library.named("from_pretrained")[0]["subfolder"] == "hunyuan3d-dit-v2-mv-turbo"
    flash = library.named("enable_flashvdm")[0]
    # our folder is named Hunyuan3D-2mv, which upstream's enable_flashvdm would map to a hub download of the
    # turbo VAE: it is loaded from the declared folder here and the library told to keep it
    assert flash["enabled"] and flash["replace_vae"] is False
    call = library.named("pipeline")[0]
    assert call["num_inference_steps"] == 5 == job.request.num_inference_steps
    assert torch.equal(call["vae"].post_kl.weight, written) and call["vae"].flashvdm


def test_step_defaults_per_preset_are_declared():
    assert {p: (v.subfolder, v.steps, v.flashvdm) for p, v in specs.HUNYUAN_MV.shape.items()} == {
        "fast": ("hunyuan3d-dit-v2-mv-turbo", 5, True), "balanced": ("hunyuan3d-dit-v2-mv", 50, False),
        "high": ("hunyuan3d-dit-v2-mv", 75, False)}
    fast = specs.shape_variant(MV, "fast")
    assert fast.distilled and (fast.vae_repo_id, fast.vae_subfolder) == ("tencent/Hunyuan3D-2", "hunyuan3d-vae-v2-0-turbo")


# -- availability


def test_without_weights_it_is_unavailable_naming_files_folders_and_the_install_command(isolated, monkeypatch):  # noqa: F811
    weights = isolated / "weights"
    status = Hunyuan2MVEngine({"weights_dir": str(weights)}).availability()
    assert not status.available
    assert "hunyuan3d-dit-v2-mv/config.yaml, hunyuan3d-dit-v2-mv/model.fp16.safetensors" in status.reason
    assert str(weights / "tencent" / "Hunyuan3D-2mv") in status.reason
    assert "python -m backend_local install hunyuan3d-2mv" in status.reason
    assert status.details["texture"]["available"] is False and sorted(status.details) == ["shape", "texture"]
    assert "`python -m backend_local install hunyuan3d-2mv` builds it" in status.details["texture"]["reason"]

    monkeypatch.setitem(__import__("sys").modules, "hy3dgen", None)       # and without the library
    reason = Hunyuan2MVEngine().availability().reason
    assert "missing Python packages: hy3dgen" in reason and "python -m backend_local install hunyuan3d-2mv" in reason


def test_a_job_with_views_is_engine_unavailable_not_invalid_input(isolated, tmp_path):  # noqa: F811
    from backend_local.pipeline import Pipeline
    from tests.conftest import data

    request = parse_request({"image_path": data("monkey_views", "input.png"), "engine": MV,
                             "views": {"back": data("monkey_views", "view_back.png")}})
    with pytest.raises(Gen3DError) as caught:
        Pipeline("cpu", settings={MV: {"weights_dir": str(isolated / "w")}}).run(request, str(tmp_path / "out"))
    assert caught.value.code == ENGINE_UNAVAILABLE and "hunyuan3d-2mv" in caught.value.message
    assert "python -m backend_local install hunyuan3d-2mv" in caught.value.message
    assert not (tmp_path / "out").exists()


def test_views_with_a_painter_that_cannot_use_them_name_the_multiview_engines():
    from backend_local.pipeline import check_multiview

    check_multiview(parse_request({"image_path": "a.png", "engine": MV, "views": {"back": "b.png"}}))
    with pytest.raises(Gen3DError) as caught:
        check_multiview(parse_request({"image_path": "a.png", "engine": MV, "texture_engine": "hunyuan3d-2",
                                       "views": {"back": "b.png"}}))
    assert caught.value.code == INVALID_INPUT and "'hunyuan3d-2mv'" in caught.value.message


def test_capabilities_memory_and_the_engine_list():
    assert Hunyuan2MVEngine.capabilities == {"shape", "texture", "multiview"}
    assert Hunyuan2MVEngine.vram_gb == Hunyuan2Engine.vram_gb == {"shape": 6.0, "texture": 16.0}
    assert registry.ENGINES[MV] == "backend_local.engines.hunyuan2:Hunyuan2MVEngine"
    assert MV in registry.EngineRegistry().names() and MV in TEXTURE_ENGINES
    assert parse_request({"image_path": "a", "engine": MV}).effective_texture_engine == MV
    engine = Hunyuan2MVEngine({})
    summary = vram_plan.card_summary([engine.stage_need(stage) for stage in ("shape", "texture")])
    assert summary["24"] == "shape resident, texture resident"
    assert summary["16"].endswith("shape waits in host RAM") and "texture sequential offload" in summary["12"]


# -- what install fetches


def test_install_spec_fetches_every_folder_the_engine_reads():
    import fnmatch

    entry = install_spec.ENGINES[MV]
    assert "hy3dgen==2.0.2" in entry.packages and entry.no_deps == ("hy3dgen==2.0.2",)
    assert entry.source.repo == "Tencent-Hunyuan/Hunyuan3D-2" and entry.source.commit == install_spec.HUNYUAN2_COMMIT
    assert {ext.module for ext in entry.extensions} == {"custom_rasterizer_kernel",
                                                       "hy3dgen.texgen.differentiable_renderer.mesh_processor"}
    assert [w.repo_id for w in entry.weights] == ["tencent/Hunyuan3D-2mv", "tencent/Hunyuan3D-2"]
    patterns = {w.repo_id: w.allow_patterns for w in entry.weights}
    assert not any("v2-mv-fast" in p for p in patterns["tencent/Hunyuan3D-2mv"])     # no preset reads it
    read = Hunyuan2MVEngine.model_files()
    assert {(m.repo_id, m.subfolder) for m in read} == {
        ("tencent/Hunyuan3D-2mv", "hunyuan3d-dit-v2-mv"), ("tencent/Hunyuan3D-2mv", "hunyuan3d-dit-v2-mv-turbo"),
        ("tencent/Hunyuan3D-2", "hunyuan3d-vae-v2-0-turbo"), ("tencent/Hunyuan3D-2", "")}
    for model in read:
        for name in model.files:
            path = "/".join(part for part in (model.subfolder, name) if part)
            assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns[model.repo_id]), path

    from backend_local import cli

    args = cli.build_parser().parse_args(["install", MV, "--weights-dir", "/w"])
    assert args.engine == MV and args.weights_dir == "/w"


# -- whole jobs


def write_rgba(path, colour):
    Image.fromarray(coloured(colour, 192)).save(path)
    return str(path)


def test_whole_job_with_views_projects_every_view_with_the_builtin_texturer(mv, monkeypatch, tmp_path):
    """A red front and a blue back: the built-in texturer, given the views registered to the library's mesh,
    paints the back half blue (the back photo) and the front half red."""
    from backend_local.pipeline import Pipeline
    from bench.render_psnr import read_glb

    library, settings = mv
    request = parse_request({"image_path": write_rgba(tmp_path / "front.png", (220, 30, 30)), "engine": MV,
                             "texture_engine": "builtin", "face_count": 3000, "texture_size": 256,
                             "views": {"back": write_rgba(tmp_path / "back.png", (30, 30, 220))}})
    out = str(tmp_path / "job")
    manifest = Pipeline("cpu", settings={MV: settings}).run(request, out)
    assert manifest["engine"] == {"shape": MV, "texture": "builtin"}
    assert set(library.named("pipeline")[0]["image"]) == {"front", "back"}
    with open(os.path.join(out, "meta.json")) as handle:
        meta = json.load(handle)
    assert meta["params"]["num_inference_steps"] == 50 and meta["params"]["views"] == ["back"]
    assert "input_back.png" in os.listdir(out)

    vertices, faces, uvs, _images = read_glb(os.path.join(out, "mesh.glb"))
    albedo = np.asarray(Image.open(os.path.join(out, "albedo.png")).convert("RGB")).astype(int)
    centre_uv = uvs[faces].mean(axis=1)
    texel = albedo[np.clip((centre_uv[:, 1] * 256).astype(int), 0, 255), np.clip((centre_uv[:, 0] * 256).astype(int),
                                                                                  0, 255)]
    normals = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    front, back = texel[normals[:, 2] > 0.8], texel[normals[:, 2] < -0.8]
    assert len(front) > 20 and len(back) > 20
    assert np.median(front[:, 0] - front[:, 2]) > 60          # red
    assert np.median(back[:, 2] - back[:, 0]) > 60            # blue: the back photo, not the front mirrored


def test_its_texture_stage_is_the_20_painter_on_the_front_image(mv):
    library, settings = mv
    engine = Hunyuan2MVEngine(settings)
    engine.painter_needs_cuda = False            # the painter double runs on the CPU
    assert engine.availability(base.TEXTURE).available, engine.availability(base.TEXTURE).reason
    job, _events = make_job({"texture_size": 256})
    job.views = {"back": coloured((0, 0, 200))}
    result = engine.generate_texture(job, engine.generate_shape(job))
    painted = library.named("paint_from_pretrained")[0]
    assert painted["model_path"] == os.path.join(settings["weights_dir"], "tencent", "Hunyuan3D-2")
    assert painted["subfolder"] == "hunyuan3d-paint-v2-0"
    paint = library.named("paint")
    assert len(paint) == 1 and paint[0]["image_mode"] == "RGBA" and np.array_equal(paint[0]["pixels"], job.image)
    albedo = result.maps["albedo"].reshape(-1, 3).astype(int)
    assert albedo[:, 2].min() >= 120 and albedo[:, 2].max() <= 135            # the painter's albedo, resampled
    assert set(result.maps) == {"albedo", "normal", "roughness", "metallic", "ao"}
