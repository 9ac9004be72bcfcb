"""The job contract in shared/: request validation, errors, progress, manifest."""

import base64
import json
import os
import subprocess
import sys

import pytest

from shared import errors
from shared.errors import Gen3DError
from shared.manifest import build_manifest, read_manifest, verify_files, write_manifest
from shared.progress import ProgressTracker, overall, progress_event
from shared.request import parse_request

from conftest import ROOT


def code_of(data, **kwargs):
    with pytest.raises(Gen3DError) as info:
        parse_request(data, **kwargs)
    return info.value


def test_defaults_match_design():
    request = parse_request({"image_path": "a.png"})
    assert request.api_version == "1"
    assert request.engine == "builtin"
    assert request.texture_engine is None
    assert request.remove_background is True and request.texture is True
    assert (request.seed, request.octree_resolution, request.num_inference_steps) == (1234, 256, None)
    assert request.preset is None
    assert request.guidance_scale == 5.0
    assert (request.face_count, request.texture_size) == (40000, 1024)


@pytest.mark.parametrize("field,value", [
    ("seed", -1), ("seed", 2 ** 32), ("octree_resolution", 63), ("octree_resolution", 513),
    ("num_inference_steps", 0), ("num_inference_steps", 101), ("guidance_scale", 0.05),
    ("guidance_scale", 20.5), ("face_count", 999), ("face_count", 200001), ("texture_size", 128),
    ("texture_size", 8192), ("texture_size", 1000), ("seed", 1.5), ("seed", "7"), ("face_count", True),
    ("texture", "yes"), ("remove_background", 0), ("engine", "magic"), ("texture_engine", "hunyuan3d-2mini"),
    ("guidance_scale", float("nan")),
])
def test_out_of_range_values_name_the_field(field, value):
    error = code_of({"image_path": "a.png", field: value})
    assert error.code == errors.INVALID_INPUT
    assert "'%s'" % field in error.message


def test_null_steps_and_presets():
    assert parse_request({"image_path": "a.png", "num_inference_steps": None}).num_inference_steps is None
    assert parse_request({"image_path": "a.png", "num_inference_steps": 30}).num_inference_steps == 30
    high = parse_request({"image_path": "a.png", "preset": "high"})
    assert (high.preset, high.octree_resolution, high.num_inference_steps) == ("high", 384, None)
    assert parse_request({"image_path": "a.png", "preset": "high", "octree_resolution": 200}).octree_resolution == 200
    assert parse_request({"image_path": "a.png", "preset": "fast"}).octree_resolution == 256
    assert code_of({"image_path": "a.png", "preset": "turbo"}).code == errors.INVALID_INPUT
    assert code_of({"image_path": "a.png", "octree_resolution": None}).code == errors.INVALID_INPUT


def test_range_edges_are_accepted():
    request = parse_request({"image_path": "a.png", "seed": 2 ** 32 - 1, "octree_resolution": 64,
                             "num_inference_steps": 1, "guidance_scale": 20, "face_count": 200000,
                             "texture_size": 256})
    top = parse_request({"image_path": "a.png", "seed": 0, "octree_resolution": 512, "num_inference_steps": 100,
                         "guidance_scale": 0.1, "face_count": 1000, "texture_size": 4096})
    assert (top.seed, top.octree_resolution, top.texture_size) == (0, 512, 4096)
    assert request.seed == 2 ** 32 - 1 and request.texture_size == 256 and request.guidance_scale == 20.0
    assert parse_request({"image_path": "a", "face_count": 5000.0}).face_count == 5000


def test_unknown_field_is_named():
    error = code_of({"image_path": "a.png", "resolution": 3})
    assert error.code == errors.INVALID_INPUT and "'resolution'" in error.message


def test_image_source_rules():
    assert "missing" in code_of({}).message
    both = code_of({"image_path": "a.png", "image_url": "https://x/y.png"})
    assert "exactly one" in both.message
    assert "'image_url'" in code_of({"image_url": "ftp://x/y.png"}).message
    assert "'image'" in code_of({"image": "not base64!!"}).message
    remote = code_of({"image_path": "/etc/passwd"}, allow_path=False)
    assert "'image_path'" in remote.message and "local backend" in remote.message
    encoded = base64.b64encode(b"\x89PNG....").decode()
    assert parse_request({"image": encoded}).image_bytes() == b"\x89PNG...."
    assert parse_request({"image": "data:image/png;base64," + encoded}).image_bytes() == b"\x89PNG...."


def test_api_version_major_is_checked():
    assert parse_request({"image_path": "a", "api_version": "1.3"}).api_version == "1.3"
    error = code_of({"image_path": "a", "api_version": "2"})
    assert "'api_version'" in error.message


def test_texture_engine_resolution():
    assert parse_request({"image_path": "a", "engine": "hunyuan3d-2.1"}).effective_texture_engine == "hunyuan3d-2.1"
    assert parse_request({"image_path": "a", "engine": "hunyuan3d-2mini"}).effective_texture_engine == "builtin"
    assert parse_request({"image_path": "a", "engine": "hunyuan3d-2",
                          "texture_engine": "builtin"}).effective_texture_engine == "builtin"
    assert parse_request({"image_path": "a", "texture": False}).effective_texture_engine is None


def test_error_payload_round_trip():
    error = Gen3DError(errors.OUT_OF_MEMORY, "Lower face_count.", stage="shape")
    payload = error.to_dict()
    assert payload == {"error": {"code": "OUT_OF_MEMORY", "message": "Lower face_count.", "stage": "shape",
                                 "retryable": True}}
    again = Gen3DError.from_dict(json.loads(json.dumps(payload)))
    assert (again.code, again.message, again.stage, again.retryable) == ("OUT_OF_MEMORY", "Lower face_count.",
                                                                        "shape", True)
    assert Gen3DError.from_dict({"error": {"code": "BOGUS"}}).code == errors.INTERNAL
    with pytest.raises(ValueError):
        Gen3DError("NOPE", "x")


def test_progress_never_goes_back():
    seen = []
    tracker = ProgressTracker("j", seen.append)
    tracker.update("shape", 0.9)
    tracker.update("preprocess", 1.0)          # an earlier stage cannot pull the bar back
    tracker.update("texture", 0.5)
    tracker.finish()
    values = [event["progress"] for event in seen]
    assert values == sorted(values) and values[-1] == 1.0
    assert overall("texture", 0.0) == pytest.approx(0.45)
    with pytest.raises(ValueError):
        progress_event("j", "dreaming", 0.5)


def test_manifest_round_trip_and_tamper_detection(tmp_path):
    names = ["mesh.glb", "input.png"]
    for name in names:
        (tmp_path / name).write_bytes(os.urandom(100))
    request = parse_request({"image_path": "a.png", "texture": False})
    manifest = build_manifest(str(tmp_path), "job1", request, "builtin", None,
                              {"vertices": 3, "faces": 1, "bounds": [[0, 0, 0], [1, 1, 1]]},
                              {"shape": 1.234567}, "cpu", 12.3,
                              view={"azimuth_deg": 0.0, "elevation_deg": 12.5})
    write_manifest(str(tmp_path), manifest)
    loaded = read_manifest(str(tmp_path))
    assert loaded["frame"] == "upright" and loaded["view"] == {"azimuth_deg": 0.0, "elevation_deg": 12.5}
    assert loaded["files"]["mesh.glb"]["bytes"] == 100 and len(loaded["files"]["mesh.glb"]["sha256"]) == 64
    assert loaded["textures"] is None and loaded["engine"] == {"shape": "builtin", "texture": None}
    assert set(loaded["timings"]) == {"preprocess", "shape", "texture", "export", "upload", "total"}
    assert verify_files(str(tmp_path), loaded) == []
    (tmp_path / "input.png").write_bytes(b"changed")
    assert verify_files(str(tmp_path), loaded) == ["input.png"]
    os.remove(tmp_path / "mesh.glb")
    assert verify_files(str(tmp_path), loaded) == ["mesh.glb", "input.png"]
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(Gen3DError):
        read_manifest(str(tmp_path))


def test_shared_is_pure_stdlib():
    """shared/ is vendored into Blender: it must import with no third-party packages at all."""
    code = ("import sys; sys.path.insert(0, %r); import builtins; real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in ('numpy', 'torch', 'bpy', 'requests', 'PIL'): raise ImportError(name)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "import shared, shared.request, shared.manifest, shared.progress, shared.errors\n"
            "print(shared.parse_request({'image_path': 'x'}).seed)" % ROOT)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1234"


def test_glb_chunks_splits_the_json_and_bin_chunks_up_to_the_given_end():
    import struct

    from shared.request import glb_chunks

    text = json.dumps({"asset": {"version": "2.0"}}).encode() + b"  "
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", 4, 0x004E4942) + b"\1\2\3\4"
    data = struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks
    assert glb_chunks(data) == ({"asset": {"version": "2.0"}}, b"\1\2\3\4")
    assert glb_chunks(data, 12 + 8 + len(text)) == ({"asset": {"version": "2.0"}}, b"")   # BIN past the end
    assert glb_chunks(data[:12]) == (None, b"")
