"""The Hunyuan engines' shared parts: settings, weight lookup, offline loading, the job folder, seeding,
the mesh frame and repair, GPU out-of-memory errors, and placing painted textures."""

import os
import sys
import tempfile
import types

import numpy as np
import pytest
import torch
import trimesh

from backend_local.engines import hunyuan_common as hc
from backend_local.engines import hunyuan_texture
from backend_local.engines.base import JobContext
from shared.errors import ENGINE_UNAVAILABLE, OUT_OF_MEMORY, Gen3DError
from shared.request import parse_request
from tests.hunyuan_fakes import gradient_image, raw_mesh

MODEL = hc.ModelFiles("tencent/Hunyuan3D-2", "hunyuan3d-dit-v2-0", ("config.yaml", "model.fp16.safetensors|model.ckpt"),
                      "Hunyuan3D-2 shape")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ("GEN3D_WEIGHTS_DIR", "HY3DGEN_MODELS", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME",
                "XDG_CACHE_HOME", "GEN3D_HUNYUAN21_REPO"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def put(folder, *names):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        open(os.path.join(folder, name), "w").close()


# -- settings and lookup


def test_setting_prefers_settings_then_environment_then_default(monkeypatch):
    monkeypatch.setenv("GEN3D_WEIGHTS_DIR", "/from/env")
    assert hc.setting({"weights_dir": "/from/settings"}, "weights_dir", "GEN3D_WEIGHTS_DIR") == "/from/settings"
    assert hc.setting({}, "weights_dir", "GEN3D_WEIGHTS_DIR") == "/from/env"
    monkeypatch.delenv("GEN3D_WEIGHTS_DIR")
    assert hc.setting(None, "weights_dir", "GEN3D_WEIGHTS_DIR", default="/d") == "/d"


def test_hub_cache_follows_huggingface_variables(clean_env, monkeypatch):
    assert hc.hf_hub_cache() == os.path.join(str(clean_env / "home"), ".cache", "huggingface", "hub")
    monkeypatch.setenv("HF_HOME", "/hf")
    assert hc.hf_hub_cache() == "/hf/hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", "/legacy")
    assert hc.hf_hub_cache() == "/legacy"
    monkeypatch.setenv("HF_HUB_CACHE", "/hub")
    assert hc.hf_hub_cache() == "/hub"


def test_weights_folder_wins_over_library_folder_and_hub_cache(clean_env, monkeypatch):
    weights, library, hub = clean_env / "w", clean_env / "lib", clean_env / "hub"
    monkeypatch.setenv("HY3DGEN_MODELS", str(library))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    snapshot = hub / "models--tencent--Hunyuan3D-2" / "snapshots" / "abc123"
    put(str(snapshot / "hunyuan3d-dit-v2-0"), "config.yaml", "model.fp16.safetensors")
    put(str(hub / "models--tencent--Hunyuan3D-2" / "refs"), "main")
    (hub / "models--tencent--Hunyuan3D-2" / "refs" / "main").write_text("abc123")
    assert hc.locate(MODEL)[0] == str(snapshot)

    put(str(library / "tencent" / "Hunyuan3D-2" / "hunyuan3d-dit-v2-0"), "config.yaml", "model.ckpt")
    assert hc.locate(MODEL)[0] == str(library / "tencent" / "Hunyuan3D-2")        # "a|b": either file

    put(str(weights / "Hunyuan3D-2" / "hunyuan3d-dit-v2-0"), "config.yaml", "model.fp16.safetensors")
    root, searched = hc.locate(MODEL, {"weights_dir": str(weights)})
    assert root == str(weights / "Hunyuan3D-2")
    assert searched[0] == str(weights / "tencent" / "Hunyuan3D-2")


def test_incomplete_copy_is_not_found_and_the_message_names_files_and_folders(clean_env):
    weights = clean_env / "w"
    put(str(weights / "tencent" / "Hunyuan3D-2" / "hunyuan3d-dit-v2-0"), "config.yaml")   # checkpoint missing
    root, searched = hc.locate(MODEL, {"weights_dir": str(weights)})
    assert root is None
    message = hc.weights_missing(MODEL, searched, "hunyuan3d-2")
    assert "hunyuan3d-dit-v2-0/config.yaml" in message and "model.fp16.safetensors or model.ckpt" in message
    assert str(weights / "tencent" / "Hunyuan3D-2") in message
    assert "models--tencent--Hunyuan3D-2" in message            # the hub cache was searched too
    assert "GEN3D_WEIGHTS_DIR" in message and "--include 'hunyuan3d-dit-v2-0/*'" in message
    # huggingface-cli is gone from huggingface_hub 1.0: the hf command, and first our installer
    assert "python -m backend_local install hunyuan3d-2" in message
    assert "hf download tencent/Hunyuan3D-2 --include 'hunyuan3d-dit-v2-0/*'" in message
    assert "huggingface-cli" not in message


def test_missing_modules_checks_without_importing(monkeypatch):
    assert hc.missing_modules(["json", "no_such_module_gen3d"]) == ["no_such_module_gen3d"]
    monkeypatch.setitem(sys.modules, "blocked_gen3d", None)    # how Python marks an import as failing
    assert hc.missing_modules(["blocked_gen3d"]) == ["blocked_gen3d"]


def test_import_failure_is_engine_unavailable_naming_the_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "hy3dgen", None)
    with pytest.raises(Gen3DError) as caught:
        hc.import_library("hy3dgen.shapegen", "The hy3dgen shape pipeline", engine="hunyuan3d-2mini")
    assert caught.value.code == ENGINE_UNAVAILABLE
    assert "hy3dgen.shapegen" in caught.value.message
    assert "python -m backend_local install hunyuan3d-2mini" in caught.value.message


def test_offline_resolves_known_repos_and_refuses_downloads(monkeypatch, tmp_path):
    hub = types.ModuleType("huggingface_hub")

    def download(repo_id, **kwargs):
        raise AssertionError("a download was attempted")

    hub.snapshot_download = download
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with hc.offline({"tencent/Hunyuan3D-2.1": str(tmp_path)}):
        assert hub.snapshot_download(repo_id="tencent/Hunyuan3D-2.1", allow_patterns=["x/*"]) == str(tmp_path)
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        with pytest.raises(Gen3DError) as caught:
            hub.snapshot_download(repo_id="facebook/dinov2-giant")
        assert caught.value.code == ENGINE_UNAVAILABLE and "never downloads" in caught.value.message
    assert hub.snapshot_download is download and "HF_HUB_OFFLINE" not in os.environ


# -- job folder, seeding


def test_job_folder_is_cwd_and_tempdir_and_leaves_nothing(tmp_path):
    before = os.getcwd()
    with hc.job_folder(str(tmp_path), "hunyuan3d-2-shape") as folder:
        assert os.getcwd() == folder and os.path.dirname(folder) == str(tmp_path)
        assert tempfile.gettempdir() == folder
        open("scratch.obj", "w").close()
        tempfile.NamedTemporaryFile(delete=False).close()
    assert os.getcwd() == before and tempfile.gettempdir() != folder
    assert os.listdir(str(tmp_path)) == []


def test_seeded_generator_is_reproducible_and_seed_specific():
    first = torch.randn(8, generator=hc.seeded_generator(1234))
    assert torch.equal(first, torch.randn(8, generator=hc.seeded_generator(1234)))
    assert not torch.equal(first, torch.randn(8, generator=hc.seeded_generator(1235)))
    assert hc.seeded_generator(2 ** 32 - 1).initial_seed() == 2 ** 32 - 1


# -- mesh frame and repair


def test_output_frame_centres_and_scales_without_turning():
    mesh = raw_mesh()
    out = hc.to_output_frame(mesh.vertices)
    low, high = out.min(0), out.max(0)
    assert np.allclose((low + high) / 2, 0, atol=1e-9) and np.isclose((high - low).max(), 2.0)
    # the library's frame is ours (Y up, front +Z): the tallest axis stays Y, the nearest point stays nearest
    assert np.argmax(high - low) == 1
    assert np.argmax(out[:, 2]) == np.argmax(mesh.vertices[:, 2])


def test_closed_mesh_fills_holes_and_limits_faces():
    mesh = raw_mesh(open_mesh=True)
    assert not mesh.is_watertight
    vertices, faces = hc.closed_mesh(mesh.vertices, mesh.faces, 3000)
    closed = trimesh.Trimesh(vertices, faces, process=False)
    assert closed.is_watertight and len(faces) <= 3000 and closed.volume > 0


def test_closed_mesh_rebuilds_a_wide_open_surface():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    upper = sphere.faces[sphere.triangles_center[:, 1] > -0.2]   # a bowl: one big open rim
    vertices, faces = hc.closed_mesh(sphere.vertices, upper, 20000)
    assert trimesh.Trimesh(vertices, faces, process=False).is_watertight


# -- out of memory


def test_out_of_memory_names_the_numbers_and_a_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * hc.GB, 24 * hc.GB))
    engine = types.SimpleNamespace(name="hunyuan3d-2.1", vram_gb={"shape": 10.0, "texture": 21.0})
    error = hc.out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"), engine, "texture",
                             torch.device("cuda"))
    assert error.code == OUT_OF_MEMORY and error.retryable and error.stage == "texture"
    assert "2.0 GB free of 24.0 GB" in error.message and "about 21 GB" in error.message
    assert "texture_engine 'builtin'" in error.message and "--low-memory" in error.message


def test_gpu_stage_converts_only_out_of_memory():
    engine = types.SimpleNamespace(name="hunyuan3d-2", vram_gb={"shape": 6.0})
    with pytest.raises(Gen3DError) as caught:
        with hc.gpu_stage(engine, "shape", torch.device("cpu")):
            raise RuntimeError("CUDA error: out of memory")
    assert caught.value.code == OUT_OF_MEMORY and "octree_resolution" in caught.value.message
    with pytest.raises(ValueError):
        with hc.gpu_stage(engine, "shape", torch.device("cpu")):
            raise ValueError("something else")


# -- painted textures


def test_read_textured_obj_triangulates_and_skips_the_constant_metallic_file(tmp_path):
    from PIL import Image

    (tmp_path / "m.obj").write_text("mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\n"
                                    "vt 0 1\nf 1/1 2/2 3/3 4/4\n")
    (tmp_path / "m.mtl").write_text("newmtl Material\nmap_Kd m.jpg\nmap_Pm m_metallic.jpg\nmap_Pr m_roughness.jpg\n")
    Image.new("RGB", (4, 4), (255, 0, 0)).save(str(tmp_path / "m.jpg"))
    Image.new("L", (4, 4), 200).save(str(tmp_path / "m_metallic.jpg"))
    Image.new("L", (4, 4), 50).save(str(tmp_path / "m_roughness.jpg"))
    painted = hunyuan_texture.read_textured_obj(str(tmp_path / "m.obj"))
    assert painted["faces"].tolist() == [[0, 1, 2], [0, 2, 3]] and painted["uv_faces"].tolist() == [[0, 1, 2],
                                                                                                     [0, 2, 3]]
    assert painted["images"]["albedo"].shape == (4, 4, 3)
    assert "metallic" not in painted["images"]      # map_Pm is the MR image's constant red channel
    assert np.allclose(painted["images"]["roughness"], 50 / 255, atol=0.02)


def test_match_corners_survives_reordered_faces_and_rotated_corners():
    mesh = trimesh.creation.icosphere(subdivisions=2)
    ours = mesh.vertices[mesh.faces]
    order = np.random.default_rng(0).permutation(len(mesh.faces))
    theirs = np.roll(ours[order], 1, axis=1)                      # shuffled faces, corners rotated
    index, corner, matched = hunyuan_texture.match_corners(ours, theirs)
    assert matched.all()
    assert np.allclose(np.take_along_axis(theirs[index], corner[:, :, None], axis=1), ours)


def test_transfer_puts_each_painted_colour_at_the_same_surface_point():
    """Painter image red=u, green=v: the colour our map holds at a surface point must be the painter's
    colour at its own UV of that point."""
    import xatlas

    mesh = trimesh.creation.icosphere(subdivisions=3)
    our_map, our_faces, our_uvs = xatlas.parametrize(mesh.vertices.astype(np.float32), mesh.faces.astype(np.uint32))
    our_uvs[:, 1] = 1 - our_uvs[:, 1]                                 # ours: glTF, v down
    baked = {"vertices": mesh.vertices[our_map], "faces": our_faces.astype(np.int64), "uvs": our_uvs}
    their_map, their_faces, their_uvs = xatlas.parametrize(mesh.vertices.astype(np.float32),
                                                           np.roll(mesh.faces, 1, axis=1).astype(np.uint32))
    image = np.asarray(gradient_image(512), np.float32) / 255
    painted = {"vertices": mesh.vertices[their_map], "faces": their_faces.astype(np.int64),
               "uvs": their_uvs.astype(np.float64), "uv_faces": their_faces.astype(np.int64),
               "images": {"albedo": image}}
    size = 512
    albedo = hunyuan_texture.transfer(baked, painted, size, torch.device("cpu"))["albedo"]

    weights = np.array([0.6, 0.3, 0.1])
    their_corners = painted["vertices"][painted["faces"]]
    lookup = {tuple(np.round(c.mean(0), 6)): i for i, c in enumerate(their_corners)}
    errors = []
    for face in range(0, len(our_faces), 7):
        corners = baked["vertices"][baked["faces"][face]]
        point = weights @ corners
        theirs = lookup[tuple(np.round(corners.mean(0), 6))]
        order = [int(np.argmin(np.linalg.norm(their_corners[theirs] - c, axis=1))) for c in corners]
        their_uv = weights @ painted["uvs"][painted["uv_faces"][theirs][order]]
        our_uv = weights @ baked["uvs"][baked["faces"][face]]
        col, row = min(int(our_uv[0] * size), size - 1), min(int(our_uv[1] * size), size - 1)
        errors.append(np.abs(albedo[row, col, :2] / 255.0 - their_uv).max())
        assert np.allclose(point, weights @ their_corners[theirs][order])
    assert np.median(errors) < 0.01 and np.max(errors) < 0.05


def test_painted_result_keeps_baked_maps_and_replaces_painted_ones():
    mesh = trimesh.creation.icosphere(subdivisions=3)
    request = parse_request({"image_path": "x.png", "texture_size": 256})
    image = np.zeros((256, 256, 4), np.uint8)
    image[40:216, 40:216] = (90, 120, 150, 255)
    job = JobContext(request, image, torch.device("cpu"), tempfile.mkdtemp())
    from backend_local.engines.base import ShapeResult

    shape = ShapeResult(mesh.vertices, mesh.faces)
    uniform = {"vertices": mesh.vertices, "faces": mesh.faces, "uvs": np.full((len(mesh.vertices), 2), 0.5),
               "uv_faces": mesh.faces, "images": {"albedo": np.full((8, 8, 3), [1.0, 0.0, 0.0], np.float32),
                                                  "metallic": np.full((8, 8, 1), 0.8, np.float32)}}
    result = hunyuan_texture.painted_result(job, shape, uniform, 256)
    assert set(result.maps) == {"albedo", "normal", "roughness", "metallic", "ao"}
    assert (result.maps["albedo"] == (255, 0, 0)).all() and (np.abs(result.maps["metallic"].astype(int) - 204) <= 1).all()
    assert result.maps["normal"].shape == (256, 256, 3) and result.maps["ao"].shape == (256, 256)
    assert result.uvs.shape == (len(result.vertices), 2) and result.faces.max() < len(result.vertices)


def test_bake_beside_the_painter_reports_nothing_and_stops_on_cancel():
    """start_bake runs while the painter paints: its progress stays off the bar (the painter's owns it), the
    future's result is what painted_result places the painted maps into, and a cancel stops it."""
    import threading

    from backend_local.engines.base import ShapeResult
    from shared.errors import CANCELLED, Gen3DError

    mesh = trimesh.creation.icosphere(subdivisions=2)
    request = parse_request({"image_path": "x.png", "texture_size": 256})
    image = np.zeros((256, 256, 4), np.uint8)
    image[40:216, 40:216] = (90, 120, 150, 255)
    reports, cancel = [], threading.Event()
    job = JobContext(request, image, torch.device("cpu"), tempfile.mkdtemp(),
                     report=lambda *args: reports.append(args), cancel=cancel)
    shape = ShapeResult(mesh.vertices, mesh.faces)
    baking = hunyuan_texture.start_bake(job, shape, 256)
    assert set(baking.result(timeout=60)["maps"]) == {"albedo", "normal", "roughness", "metallic", "ao"}
    assert reports == []
    painted = {"vertices": mesh.vertices, "faces": mesh.faces, "uvs": np.full((len(mesh.vertices), 2), 0.5),
               "uv_faces": mesh.faces, "images": {"albedo": np.full((4, 4, 3), [0.0, 1.0, 0.0], np.float32)}}
    result = hunyuan_texture.painted_result(job, shape, painted, 256, baking)
    assert (result.maps["albedo"] == (0, 255, 0)).all() and [r[1] for r in reports] == [0.88, 0.9]
    cancel.set()
    with pytest.raises(Gen3DError) as caught:
        hunyuan_texture.start_bake(job, shape, 256).result(timeout=60)
    assert caught.value.code == CANCELLED


def test_placeholder_modules_stand_in_only_while_importing():
    name = "gen3d_surely_missing_module"
    with hc.placeholder_modules([name, "os"], "only needed for OBJ to GLB conversion"):
        stand_in = sys.modules[name]
        assert sys.modules["os"] is os                      # installed modules are never replaced
        with pytest.raises(RuntimeError, match="OBJ to GLB"):
            stand_in.anything
    assert name not in sys.modules


def test_trusted_local_pipelines_trusts_local_folders_only(monkeypatch, tmp_path):
    """Newer diffusers refuse a local custom pipeline unless trust_remote_code=True: while the painters
    load, local folders get it, hub ids do not, and the original loader comes back afterwards."""
    calls = []

    class DiffusionPipeline:
        @classmethod
        def from_pretrained(cls, path, *args, **kwargs):
            calls.append((path, kwargs.get("trust_remote_code")))
            return cls

    def get_cached_module_file(pretrained_model_name_or_path, module_file, trust_remote_code=False):
        return None

    utils = types.ModuleType("diffusers.utils")
    dynamic = types.ModuleType("diffusers.utils.dynamic_modules_utils")
    dynamic.get_cached_module_file = get_cached_module_file
    utils.dynamic_modules_utils = dynamic
    diffusers = types.ModuleType("diffusers")
    diffusers.DiffusionPipeline = DiffusionPipeline
    diffusers.utils = utils
    monkeypatch.setitem(sys.modules, "diffusers", diffusers)
    monkeypatch.setitem(sys.modules, "diffusers.utils", utils)
    monkeypatch.setitem(sys.modules, "diffusers.utils.dynamic_modules_utils", dynamic)
    original = DiffusionPipeline.__dict__["from_pretrained"]

    with hc.trusted_local_pipelines():
        DiffusionPipeline.from_pretrained(str(tmp_path))
        DiffusionPipeline.from_pretrained("tencent/Hunyuan3D-2")
    DiffusionPipeline.from_pretrained(str(tmp_path))
    assert calls == [(str(tmp_path), True), ("tencent/Hunyuan3D-2", None), (str(tmp_path), None)]
    assert DiffusionPipeline.__dict__["from_pretrained"] is original


def test_painted_from_render_reads_g_as_roughness_and_b_as_metallic_and_halves():
    """The 2.1 paint model's MR image: R the constant its training renders used, G roughness, B metallic."""
    mr = np.zeros((4, 6, 3), np.float32)
    mr[..., 0], mr[..., 1], mr[..., 2] = 1.0, 0.25, 0.75
    mr[:2, :2, 2] = (0.5, 0.7), (0.9, 0.7)                   # one 2x2 block averages to 0.7
    albedo = np.full((4, 6, 3), 0.5, np.float32)
    render = types.SimpleNamespace(tex=torch.from_numpy(albedo), tex_mr=torch.from_numpy(mr),
                                   get_mesh=lambda normalize=True: (np.zeros((3, 3)), np.array([[0, 1, 2]]),
                                                                    np.zeros((3, 2)), np.array([[0, 1, 2]])))
    painted = hunyuan_texture.painted_from_render(render)
    assert painted["images"]["roughness"].shape == (2, 3, 1)
    assert np.allclose(painted["images"]["roughness"], 0.25)
    assert np.allclose(painted["images"]["metallic"][0, 0], 0.7) and np.allclose(painted["images"]["metallic"][1], 0.75)
    assert np.allclose(painted["images"]["albedo"], 0.5)
    assert hunyuan_texture.painted_from_render(types.SimpleNamespace(tex=None)) is None
