"""Extra views (`views`): the request field, the engine capability check, the CLI flag, the remote
submission, and the built-in engine's multi-view shape and texture on a dev case (tests/data/monkey_views,
the dev set's monkey at 256 px: front, right, back, left)."""

import base64
import os
import shutil
import sys

import numpy as np
import pytest

from shared.errors import IMAGE_TOO_LARGE, INVALID_INPUT, Gen3DError
from shared.request import inline_image_size, parse_request

HERE = os.path.dirname(os.path.abspath(__file__))
CASE = os.path.join(HERE, "data", "monkey_views")
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))


def _b64(name):
    with open(os.path.join(CASE, name), "rb") as handle:
        return base64.b64encode(handle.read()).decode("ascii")


def _error(data, allow_path=True):
    with pytest.raises(Gen3DError) as caught:
        parse_request(data, allow_path=allow_path)
    return caught.value


# --- the request --------------------------------------------------------------------------------

def test_views_accept_base64_url_and_path_like_the_main_image():
    back = _b64("view_back.png")
    request = parse_request({"image": _b64("input.png"), "views": {
        "back": back, "right": "https://example.com/r.png", "left": os.path.join(CASE, "view_left.png")}})
    assert request.views == {"back": {"image": back}, "right": {"image_url": "https://example.com/r.png"},
                             "left": {"image_path": os.path.join(CASE, "view_left.png")}}
    # the object form, a data: URL, and a round trip through with_changes
    again = parse_request({"image": back, "views": {"back": {"image": "data:image/png;base64," + back}}})
    assert list(again.views["back"]) == ["image"]
    assert request.with_changes(seed=7).views == request.views
    assert request.effective_params()["views"] == ["back", "left", "right"]
    assert "<%d base64 characters>" % len(back) == request.to_dict(include_image=False)["views"]["back"]["image"]
    assert inline_image_size(request) == len(request.image) + len(back)
    assert parse_request({"image": back, "views": {}}).views is None


@pytest.mark.parametrize("views, field", [
    ({"front": "https://example.com/f.png"}, "'views' has an unknown view 'front'"),
    (["back"], "'views' must be an object"),
    ({"back": 12}, "'views.back' must be an image"),
    ({"back": ""}, "'views.back' must be an image"),
    ({"back": {"image_url": "ftp://example.com/b.png"}}, "'views.back' must be an http or https URL"),
    ({"back": {"image": "x", "image_url": "https://e/b.png"}}, "'views.back' must be an image"),
    ({"left": {"image": "!!!not base64"}}, "'views.left' is not valid base64"),
])
def test_bad_views_name_the_field(views, field):
    error = _error({"image": _b64("input.png"), "views": views})
    assert error.code == INVALID_INPUT and field in error.message


def test_remote_requests_refuse_view_paths_and_huge_views():
    error = _error({"image": _b64("input.png"), "views": {"back": {"image_path": "/tmp/b.png"}}}, allow_path=False)
    assert error.code == INVALID_INPUT and "'views.back'" in error.message and "local backend" in error.message
    huge = "A" * (64 * 2 ** 20 * 4 // 3 + 8)
    assert _error({"image": _b64("input.png"), "views": {"back": {"image": huge}}}).code == IMAGE_TOO_LARGE


# --- engines and the CLI ------------------------------------------------------------------------

def test_engine_without_multiview_is_invalid_input_naming_builtin():
    from backend_local.pipeline import Pipeline

    for fields in ({"engine": "hunyuan3d-2"}, {"texture_engine": "hunyuan3d-2.1"}):
        request = parse_request(dict({"image_path": os.path.join(CASE, "input.png"),
                                      "views": {"back": os.path.join(CASE, "view_back.png")}}, **fields))
        with pytest.raises(Gen3DError) as caught:
            Pipeline("cpu").run(request, os.path.join(CASE, "never-written"))
        error = caught.value
        assert error.code == INVALID_INPUT and error.stage == "queued"
        assert "cannot use extra views" in error.message and "'builtin'" in error.message
        assert not os.path.exists(os.path.join(CASE, "never-written"))


def test_cli_view_flags_become_views(tmp_path):
    from backend_local import cli

    args = cli.build_parser().parse_args(["generate", "front.png", "--out", str(tmp_path), "--view",
                                          "back=b.png", "--view", "right=r.png"])
    fields = cli._request_fields(args, "front.png")
    assert fields["views"] == {"back": {"image_path": os.path.abspath("b.png")},
                               "right": {"image_path": os.path.abspath("r.png")}}
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["generate", "f.png", "--out", "o", "--view", "top=t.png"])
    assert cli.main(["generate", "a.png", "b.png", "--out", str(tmp_path), "--view", "back=b.png"]) == 2


# --- the remote server's submission -------------------------------------------------------------

def test_remote_submission_keeps_views_and_refuses_unreadable_ones(tmp_path):
    from backend_remote import job_store
    from backend_remote.scheduler import Scheduler

    store = job_store.JobStore(str(tmp_path / "jobs.sqlite3"))
    scheduler = Scheduler(store, None, str(tmp_path / "work"), {})
    back = _b64("view_back.png")
    job_id = scheduler.submit({"image": _b64("input.png"), "views": {"back": back}}, owner="k")
    assert store.get(job_id).status == job_store.IN_QUEUE
    assert parse_request(store.request(job_id), allow_path=False).views == {"back": {"image": back}}
    assert store.active("k")[1] == len(_b64("input.png")) + len(back)     # quotas count the views too
    broken = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 40).decode("ascii")
    failed = scheduler.submit({"image": _b64("input.png"), "views": {"right": broken}})
    job = store.get(failed)
    assert job.status == job_store.FAILED and "'views.right'" in job.error["message"]


# --- the built-in engine ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def monkey_results(tmp_path_factory):
    from backend_local.pipeline import Pipeline

    out = tmp_path_factory.mktemp("views")
    pipeline = Pipeline("cpu")
    base = {"image_path": os.path.join(CASE, "input.png"), "face_count": 5000, "texture_size": 256}
    views = {name: os.path.join(CASE, "view_%s.png" % name) for name in ("right", "back", "left")}
    front = pipeline.run(parse_request(base), str(out / "front"))
    multi = pipeline.run(parse_request(dict(base, views=views)), str(out / "multi"))
    for name in views:       # the front-only result is rendered from the views' cameras too
        shutil.copy(str(out / "multi" / ("input_%s.png" % name)), str(out / "front"))
    return out / "front", out / "multi", front, multi


def test_views_carve_a_tighter_hull(monkey_results):
    from render_psnr import render_albedo

    front_dir, multi_dir, _front, multi = monkey_results
    assert multi["params"]["views"] == ["back", "left", "right"]
    for name in ("right", "back", "left"):
        assert os.path.isfile(os.path.join(multi_dir, "input_%s.png" % name))

    from PIL import Image
    alpha = np.asarray(Image.open(os.path.join(multi_dir, "input_right.png")))[..., 3] > 127

    def seen_from_the_right(result_dir):
        covered = render_albedo(str(result_dir), "right")[1]
        return (covered & alpha).sum() / (covered | alpha).sum(), (covered & ~alpha).sum() / alpha.sum()

    (front_iou, front_excess), (multi_iou, multi_excess) = map(seen_from_the_right, (front_dir, multi_dir))
    # the single view guesses the monkey's depth; the right view's silhouette fixes it: what it rules
    # out is carved away, what it shows is filled in
    assert multi_iou >= 0.9 and multi_iou > front_iou + 0.1, (front_iou, multi_iou)
    assert multi_excess < 0.5 * front_excess and multi_excess < 0.05, (front_excess, multi_excess)


def test_back_texture_is_the_back_photo(monkey_results):
    from render_psnr import psnr

    front_dir, multi_dir, _front, _multi = monkey_results
    mirrored = psnr(str(front_dir), "back")[0]
    projected = psnr(str(multi_dir), "back")[0]
    assert projected >= 28.0 and projected > mirrored + 5.0, (mirrored, projected)
    assert psnr(str(multi_dir))[0] >= 28.0            # the front stays the front photo


# --- the add-on's clients and batch -------------------------------------------------------------

def test_remote_client_sends_view_files_as_base64():
    from blender_addon import remote_client

    back = os.path.join(CASE, "view_back.png")
    data = remote_client.wire_request({"image_path": os.path.join(CASE, "input.png"), "engine": "builtin",
                                       "views": {"back": {"image_path": back},
                                                 "right": {"image_url": "https://example.com/r.png"}}})
    assert data["views"] == {"back": {"image": _b64("view_back.png")},
                             "right": {"image_url": "https://example.com/r.png"}}
    assert "image_path" not in data and parse_request(data, allow_path=False).views["back"]["image"]


def test_batch_finds_views_next_to_the_image_name(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen3d_batch_script", os.path.join(
        os.path.dirname(HERE), "blender_addon", "batch.py"))
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    for name in ("chair_back.png", "chair_left.jpg", "chair_top.png", "table_right.png"):
        (tmp_path / name).write_bytes(b"x")
    assert batch.views_for("/photos/chair.png", str(tmp_path)) == {
        "back": {"image_path": str(tmp_path / "chair_back.png")},
        "left": {"image_path": str(tmp_path / "chair_left.jpg")}}
    assert batch.views_for("/photos/lamp.png", str(tmp_path)) is None
    assert batch.views_for("/photos/chair.png", None) is None
    assert batch.parse_args(["a.png", "--out", "o", "--views-from", str(tmp_path)]).views_from == str(tmp_path)


# --- cameras from the views (toy_car and cone: the dev cases at 256 px, camera elevation 20) -----------

TOY_CAR = os.path.join(HERE, "data", "toy_car_views")
CONE = os.path.join(HERE, "data", "cone_views")
VIEW_NAMES = ("right", "back", "left")


def _views(case, names=VIEW_NAMES):
    return {name: os.path.join(case, "view_%s.png" % name) for name in names}


def _framed(path):
    from backend_local import foreground, imageio

    with open(path, "rb") as handle:
        pixels, has_alpha = imageio.open_image(handle.read())
    return foreground.frame(foreground.foreground_rgba(pixels, has_alpha, True, 1234))


def test_views_tell_the_elevation_the_single_view_cannot():
    """The toy car is no solid of revolution, so its single view gives no elevation (0); the hull of
    its four silhouettes reproduces them all only at the camera's 20 degrees. (Before: the views were
    carved at the single view's 0 degrees, which cut the car and put the back photo on its front:
    front PSNR 13 dB.)"""
    import torch
    from backend_local.engines.builtin import multiview, shape

    front, info = _framed(os.path.join(TOY_CAR, "input.png"))
    views, framings = {}, {"front": info}
    for name, path in _views(TOY_CAR).items():
        views[name], framings[name] = _framed(path)
    field = shape.reconstruct_field(front, torch.device("cpu"))
    assert not field.info.get("revolution")
    elevation = shape.add_views(field, views, None, front, framings)
    assert abs(elevation - 20.0) <= 2.0, field.info["views"]
    assert field.info["views"]["registration"] == "turntable"
    sdfs = {name: multiview._silhouette_sdf(image[..., 3]) for name, image in views.items()}
    frames = {name: multiview.Framing.from_info(value) for name, value in framings.items()}
    camera = multiview.front_camera(front)
    depth = multiview._depth_range(camera, views, frames)

    def agreement(e):
        return multiview.consistency(multiview.turntable(views, sdfs, frames, front, e) + [camera], depth, 200)
    assert agreement(20.0) >= 0.99 and agreement(0.0) <= 0.9, (agreement(20.0), agreement(0.0))


@pytest.fixture(scope="module")
def toy_car_result(tmp_path_factory):
    from backend_local.pipeline import Pipeline

    out = tmp_path_factory.mktemp("toy_car") / "multi"
    request = parse_request({"image_path": os.path.join(TOY_CAR, "input.png"), "face_count": 5000,
                             "texture_size": 256, "views": _views(TOY_CAR)})
    return out, Pipeline("cpu").run(request, str(out))


def test_front_texture_stays_the_front_photo_with_views(toy_car_result):
    from render_psnr import psnr

    out, manifest = toy_car_result
    assert abs(manifest["view"]["elevation_deg"] - 20.0) <= 2.0
    values = {name: psnr(str(out), None if name == "front" else name)[0] for name in ("front",) + VIEW_NAMES}
    # before: front 13.0, right 15.9, back 15.2, left 13.9 dB (dev set, 512 px); now (256 px) front 20.6,
    # right 23.5, back 22.6, left 20.7: the hull is still only close to the car (F@0.05 ~0.65), short of 30
    assert min(values.values()) >= 19.5 and values["front"] >= 19.5, values


def test_cone_keeps_its_shape_with_views(tmp_path):
    """Single view: F@0.05 1.00 on the dev cone; with its views it dropped to 0.67 (the views were
    registered by the single-view shape's height at a wrong offset, and carved its base away)."""
    from backend_local.pipeline import Pipeline
    from metrics import score_case

    request = parse_request({"image_path": os.path.join(CONE, "input.png"), "face_count": 5000,
                             "texture": False, "views": _views(CONE)})
    manifest = Pipeline("cpu").run(request, str(tmp_path / "cone"))
    assert abs(manifest["view"]["elevation_deg"] - 20.0) <= 2.0
    scores = score_case(str(tmp_path / "cone" / "mesh.glb"), os.path.join(CONE, "gt.glb"),
                        os.path.join(CONE, "camera.json"))
    assert scores["f@0.05"] >= 0.95 and scores["iou_side"] >= 0.9, scores


def test_given_mesh_is_painted_from_its_views(tmp_path):
    """Texturing a given mesh (the cone's ground truth) with a back view: the back is the back photo,
    not the front mirrored (before, the views were read and then ignored for a given mesh)."""
    from backend_local.pipeline import Pipeline
    from render_psnr import psnr

    base = {"image_path": os.path.join(CONE, "input.png"), "mesh_path": os.path.join(CONE, "gt.glb"),
            "mesh_view": {"azimuth_deg": 0.0, "elevation_deg": 20.0}, "texture_size": 256}
    pipeline = Pipeline("cpu")
    pipeline.run(parse_request(base), str(tmp_path / "front"))
    pipeline.run(parse_request(dict(base, views=_views(CONE, ("back",)))), str(tmp_path / "views"))
    shutil.copy(str(tmp_path / "views" / "input_back.png"), str(tmp_path / "front"))
    mirrored, projected = psnr(str(tmp_path / "front"), "back")[0], psnr(str(tmp_path / "views"), "back")[0]
    # measured at 256 px: mirrored 23.1 dB, projected 27.9 dB
    assert projected >= 27.0 and projected > mirrored + 3.0, (mirrored, projected)
    # the front loses a little where the back view's colours blend in at grazing angles (28.8 dB measured)
    assert psnr(str(tmp_path / "views"))[0] >= 28.0
