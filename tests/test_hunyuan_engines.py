"""The Hunyuan engine adapters on a machine without the Hunyuan packages, weights or a GPU (as CI is):
unavailability and its messages, and, against test doubles of the libraries (tests/hunyuan_fakes.py),
how every request field reaches the library, the folder the library runs in, out-of-memory and cancel
handling, carrying painted PBR maps, background removal, and whole jobs in the mixed mode."""

import json
import os
import tempfile
import threading

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from backend_local.engines import base, registry
from backend_local.engines.hunyuan2 import PAINT_MODEL, Hunyuan2Engine, Hunyuan2MiniEngine
from backend_local.engines.hunyuan21 import DINO_MODEL, PAINT_MODEL as PAINT21, SHAPE_MODEL as SHAPE21
from backend_local.engines.hunyuan21 import Hunyuan21Engine
from shared.errors import CANCELLED, ENGINE_UNAVAILABLE, OUT_OF_MEMORY, Gen3DError
from shared.request import parse_request
from tests import hunyuan_fakes as fakes
from tests.conftest import data, run_cli

HUNYUAN_ENGINES = {
    "hunyuan3d-2.1": "backend_local.engines.hunyuan21:Hunyuan21Engine",
    "hunyuan3d-2": "backend_local.engines.hunyuan2:Hunyuan2Engine",
    "hunyuan3d-2mini": "backend_local.engines.hunyuan2:Hunyuan2MiniEngine",
    "hunyuan3d-2mv": "backend_local.engines.hunyuan2:Hunyuan2MVEngine",
}


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No weights anywhere: every lookup folder points into an empty temporary tree."""
    for key in ("GEN3D_WEIGHTS_DIR", "HY3DGEN_MODELS", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME",
                "GEN3D_HUNYUAN21_REPO", "U2NET_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HY3DGEN_MODELS", str(tmp_path / "hy3dgen"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    monkeypatch.setenv("GEN3D_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def framed_image(size=256):
    image = np.zeros((size, size, 4), np.uint8)
    image[48:208, 80:176] = (180, 90, 40, 255)
    return image


def make_job(request_fields=None, work_dir=None, cancel=None):
    fields = {"image_path": "unused.png", "face_count": 2000, "texture_size": 256}
    fields.update(request_fields or {})
    events = []
    job = base.JobContext(parse_request(fields), framed_image(), torch.device("cpu"), work_dir or tempfile.mkdtemp(),
                          lambda stage, fraction, message: events.append((stage, fraction, message)), cancel)
    return job, events


# -- without packages or weights


def test_modules_import_without_importing_the_libraries():
    import subprocess
    import sys

    from tests.conftest import ROOT

    probe = ("import sys, backend_local.engines.hunyuan2, backend_local.engines.hunyuan21; "
             "print([m for m in ('hy3dgen', 'hy3dshape', 'diffusers', 'transformers', 'pymeshlab') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    for engine in (Hunyuan21Engine(), Hunyuan2Engine(), Hunyuan2MiniEngine()):
        assert engine.capabilities and engine.vram_gb[base.SHAPE] > 0
    assert Hunyuan21Engine.vram_gb == {"shape": 10.0, "texture": 21.0}
    assert Hunyuan2Engine.vram_gb == {"shape": 6.0, "texture": 16.0}
    assert Hunyuan2MiniEngine.vram_gb == {"shape": 5.0} and Hunyuan2MiniEngine.capabilities == {"shape"}


def test_missing_weights_name_the_files_and_every_folder_searched(isolated):
    weights = isolated / "weights"
    status = Hunyuan2Engine({"weights_dir": str(weights)}).availability()
    assert not status.available
    assert "hunyuan3d-dit-v2-0/config.yaml, hunyuan3d-dit-v2-0/model.fp16.safetensors" in status.reason
    for folder in (weights / "tencent" / "Hunyuan3D-2", isolated / "hy3dgen" / "tencent" / "Hunyuan3D-2",
                   isolated / "hf" / "hub" / "models--tencent--Hunyuan3D-2"):
        assert str(folder) in status.reason
    assert status.details["texture"]["available"] is False


def test_missing_packages_are_named(isolated, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "hy3dgen", None)
    monkeypatch.setitem(sys.modules, "pymeshlab", None)
    reason = Hunyuan2MiniEngine().availability().reason
    assert "missing Python packages: hy3dgen" in reason and "pymeshlab" in reason
    assert "python -m backend_local install hunyuan3d-2mini" in reason


def test_21_names_its_repository_setting(isolated, tmp_path):
    assert "GEN3D_HUNYUAN21_REPO" in Hunyuan21Engine().availability().reason
    not_a_checkout = tmp_path / "somewhere"
    not_a_checkout.mkdir()
    reason = Hunyuan21Engine({"repo": str(not_a_checkout)}).availability().reason
    assert "is not a Hunyuan3D-2.1 checkout" in reason and "hy3dshape" in reason


def write_painter_tree(repo, missing):
    """A Hunyuan3D-2.1 checkout whose painter imports like the real one: textureGenPipeline -> utils/
    multiview_utils (which imports hunyuanpaintpbr only when it loads, as upstream's does), and
    hunyuanpaintpbr/__init__ -> unet/model -> `missing` (upstream: pytorch_lightning)."""
    fakes.make_repo21(repo)
    files = {
        "torchvision_fix.py": "def apply_fix():\n    return True\n",
        "hy3dpaint/textureGenPipeline.py": "import bpy\nfrom utils.multiview_utils import multiviewDiffusionNet\n",
        "hy3dpaint/utils/__init__.py": "",
        "hy3dpaint/utils/multiview_utils.py": ("class multiviewDiffusionNet:\n    def __init__(self):\n"
                                               "        from hunyuanpaintpbr.unet.modules import Dino_v2\n"),
        "hy3dpaint/hunyuanpaintpbr/__init__.py": "from .unet.model import HunyuanPaint\n",
        "hy3dpaint/hunyuanpaintpbr/unet/__init__.py": "",
        "hy3dpaint/hunyuanpaintpbr/unet/model.py": "import %s as pl\nHunyuanPaint = pl\n" % missing,
        "hy3dpaint/custom_rasterizer.py": "",
    }
    for name, text in files.items():
        path = os.path.join(repo, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
    return repo


def test_missing_transitive_import_is_engine_unavailable_naming_the_package(isolated, monkeypatch):
    import subprocess

    from backend_local.engines import hunyuan_common as hc

    missing = "gen3d_absent_lightning"          # stands in for pytorch_lightning, which nothing installed
    repo = write_painter_tree(str(isolated / "Hunyuan3D-2.1"), missing)
    weights = fakes.make_weights(str(isolated / "weights"), SHAPE21, PAINT21, DINO_MODEL)
    monkeypatch.setattr(hc, "missing_modules", lambda names, paths=None: [])   # the quick check passes
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(hc, "_PROBE_CACHE", {})
    runs = []
    real_run = subprocess.run
    painter_probe = lambda args: "textureGenPipeline" in args[0][-1]     # noqa: E731 (the shape chain is another)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: (painter_probe(a) and runs.append(a)) or real_run(*a, **k))
    settings = {"repo": repo, "weights_dir": weights}

    status = Hunyuan21Engine(settings).availability(base.TEXTURE)
    assert not status.available
    assert "missing Python package %s" % missing in status.reason
    assert os.path.join("hunyuanpaintpbr", "unet", "model.py") in status.reason      # who imported it
    assert "python -m backend_local install hunyuan3d-2.1" in status.reason
    for name, path in HUNYUAN_ENGINES.items():
        monkeypatch.setitem(registry.ENGINES, name, path)
    with pytest.raises(Gen3DError) as caught:
        registry.EngineRegistry({"hunyuan3d-2.1": settings}).get("hunyuan3d-2.1", base.TEXTURE)
    assert caught.value.code == ENGINE_UNAVAILABLE and missing in caught.value.message
    assert len(runs) == 1                                  # cached: one subprocess for both checks
    monkeypatch.setattr(hc, "_PROBE_CACHE", {})
    assert missing in Hunyuan21Engine(settings).availability(base.TEXTURE).reason
    assert len(runs) == 1                                  # and on disk, for the next process

    with open(os.path.join(repo, "hy3dpaint", missing + ".py"), "w") as handle:    # now it is installed
        handle.write("")
    status = Hunyuan21Engine(settings).availability(base.TEXTURE)
    assert len(runs) == 2 and status.available, status.reason    # the folder changed: probed again


def test_registry_refuses_an_unavailable_engine_with_the_reason(isolated, monkeypatch):
    for name, path in HUNYUAN_ENGINES.items():
        monkeypatch.setitem(registry.ENGINES, name, path)
    with pytest.raises(Gen3DError) as caught:
        registry.EngineRegistry({"hunyuan3d-2mini": {"weights_dir": str(isolated / "w")}}).get("hunyuan3d-2mini")
    assert caught.value.code == ENGINE_UNAVAILABLE and not caught.value.retryable
    assert "hunyuan3d-dit-v2-mini" in caught.value.message and str(isolated / "w") in caught.value.message
    with pytest.raises(Gen3DError) as caught:
        registry.EngineRegistry().get("hunyuan3d-2mini", base.TEXTURE)
    assert "cannot do the texture stage" in caught.value.message


def test_engines_json_lists_every_hunyuan_engine_and_why_not(isolated, monkeypatch):
    monkeypatch.setenv("GEN3D_WEIGHTS_DIR", str(isolated / "weights"))
    result = run_cli("engines", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["builtin"]["available"] is True
    for name, capabilities in (("hunyuan3d-2.1", ["shape", "texture", "texture_existing"]),
                               ("hunyuan3d-2", ["shape", "texture", "texture_existing"]),
                               ("hunyuan3d-2mini", ["shape"]),
                               ("hunyuan3d-2mv", ["multiview", "shape", "texture"])):
        assert rows[name]["capabilities"] == capabilities and rows[name]["available"] is False
        assert rows[name]["vram_gb"]["shape"] > 0 and rows[name]["reason"]
    assert "GEN3D_HUNYUAN21_REPO" in rows["hunyuan3d-2.1"]["reason"]
    assert str(isolated / "weights") in rows["hunyuan3d-2"]["reason"]


# -- against the library doubles


@pytest.fixture
def hy3dgen(monkeypatch, isolated):
    library = fakes.install_library(monkeypatch, "hy3dgen")
    weights = fakes.make_weights(str(isolated / "weights"), Hunyuan2Engine.shape_model, Hunyuan2MiniEngine.shape_model,
                                 PAINT_MODEL)
    return library, {"weights_dir": weights}


def test_shape_maps_every_request_field(hy3dgen):
    library, settings = hy3dgen
    engine = Hunyuan2Engine(dict(settings, num_chunks=12345))
    job, events = make_job({"seed": 4242, "num_inference_steps": 7, "guidance_scale": 3.5, "octree_resolution": 320,
                            "face_count": 1500})
    shape = engine.generate_shape(job)

    loaded = library.named("from_pretrained")[0]
    assert loaded["model_path"] == os.path.join(settings["weights_dir"], "tencent", "Hunyuan3D-2")
    assert loaded["subfolder"] == "hunyuan3d-dit-v2-0" and loaded["use_safetensors"] and loaded["variant"] == "fp16"
    assert loaded["device"] == "cpu" and loaded["dtype"] == torch.float32     # fp16 only on CUDA
    call = library.named("pipeline")[0]
    assert isinstance(call["generator"], torch.Generator) and call["generator"].initial_seed() == 4242
    assert call["num_inference_steps"] == 7 and call["guidance_scale"] == 3.5
    assert call["octree_resolution"] == 320 and call["num_chunks"] == 12345
    assert call["image"].mode == "RGBA" and call["image"].size == (256, 256)
    assert library.named("face_reducer")[0]["max_facenum"] == 1500
    assert library.named("floater_remover") and library.named("degenerate_remover")

    mesh = trimesh.Trimesh(shape.vertices, shape.faces, process=False)
    assert mesh.is_watertight and len(shape.faces) <= 1500 and shape.view is None
    low, high = shape.vertices.min(0), shape.vertices.max(0)
    assert np.allclose((low + high) / 2, 0, atol=1e-6) and np.isclose((high - low).max(), 2.0)
    steps = [message for stage, _fraction, message in events if "denoising step" in message]
    assert len(steps) == 7 and steps[-1] == "denoising step 7 of 7"


@pytest.mark.parametrize("engine_class", [Hunyuan2Engine, Hunyuan2MiniEngine])
def test_null_steps_run_the_engines_tuned_default_and_the_job_records_it(hy3dgen, engine_class):
    library, settings = hy3dgen
    job, events = make_job()                                   # num_inference_steps left out: null
    assert job.request.num_inference_steps is None
    engine_class(settings).generate_shape(job)
    assert library.named("from_pretrained")[0]["subfolder"] == engine_class.shape_model.subfolder
    assert library.named("pipeline")[0]["num_inference_steps"] == 50     # upstream's default, not 5
    assert job.request.num_inference_steps == 50                         # what meta.json will say
    assert [m for _s, _f, m in events if "denoising step" in m][-1] == "denoising step 50 of 50"
    assert not library.named("enable_flashvdm")


def test_high_preset_runs_more_steps_and_a_finer_octree(hy3dgen):
    library, settings = hy3dgen
    job, _events = make_job({"preset": "high"})
    Hunyuan2Engine(settings).generate_shape(job)
    call = library.named("pipeline")[0]
    assert call["num_inference_steps"] == 75 and call["octree_resolution"] == 384
    assert library.named("from_pretrained")[0]["subfolder"] == "hunyuan3d-dit-v2-0"
    job, _events = make_job({"preset": "high", "octree_resolution": 320, "num_inference_steps": 12})
    Hunyuan2Engine(settings).generate_shape(job)
    assert library.named("pipeline")[1]["num_inference_steps"] == 12          # explicit fields win
    assert library.named("pipeline")[1]["octree_resolution"] == 320


@pytest.mark.parametrize("engine_class,turbo,vae", [
    (Hunyuan2Engine, "hunyuan3d-dit-v2-0-turbo", "hunyuan3d-vae-v2-0-turbo"),
    (Hunyuan2MiniEngine, "hunyuan3d-dit-v2-mini-turbo", "hunyuan3d-vae-v2-mini-turbo"),
])
def test_fast_preset_runs_the_turbo_model_with_flashvdm(hy3dgen, engine_class, turbo, vae):
    library, settings = hy3dgen
    root = os.path.join(settings["weights_dir"], engine_class.spec.repo_id)
    engine = engine_class(settings)
    with pytest.raises(Gen3DError) as caught:                 # turbo weights not there yet
        engine.generate_shape(make_job({"preset": "fast"})[0])
    assert caught.value.code == ENGINE_UNAVAILABLE and "%s/config.yaml" % turbo in caught.value.message
    assert "python -m backend_local install %s" % engine.name in caught.value.message

    fakes.make_weights(settings["weights_dir"], *engine_class.variant_files(engine_class.spec.shape["fast"]))
    written = fakes.write_vae_folder(os.path.join(root, vae), seed=3)
    job, _events = make_job({"preset": "fast"})
    engine.generate_shape(job)
    assert library.named("from_pretrained")[0]["subfolder"] == turbo
    flash = library.named("enable_flashvdm")[0]
    assert flash["enabled"] and flash["replace_vae"] is False and flash["mc_algo"] == "mc"
    call = library.named("pipeline")[0]
    assert call["num_inference_steps"] == 5 and job.request.num_inference_steps == 5
    assert torch.equal(call["vae"].post_kl.weight, written) and call["vae"].flashvdm     # the turbo VAE decodes

    engine.generate_shape(make_job()[0])                        # balanced again: the standard model
    assert [c["subfolder"] for c in library.named("from_pretrained")] == [turbo, engine_class.shape_model.subfolder]
    assert library.named("pipeline")[1]["num_inference_steps"] == 50


def test_21_fast_has_no_turbo_model(hy21):
    library, settings = hy21
    job, _events = make_job({"preset": "fast"})
    Hunyuan21Engine(settings).generate_shape(job)
    assert library.named("from_pretrained")[0]["subfolder"] == "hunyuan3d-dit-v2-1"
    assert library.named("pipeline")[0]["num_inference_steps"] == 30 and not library.named("enable_flashvdm")


def test_library_runs_in_a_private_folder_inside_the_job(hy3dgen):
    library, settings = hy3dgen
    work = tempfile.mkdtemp()
    before = os.getcwd()
    Hunyuan2MiniEngine(settings).generate_shape(make_job(work_dir=work)[0])
    call = library.named("pipeline")[0]
    assert os.path.dirname(call["cwd"]) == work and call["tempdir"] == call["cwd"]
    assert os.getcwd() == before and os.listdir(work) == []     # its scratch file went with the folder


def test_models_stay_loaded_between_jobs_and_unload(hy3dgen):
    library, settings = hy3dgen
    engine = Hunyuan2MiniEngine(settings)
    engine.generate_shape(make_job()[0])
    engine.generate_shape(make_job({"seed": 2})[0])
    assert len(library.named("from_pretrained")) == 1 and engine.loaded_stages() == {"shape"}
    engine.unload("shape")
    assert engine.loaded_stages() == set()
    engine.generate_shape(make_job()[0])
    assert len(library.named("from_pretrained")) == 2


def test_out_of_memory_becomes_out_of_memory_and_the_engine_keeps_working(hy3dgen):
    library, settings = hy3dgen
    engine = Hunyuan2Engine(settings)
    library.shape_error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    before = os.getcwd()
    with pytest.raises(Gen3DError) as caught:
        engine.generate_shape(make_job()[0])
    assert caught.value.code == OUT_OF_MEMORY and caught.value.retryable and caught.value.stage == "shape"
    assert "hunyuan3d-2/shape" in caught.value.message and "octree_resolution" in caught.value.message
    assert os.getcwd() == before
    assert engine.generate_shape(make_job()[0]).faces.size     # the next job runs with the model still loaded
    assert len(library.named("from_pretrained")) == 1


def test_cancel_stops_the_library_loop(hy3dgen):
    library, settings = hy3dgen
    cancel = threading.Event()

    def report(stage, fraction, message):
        if message == "denoising step 2 of 5":       # the user presses Cancel during the second step
            cancel.set()

    job = base.JobContext(parse_request({"image_path": "x.png", "num_inference_steps": 5}), framed_image(),
                          torch.device("cpu"), tempfile.mkdtemp(), report, cancel)
    with pytest.raises(Gen3DError) as caught:
        Hunyuan2MiniEngine(settings).generate_shape(job)
    assert caught.value.code == CANCELLED
    assert not library.named("face_reducer")                     # nothing ran after the cancel


def test_open_library_mesh_is_closed_for_any_texturer(hy3dgen):
    library, settings = hy3dgen
    library.open_mesh = True
    shape = Hunyuan2MiniEngine(settings).generate_shape(make_job()[0])
    assert trimesh.Trimesh(shape.vertices, shape.faces, process=False).is_watertight


def test_hy3dgen_texture_paints_albedo_and_derives_the_rest(hy3dgen):
    library, settings = hy3dgen
    engine = Hunyuan2Engine(settings)
    engine.painter_needs_cuda = False      # the painter double runs on the CPU
    job, _events = make_job({"texture_size": 256})
    shape = engine.generate_shape(job)
    result = engine.generate_texture(job, shape)

    assert library.named("paint_from_pretrained")[0]["model_path"] == os.path.join(settings["weights_dir"], "tencent",
                                                                                  "Hunyuan3D-2")
    paint = library.named("paint")[0]
    assert paint["faces"] == len(shape.faces) and paint["image_mode"] == "RGBA"
    assert paint["texture_size"] == (512, 512)                 # the painter bakes at twice our size
    assert set(result.maps) == {"albedo", "normal", "roughness", "metallic", "ao"}
    albedo = result.maps["albedo"].reshape(-1, 3).astype(int)
    assert albedo[:, 2].min() >= 120 and albedo[:, 2].max() <= 135          # the painter's blue 0.5 everywhere
    assert albedo[:, 0].std() > 30 and albedo[:, 1].std() > 30               # its UV gradient, resampled
    for name in ("roughness", "metallic", "ao"):
        assert result.maps[name].shape == (256, 256) and result.maps[name].dtype == np.uint8
    assert result.maps["normal"].shape == (256, 256, 3)
    assert trimesh.Trimesh(result.vertices, result.faces, process=False).faces.shape == shape.faces.shape


def test_painter_without_cuda_is_engine_unavailable(hy3dgen, monkeypatch):
    _library, settings = hy3dgen
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    engine = Hunyuan2Engine(settings)
    assert "CUDA" in engine.availability(base.TEXTURE).reason
    with pytest.raises(Gen3DError) as caught:
        engine.generate_texture(make_job()[0], None)
    assert caught.value.code == ENGINE_UNAVAILABLE and caught.value.stage == "texture"


def test_background_removal_uses_the_library_remover_only_offline(hy3dgen, isolated):
    library, settings = hy3dgen
    engine = Hunyuan2Engine(settings)
    rgb = np.full((32, 48, 3), 200, np.uint8)
    assert engine.cut_out(rgb) is None and not library.named("remover_init")     # no model file: no download
    os.makedirs(str(isolated / "u2net"))
    (isolated / "u2net" / "u2net.onnx").write_bytes(b"model")
    alpha = engine.cut_out(rgb)
    assert alpha.shape == (32, 48) and (alpha == 77).all()
    assert library.named("remover")[0] == {"mode": "RGB", "size": (48, 32)}


# -- hunyuan3d-2.1 against its doubles


@pytest.fixture
def hy21(monkeypatch, isolated):
    library = fakes.install_library(monkeypatch, "hy3dshape")
    repo = fakes.make_repo21(str(isolated / "Hunyuan3D-2.1"))
    weights = fakes.make_weights(str(isolated / "weights"), SHAPE21, PAINT21, DINO_MODEL)
    return library, {"weights_dir": weights, "repo": repo}


def test_21_shape_loads_the_ckpt_and_runs_with_the_repo_on_the_path(hy21):
    import sys

    library, settings = hy21
    engine = Hunyuan21Engine(settings)
    assert engine.availability(base.SHAPE).available
    shape = engine.generate_shape(make_job({"seed": 9, "num_inference_steps": 3})[0])
    loaded = library.named("from_pretrained")[0]
    assert loaded["subfolder"] == "hunyuan3d-dit-v2-1" and loaded["use_safetensors"] is False
    job = make_job()[0]
    engine.generate_shape(job)
    assert library.named("pipeline")[1]["num_inference_steps"] == 50 == job.request.num_inference_steps
    assert library.named("pipeline")[0]["generator"].initial_seed() == 9
    assert trimesh.Trimesh(shape.vertices, shape.faces, process=False).is_watertight
    assert os.path.join(settings["repo"], "hy3dshape") not in sys.path     # only while the library runs


def test_21_texture_carries_metallic_and_roughness(hy21, monkeypatch):
    library, settings = hy21
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)    # the painter double needs no GPU
    engine = Hunyuan21Engine(dict(settings, paint_views=8, paint_resolution=768))
    engine.painter_needs_cuda = False
    assert engine.availability(base.TEXTURE).available, engine.availability(base.TEXTURE).reason
    work = tempfile.mkdtemp()
    job, _events = make_job({"texture_size": 256}, work_dir=work)
    result = engine.generate_texture(job, engine.generate_shape(job))

    config = library.named("paint21_init")[0]["config"]
    repo = settings["repo"]
    assert config["max_selected_view_num"] == 8 and config["resolution"] == 768
    assert config["multiview_cfg_path"] == os.path.join(repo, "hy3dpaint", "cfgs", "hunyuan-paint-pbr.yaml")
    assert config["custom_pipeline"] == os.path.join(repo, "hy3dpaint", "hunyuanpaintpbr")
    assert config["realesrgan_ckpt_path"] == os.path.join(repo, "hy3dpaint", "ckpt", "RealESRGAN_x4plus.pth")
    assert config["dino_ckpt_path"] == os.path.join(settings["weights_dir"], "facebook", "dinov2-giant")
    assert library.named("torchvision_fix")
    call = library.named("paint21")[0]
    assert call["use_remesh"] is False and call["save_glb"] is False and call["image_mode"] == "RGBA"
    assert call["texture_size"] == 512 and os.path.dirname(os.path.dirname(call["mesh_path"])) == work
    assert os.listdir(work) == []

    assert (np.abs(result.maps["albedo"].astype(int) - fakes.ALBEDO_21) <= 3).all()
    assert (np.abs(result.maps["metallic"].astype(int) - fakes.METALLIC_21) <= 3).all()
    assert (np.abs(result.maps["roughness"].astype(int) - fakes.ROUGHNESS_21) <= 3).all()
    assert result.maps["ao"].shape == (256, 256) and result.maps["normal"].shape == (256, 256, 3)


def test_21_painter_lists_everything_it_lacks(isolated):
    reason = Hunyuan21Engine({"repo": fakes.make_repo21(str(isolated / "repo"))}).availability(base.TEXTURE).reason
    assert "hunyuan3d-paintpbr-v2-1/model_index.json" in reason and "dinov2-giant" in reason


# -- whole jobs


def test_mixed_mode_job_hunyuan_shape_builtin_texture(hy3dgen, monkeypatch, tmp_path):
    from backend_local.pipeline import Pipeline

    _library, settings = hy3dgen
    for name, path in HUNYUAN_ENGINES.items():
        monkeypatch.setitem(registry.ENGINES, name, path)
    pipeline = Pipeline("cpu", settings={"hunyuan3d-2mini": settings})
    request = parse_request({"image_path": data("mug", "input.png"), "engine": "hunyuan3d-2mini",
                             "face_count": 3000, "texture_size": 256})
    assert request.effective_texture_engine == "builtin"
    out = str(tmp_path / "job")
    manifest = pipeline.run(request, out)
    assert manifest["engine"] == {"shape": "hunyuan3d-2mini", "texture": "builtin"}
    with open(os.path.join(out, "meta.json")) as handle:
        params = json.load(handle)["params"]
    assert params["num_inference_steps"] == 50 and params["guidance_scale"] == 5.0     # the values used
    assert params["octree_resolution"] == 256 and params["preset"] is None
    assert manifest["mesh"]["faces"] <= 3000
    assert sorted(os.listdir(out)) == ["albedo.png", "ao.png", "input.png", "mesh.glb", "meta.json", "metallic.png",
                                       "normal.png", "roughness.png"]
    with Image.open(os.path.join(out, "metallic.png")) as metallic:
        assert metallic.size == (256, 256)


def test_21_job_puts_roughness_in_green_and_metallic_in_blue_of_the_glb(hy21, monkeypatch, tmp_path):
    """The paint model's MR image is R = constant, G = roughness, B = metallic (its training renders); the
    double's R, G, B all differ, so each map shows which channel it came from, and the GLB's
    metallicRoughness texture must hold roughness in G and metallic in B (glTF)."""
    from bench.render_psnr import read_glb
    from backend_local.pipeline import Pipeline

    library, settings = hy21
    monkeypatch.setattr(Hunyuan21Engine, "painter_needs_cuda", False)
    for name, path in HUNYUAN_ENGINES.items():
        monkeypatch.setitem(registry.ENGINES, name, path)
    request = parse_request({"image_path": data("mug", "input.png"), "engine": "hunyuan3d-2.1", "face_count": 3000,
                             "texture_size": 256})
    out = str(tmp_path / "job")
    manifest = Pipeline("cpu", settings={"hunyuan3d-2.1": settings}).run(request, out)
    assert manifest["engine"] == {"shape": "hunyuan3d-2.1", "texture": "hunyuan3d-2.1"}
    # the painter's own map_Pm file is its red channel, the constant: what we must not have read
    with Image.open(os.path.join(out, "metallic.png")) as metallic, \
            Image.open(os.path.join(out, "roughness.png")) as roughness:
        assert np.abs(np.asarray(metallic, int) - fakes.MR_21[2]).max() <= 1
        assert np.abs(np.asarray(roughness, int) - fakes.MR_21[1]).max() <= 1
    _vertices, _faces, _uvs, images = read_glb(os.path.join(out, "mesh.glb"))
    orm = np.asarray(images["metallicRoughness"].convert("RGB")).astype(int)
    assert np.abs(orm[..., 1] - fakes.MR_21[1]).max() <= 1      # G roughness
    assert np.abs(orm[..., 2] - fakes.MR_21[2]).max() <= 1      # B metallic
    assert library.named("paint21")


# -- hy3dgen as the PyPI wheel (2.0.2) and as GitHub main


@pytest.mark.parametrize("flavour", ["pypi", "main"])
def test_both_hy3dgen_flavours_load_configs_and_checkpoints_written_for_either(monkeypatch, isolated, flavour):
    """main's ShapeVAE takes the encoder's arguments and has its weights; 2.0.2's takes neither and loads
    strictly. A config and checkpoint with the encoder (as main writes them) and one without must load on
    both, through the pipeline's own VAE build and through the turbo VAE for FlashVDM."""
    library = fakes.install_library(monkeypatch, "hy3dgen", flavour)
    weights = fakes.make_weights(str(isolated / "weights"), Hunyuan2Engine.shape_model)
    variant = Hunyuan2Engine.spec.shape["fast"]
    root = os.path.join(weights, "tencent", "Hunyuan3D-2")
    for checkpoint_flavour in ("main", "pypi"):
        library.calls.clear()
        fakes.write_vae_folder(os.path.join(root, variant.subfolder), checkpoint_flavour, seed=1, prefix="vae.")
        turbo = fakes.write_vae_folder(os.path.join(root, variant.vae_subfolder), checkpoint_flavour, seed=2)
        engine = Hunyuan2Engine({"weights_dir": weights})
        job = make_job({"preset": "fast"})[0]
        engine.generate_shape(job)
        built = library.named("vae_init")
        assert [b["flavour"] for b in built] == [flavour, flavour]      # the pipeline's VAE, then the turbo one
        vae = library.named("pipeline")[0]["vae"]
        assert torch.equal(vae.post_kl.weight, turbo.to(vae.post_kl.weight.dtype))
        assert hasattr(vae, "encoder") == (flavour == "main")
        assert "load_state_dict" not in vars(vae)           # the tolerant load is gone once used


@pytest.mark.parametrize("flavour", ["pypi", "main"])
def test_painter_is_asked_for_the_standard_paint_model_on_both_flavours(monkeypatch, isolated, flavour):
    """GitHub main's painter defaults to hunyuan3d-paint-v2-0-turbo, which the engine does not declare; it
    must be given hunyuan3d-paint-v2-0 explicitly (2.0.2's takes no subfolder and loads that one)."""
    library = fakes.install_library(monkeypatch, "hy3dgen", flavour)
    weights = fakes.make_weights(str(isolated / "weights"), Hunyuan2Engine.shape_model, PAINT_MODEL)
    engine = Hunyuan2Engine({"weights_dir": weights})
    engine.painter_needs_cuda = False
    job = make_job({"texture_size": 256})[0]
    result = engine.generate_texture(job, engine.generate_shape(job))
    assert library.named("paint_from_pretrained")[0]["subfolder"] == "hunyuan3d-paint-v2-0"
    assert result.maps["albedo"].shape == (256, 256, 3)


# -- what the installer reads


def test_declared_weights_cover_every_file_the_engines_look_for():
    """WEIGHTS (what `install` downloads) must include every model folder availability and the presets
    need, the turbo ones included, or an installed engine would still be unavailable."""
    import fnmatch

    from backend_local.engines import hunyuan_specs as specs

    needed = {"hunyuan3d-2.1": [SHAPE21, PAINT21, DINO_MODEL], "hunyuan3d-2": [PAINT_MODEL],
              "hunyuan3d-2mini": []}
    for engine_class in (Hunyuan2Engine, Hunyuan2MiniEngine):
        for variant in engine_class.spec.shape.values():
            needed[engine_class.name] += engine_class.variant_files(variant)
    from backend_local.install import spec as install_spec

    for engine, models in needed.items():
        declared = install_spec.ENGINES[engine].weights           # what `install` downloads
        assert [(w.repo_id, w.allow_patterns) for w in declared] == \
            [(w.repo_id, w.allow_patterns) for w in specs.WEIGHTS[engine]]
        for model in models:
            for entry in model.files:
                path = "/".join(part for part in (model.subfolder, entry.split("|")[0]) if part)
                assert any(w.repo_id == model.repo_id and any(fnmatch.fnmatch(path, pattern)
                                                                for pattern in w.allow_patterns)
                           for w in declared), (engine, model.repo_id, path)
    assert "hunyuan3d-dit-v2-0-turbo/model.fp16.safetensors" in specs.WEIGHTS["hunyuan3d-2"][0].allow_patterns
    assert "hunyuan3d-vae-v2-mini-turbo/config.yaml" in specs.WEIGHTS["hunyuan3d-2mini"][0].allow_patterns
    assert any(p.startswith("pytorch-lightning") for p in specs.HUNYUAN_21.packages["texture"])
    assert any(p.startswith("pytorch-lightning") for p in specs.PACKAGES["hunyuan3d-2.1"])
    assert "hunyuanpaintpbr" in specs.HUNYUAN_21.import_chains["texture"]
    assert specs.shape_variant("hunyuan3d-2.1", "fast").subfolder == "hunyuan3d-dit-v2-1"     # no turbo for 2.1
    for engine_class in (Hunyuan21Engine, Hunyuan2Engine, Hunyuan2MiniEngine):       # what an image bake lists
        assert {(m.repo_id, m.subfolder) for m in engine_class.model_files()} == \
            {(m.repo_id, m.subfolder) for m in needed[engine_class.name]}


def test_hy3dgen_paints_a_given_mesh_into_its_own_uvs(hy3dgen, monkeypatch, tmp_path):
    """texture_existing: the painter re-unwraps (its own xatlas atlas), but the result keeps the given
    mesh's vertices, faces and UVs, and its painted colours are resampled into those UVs."""
    from backend_local import export
    from backend_local.pipeline import Pipeline
    from backend_local.texturing.uv import unwrap
    from tests.test_texture_existing import read_result, scrambled_sphere

    _library, settings = hy3dgen
    monkeypatch.setattr(Hunyuan2Engine, "painter_needs_cuda", False)
    vertices, faces = scrambled_sphere()
    vertex_map, split_faces, uvs = unwrap(vertices, faces, 256)
    given = vertices[vertex_map]
    path = str(tmp_path / "given.glb")
    export.write_glb(path, given, split_faces, trimesh.Trimesh(given, split_faces, process=False).vertex_normals, uvs)
    out = str(tmp_path / "out")
    request = parse_request({"image_path": data("sphere", "input.png"), "mesh_path": path,
                             "texture_engine": "hunyuan3d-2", "texture_size": 256})
    manifest = Pipeline("cpu", settings={"hunyuan3d-2": settings}).run(request, out)
    assert manifest["engine"] == {"shape": None, "texture": "hunyuan3d-2"}

    got_vertices, got_faces, got_uvs, _ = read_result(out)
    assert np.array_equal(got_vertices, given.astype(np.float32)) and np.array_equal(got_faces, split_faces)
    assert np.array_equal(got_uvs, uvs.astype(np.float32))          # the painter's atlas never reaches the result

    # The painter's colour is its own UV (red = u, green = v up): at each face's centre in OUR UVs the
    # albedo must show the painter's UV of that same face centre.
    from backend_local.texturing.mesh_view import to_camera
    _v, their_faces, their_uvs = fakes._own_atlas(to_camera(given, None), split_faces)
    expected = their_uvs[their_faces].mean(axis=1) * 255
    albedo = np.asarray(Image.open(os.path.join(out, "albedo.png")).convert("RGB")).astype(float)
    centre = uvs[split_faces].mean(axis=1) * 256
    sampled = albedo[np.clip(centre[:, 1].astype(int), 0, 255), np.clip(centre[:, 0].astype(int), 0, 255)]
    error = np.abs(sampled[:, :2] - expected)
    assert np.median(error) < 4 and np.percentile(error, 90) < 16, (np.median(error), np.percentile(error, 90))
