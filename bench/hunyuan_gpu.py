"""Drive the Hunyuan engines end to end with tiny random-weight checkpoints (bench/hunyuan_tiny.py): our
adapters call the real library code for model loading, the shape call with our parameters, face
reduction and export, then whole jobs through the pipeline.

    GEN3D_HUNYUAN21_REPO=REPO python bench/hunyuan_gpu.py --out DIR [--device cuda] [--weights DIR]
        [--rasterizer-source DIR]

Writes DIR/report.json (and DIR/<engine>/ job results) and prints a summary. Per engine (hunyuan3d-2.1,
hunyuan3d-2, hunyuan3d-2mini, hunyuan3d-2mv): per-stage availability; shape model load time; generate_shape time, peak
GPU memory, faces, watertightness and bounds; the same seed again (identical mesh) and another seed
(different mesh); one whole job with texture_engine builtin (the mixed mode) with its manifest timings;
for hunyuan3d-2mv also the shape from the front and three views (tests/data/monkey_views) against fewer
views, the Fast preset (turbo DiT + 2.0's turbo VAE + FlashVDM) and a whole job with the views.
Then the painters: hunyuan3d-2's texture call goes as far as this machine allows (it needs the compiled
custom_rasterizer and the paint weights), and with --rasterizer-source (Hunyuan3D-2's
hy3dgen/texgen/custom_rasterizer) the rasterizer is built and the library's own renderer checks that
our output frame is the frame its painter views the mesh in.

With --painters (and --rasterizer-source) the two painters run for real with tiny random-weight paint models
(bench/hunyuan_tiny.py build_paint): the rasterizer is built in the background while the 2.1 painter's
mesh_inpaint_processor is compiled and the tiny models are written; then, per painter engine (hunyuan3d-2:
hy3dgen Hunyuan3DPaintPipeline with its delight and multiview models; hunyuan3d-2.1: hy3dpaint
Hunyuan3DPaintPipeline with Hunyuan3DPaintConfig, DINOv2 and RealESRGAN), the texture model is loaded through
our engine, then a whole job (shape, the engine's own texture stage, export) runs through the Pipeline. The
report gives load and stage times, peak GPU memory, the maps (size, spread) and the GLB's material slots;
--maps-out copies the painted maps there.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from backend_local import foreground, imageio  # noqa: E402
from backend_local.engines import registry  # noqa: E402
from backend_local.engines.base import SHAPE, TEXTURE, JobContext  # noqa: E402
from backend_local.pipeline import Pipeline  # noqa: E402
from shared.errors import Gen3DError  # noqa: E402
from shared.request import parse_request  # noqa: E402

ENGINES = {
    "hunyuan3d-2.1": "backend_local.engines.hunyuan21:Hunyuan21Engine",
    "hunyuan3d-2": "backend_local.engines.hunyuan2:Hunyuan2Engine",
    "hunyuan3d-2mini": "backend_local.engines.hunyuan2:Hunyuan2MiniEngine",
    "hunyuan3d-2mv": "backend_local.engines.hunyuan2:Hunyuan2MVEngine",
}
TINY = {"hunyuan3d-2.1": "2.1", "hunyuan3d-2": "2", "hunyuan3d-2mini": "2mini", "hunyuan3d-2mv": "2mv"}
IMAGE = os.path.join(ROOT, "tests", "data", "mug", "input.png")
VIEWS_CASE = os.path.join(ROOT, "tests", "data", "monkey_views")     # input.png + view_right/back/left.png
PARAMS = dict(octree_resolution=128, num_inference_steps=8, guidance_scale=5.0, face_count=5000, seed=1234)


def log(message):
    print("[hunyuan-gpu] %s" % message, flush=True)


def peak_mb(device):
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def framed_input(request):
    pixels, has_alpha = imageio.open_image(request.image_path)
    return foreground.frame(foreground.foreground_rgba(pixels, has_alpha, True, request.seed))[0]


def framed_views(request):
    views = {}
    for name, source in (request.views or {}).items():
        pixels, has_alpha = imageio.open_image(source["image_path"])
        views[name] = foreground.frame(foreground.foreground_rgba(pixels, has_alpha, True, request.seed))[0]
    return views


def shape_run(engine, request, device, work):
    events = []
    job = JobContext(request, framed_input(request), device, work, lambda s, f, m: events.append(m),
                     views=framed_views(request))
    reset_peak(device)
    started = time.perf_counter()
    shape = engine.generate_shape(job)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    import trimesh

    mesh = trimesh.Trimesh(shape.vertices, shape.faces, process=False)
    return shape, {"seconds": round(seconds, 3), "peak_mb": peak_mb(device), "faces": int(len(shape.faces)),
                   "vertices": int(len(shape.vertices)), "watertight": bool(mesh.is_watertight),
                   "bounds": [shape.vertices.min(0).round(4).tolist(), shape.vertices.max(0).round(4).tolist()],
                   "steps_reported": sum("denoising step" in m for m in events),
                   "scratch_left": sorted(os.listdir(work))}


def bench_engine(name, settings, device, out):
    engine = registry.EngineRegistry({name: settings}).get(name, SHAPE)
    report = {"availability": {stage: engine.availability(stage).__dict__ for stage in (SHAPE, TEXTURE)
                               if stage in engine.capabilities}}
    reset_peak(device)
    started = time.perf_counter()
    engine.load(SHAPE, device)
    report["load"] = {"seconds": round(time.perf_counter() - started, 3), "peak_mb": peak_mb(device)}
    request = parse_request(dict(image_path=IMAGE, engine=name, **PARAMS))
    work = tempfile.mkdtemp()
    shape, report["shape"] = shape_run(engine, request, device, work)
    again, _ = shape_run(engine, request, device, tempfile.mkdtemp())
    other, report["shape_other_seed"] = shape_run(engine, request.with_changes(seed=99), device, tempfile.mkdtemp())
    report["same_seed_identical"] = bool(shape.faces.shape == again.faces.shape and
                                         np.allclose(shape.vertices, again.vertices))
    report["other_seed_differs"] = not (shape.faces.shape == other.faces.shape and
                                        np.allclose(shape.vertices, other.vertices))
    pipeline = Pipeline(str(device), settings={name: settings})
    job_dir = os.path.join(out, name)
    manifest = pipeline.run(request.with_changes(texture_engine="builtin", texture_size=512), job_dir)
    report["job_mixed_builtin_texture"] = {k: manifest[k] for k in ("engine", "timings", "peak_memory_mb", "mesh")}
    report["job_files"] = sorted(os.listdir(job_dir))
    engine.unload()
    for loaded in pipeline.registry.loaded().values():    # free the GPU for the next engine
        loaded.unload()
    return report


def bench_multiview(name, settings, device, out):
    """hunyuan3d-2mv with the front and three views (hy3dgen's MVImageProcessorV2 and DinoImageEncoderMV):
    shape with views against front only and one view, Fast (turbo DiT, 2.0's turbo VAE, FlashVDM), and a whole
    job with the views and texture_engine builtin (every view projected onto the mesh)."""
    engine = registry.EngineRegistry({name: settings}).get(name, SHAPE)
    views = {view: {"image_path": os.path.join(VIEWS_CASE, "view_%s.png" % view)} for view in ("right", "back", "left")}
    request = parse_request(dict(image_path=os.path.join(VIEWS_CASE, "input.png"), engine=name, views=views, **PARAMS),
                            allow_path=True)
    report = {}
    four, report["shape_four_views"] = shape_run(engine, request, device, tempfile.mkdtemp())
    front, report["shape_front_only"] = shape_run(engine, request.with_changes(views=None), device, tempfile.mkdtemp())
    back, report["shape_front_back"] = shape_run(engine, request.with_changes(views={"back": views["back"]}), device,
                                                 tempfile.mkdtemp())
    report["views_change_the_shape"] = all(not (a.faces.shape == b.faces.shape and np.allclose(a.vertices, b.vertices))
                                           for a, b in ((four, front), (four, back)))
    report["registered_views"] = sorted(four.views or {})
    fast = request.with_changes(preset="fast", num_inference_steps=None)
    _shape, report["shape_fast"] = shape_run(engine, fast, device, tempfile.mkdtemp())
    model = engine.model(SHAPE, device, None)
    report["fast_vae_flashvdm"] = type(model.pipeline.vae.volume_decoder).__name__
    pipeline = Pipeline(str(device), settings={name: settings})
    job_dir = os.path.join(out, name + "-views")
    manifest = pipeline.run(request.with_changes(texture_engine="builtin", texture_size=512), job_dir)
    report["job_views_builtin_texture"] = {k: manifest[k] for k in ("engine", "timings", "peak_memory_mb", "mesh")}
    report["job_files"] = sorted(os.listdir(job_dir))
    engine.unload()
    for loaded in pipeline.registry.loaded().values():
        loaded.unload()
    return report


def painter_attempt(settings, device, out):
    """hunyuan3d-2's own texture call through our adapter, as far as it runs here."""
    name = "hunyuan3d-2"
    try:
        pipeline = Pipeline(str(device), settings={name: settings})
        manifest = pipeline.run(parse_request(dict(image_path=IMAGE, engine=name, **PARAMS)),
                                os.path.join(out, name + "-painted"))
        return {"ok": True, "timings": manifest["timings"], "peak_memory_mb": manifest["peak_memory_mb"]}
    except Gen3DError as exc:
        return {"ok": False, "error": exc.to_dict()["error"]}


def build_rasterizer(source, timeout=240):
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                             "--target", "/tmp/site-cr", source], capture_output=True, text=True, timeout=timeout)
    sys.path.insert(0, "/tmp/site-cr")
    return {"returncode": result.returncode, "seconds": round(time.perf_counter() - started, 1),
            "tail": (result.stdout + result.stderr)[-1500:]}


def frame_check(device):
    """Render an asymmetric mesh made in our output frame with hy3dgen's own renderer from its front
    camera (azimuth 0, elevation 0: the view its painter gives the input image's weight) and compare the
    silhouette with our front view (camera on +Z, X right, Y up) and with its mirror images: the best
    match says how the library's frame relates to ours."""
    import cv2
    import trimesh
    from hy3dgen.texgen.differentiable_renderer.mesh_render import MeshRender

    parts = [trimesh.creation.box((1.0, 0.3, 0.3)), trimesh.creation.box((0.3, 1.2, 0.3)),
             trimesh.creation.box((0.2, 0.2, 0.8))]
    parts[0].apply_translation((0.35, 0.45, 0.0))       # an arm to the right at the top: an asymmetric "F"
    parts[2].apply_translation((-0.1, -0.3, 0.3))       # a peg toward +Z
    mesh = trimesh.util.concatenate(parts)
    size = 256
    render = MeshRender(default_resolution=size, texture_size=size, device=str(device))
    render.load_mesh(mesh)
    rendered = render.render_normal(0, 0, bg_color=[-1, -1, -1], use_abs_coor=True, return_type="np").sum(-1) > 0.05

    # our front view after the renderer's own centring and scaling (bounding box centre, sphere fit)
    vertices = np.asarray(mesh.vertices, np.float64)
    centre = (vertices.max(0) + vertices.min(0)) / 2
    scale = 1.15 / (np.linalg.norm(vertices - centre, axis=1).max() * 2.0)
    points = (vertices - centre) * scale / render.ortho_scale
    pixels = np.stack([(points[:, 0] + 0.5) * size, (0.5 - points[:, 1]) * size], axis=1)
    expected = np.zeros((size, size), np.uint8)
    for tri in pixels[mesh.faces]:
        cv2.fillPoly(expected, [np.round(tri * 16).astype(np.int32)], 1, shift=4)
    expected = expected > 0

    def iou(a, b):
        return float((a & b).sum() / max((a | b).sum(), 1))

    candidates = {"ours (front +Z, Y up, X right)": expected, "mirrored left-right (seen from -Z)": expected[:, ::-1],
                  "upside down": expected[::-1], "turned 180 degrees": expected[::-1, ::-1]}
    scores = {name: round(iou(rendered, mask), 4) for name, mask in candidates.items()}
    return {"iou": scores, "best": max(scores, key=scores.get), "rendered_pixels": int(rendered.sum())}


# ---------------------------------------------------------------------------------------------------
# Painters with tiny paint models

PAINTERS = ("hunyuan3d-2", "hunyuan3d-2.1")


def start_rasterizer_build(source, log_path):
    """pip-build custom_rasterizer (CUDA) into /tmp/site-cr in the background; returns (process, started)."""
    env = dict(os.environ, MAX_JOBS="4", TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"))
    handle = open(log_path, "w")
    process = subprocess.Popen([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                                "--no-index", "--target", "/tmp/site-cr", source], stdout=handle,
                               stderr=subprocess.STDOUT, env=env)
    return process, time.perf_counter()


def compile_inpaint_processor(repo):
    """The 2.1 painter's DifferentiableRenderer/mesh_inpaint_processor (pybind11), as its
    compile_mesh_painter.sh does, with the running Python's include flags and extension suffix."""
    import sysconfig

    folder = os.path.join(repo, "hy3dpaint", "DifferentiableRenderer")
    includes = subprocess.run([sys.executable, "-m", "pybind11", "--includes"], capture_output=True,
                              text=True).stdout.split()
    target = "mesh_inpaint_processor" + sysconfig.get_config_var("EXT_SUFFIX")
    started = time.perf_counter()
    result = subprocess.run(["c++", "-O3", "-Wall", "-shared", "-std=c++11", "-fPIC"] + includes +
                            ["mesh_inpaint_processor.cpp", "-o", target], cwd=folder, capture_output=True, text=True)
    return {"returncode": result.returncode, "seconds": round(time.perf_counter() - started, 1),
            "tail": (result.stdout + result.stderr)[-800:]}


def map_stats(job_dir):
    """Size and spread of each texture map a job wrote."""
    from PIL import Image

    stats = {}
    for name in ("albedo", "normal", "roughness", "metallic", "ao"):
        path = os.path.join(job_dir, name + ".png")
        if os.path.isfile(path):
            array = np.asarray(Image.open(path), dtype=np.float32)
            stats[name] = {"size": list(array.shape), "mean": round(float(array.mean()), 2),
                           "std": round(float(array.std()), 2)}
    return stats


def glb_check(path):
    """The GLB's first material: which PBR slots hold a texture, and how many images it embeds."""
    import pygltflib

    gltf = pygltflib.GLTF2().load(path)
    material = gltf.materials[0]
    pbr = material.pbrMetallicRoughness
    return {"meshes": len(gltf.meshes), "images": len(gltf.images),
            "baseColorTexture": pbr.baseColorTexture is not None,
            "metallicRoughnessTexture": pbr.metallicRoughnessTexture is not None,
            "normalTexture": material.normalTexture is not None,
            "occlusionTexture": material.occlusionTexture is not None}


def painter_job(name, settings, device, out, maps_out=None):
    """Load the engine's texture model through our adapter (timed), then run one whole job whose texture
    stage is the engine's own painter."""
    report = {}
    pipeline = Pipeline(str(device), settings={name: settings})
    device = pipeline.device            # the job's own device object, so the preloaded model is reused
    try:
        engine = pipeline.registry.get(name, TEXTURE)
        report["availability"] = engine.availability(TEXTURE).__dict__
        reset_peak(device)
        started = time.perf_counter()
        engine.load(TEXTURE, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        painter = engine._models[TEXTURE]
        report["load"] = {"seconds": round(time.perf_counter() - started, 2), "peak_mb": peak_mb(device),
                          "painter": "%s.%s" % (type(painter).__module__, type(painter).__name__)}
        log("%s painter loaded: %s" % (name, report["load"]))
        request = parse_request(dict(image_path=IMAGE, engine=name, texture_size=512, **PARAMS))
        job_dir = os.path.join(out, name + "-painted")
        reset_peak(device)
        manifest = pipeline.run(request, job_dir)
        report["job"] = {k: manifest[k] for k in ("engine", "timings", "peak_memory_mb", "mesh", "device")}
        report["maps"] = map_stats(job_dir)
        report["glb"] = glb_check(os.path.join(job_dir, "mesh.glb"))
        report["job_files"] = sorted(os.listdir(job_dir))
        report["ok"] = True
        if maps_out:
            import shutil

            tag = name.replace("hunyuan3d-", "h").replace(".", "")
            for key in ("albedo",) + (("metallic", "roughness") if name == "hunyuan3d-2.1" else ()):
                shutil.copy(os.path.join(job_dir, key + ".png"), os.path.join(maps_out, "%s_%s.png" % (tag, key)))
    except Exception as exc:
        report["ok"] = False
        report["error"] = "%s: %s" % (type(exc).__name__, exc)
        report["traceback"] = traceback.format_exc()[-4000:]
    finally:
        for loaded in pipeline.registry.loaded().values():
            loaded.unload()
    return report


def print_painter_table(report):
    builds = ["rasterizer %s" % report.get("rasterizer_build"), "inpaint %s" % {
        k: v for k, v in (report.get("inpaint_processor_build") or {}).items() if k != "tail"}]
    print("builds: " + "; ".join(builds))
    print("%-14s %-4s %-8s %-7s %-30s %-9s %s" % ("engine", "ok", "load s", "load MB", "job shape/texture/total s",
                                                  "peak MB", "maps / glb"))
    for name, row in report.get("painters", {}).items():
        job = row.get("job", {})
        times = job.get("timings", {})
        maps = ",".join("%s %dpx sd%.0f" % (k, v["size"][0], v["std"]) for k, v in row.get("maps", {}).items())
        glb = row.get("glb", {})
        print("%-14s %-4s %-8s %-7s %-30s %-9s %s %s" % (
            name, row.get("ok"), row.get("load", {}).get("seconds"), round(row.get("load", {}).get("peak_mb") or 0),
            "/".join("%.2f" % times.get(k, 0) for k in ("shape", "texture", "total")), job.get("peak_memory_mb"),
            maps, "glb %s" % sorted(k for k, v in glb.items() if v is True)))
        if not row.get("ok"):
            print("   error: %s" % row.get("error", "")[:600])


def run_painters(args, device, report, repo):
    import hunyuan_tiny

    build, build_started = start_rasterizer_build(args.rasterizer_source, os.path.join(args.out, "rasterizer.log"))
    if repo:
        report["inpaint_processor_build"] = compile_inpaint_processor(repo)
        log("mesh_inpaint_processor: %s" % report["inpaint_processor_build"])
    weights = args.weights or os.path.join(args.out, "tiny-weights")
    started = time.perf_counter()
    shapes = ["2"] + (["2.1"] if repo else [])
    report["tiny_weights"] = hunyuan_tiny.build(weights, shapes)
    report["tiny_paint_weights"] = hunyuan_tiny.build_paint(weights, shapes, repo=repo)
    report["tiny_weights_seconds"] = round(time.perf_counter() - started, 2)
    log("tiny weights in %.1f s" % report["tiny_weights_seconds"])
    returncode = build.wait()
    report["rasterizer_build"] = {"returncode": returncode, "seconds": round(time.perf_counter() - build_started, 1)}
    sys.path.insert(0, "/tmp/site-cr")
    log("custom_rasterizer build: %s" % report["rasterizer_build"])
    settings = {"weights_dir": weights, "repo": repo}
    for name in PAINTERS:
        if name == "hunyuan3d-2.1" and not repo:
            continue
        log("painter %s" % name)
        report["painters"][name] = painter_job(name, settings, device, args.out, args.maps_out)
        brief = {k: v for k, v in report["painters"][name].items() if k != "traceback"}
        log(json.dumps(brief, default=str)[:1500])
        if "traceback" in report["painters"][name]:
            log(report["painters"][name]["traceback"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights", help="tiny weights folder (built here when absent)")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    parser.add_argument("--rasterizer-source", help="Hunyuan3D-2's hy3dgen/texgen/custom_rasterizer to build")
    parser.add_argument("--frame-check-only", action="store_true",
                        help="only build the rasterizer and compare the library's front view with ours")
    parser.add_argument("--painters", action="store_true",
                        help="run both painters with tiny paint models (needs --rasterizer-source)")
    parser.add_argument("--maps-out", help="with --painters: copy the painted maps into this folder")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    device = torch.device(args.device)
    for name, path in ENGINES.items():          # until the registry lists them itself
        registry.ENGINES.setdefault(name, path)
    if args.frame_check_only:
        report = {"rasterizer_build": build_rasterizer(args.rasterizer_source), "frame_check": frame_check(device)}
        with open(os.path.join(args.out, "report.json"), "w") as handle:
            json.dump(report, handle, indent=2)
        log(json.dumps(report["frame_check"]))
        return 0
    weights = args.weights or os.path.join(args.out, "tiny-weights")
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "params": PARAMS, "engines": {}, "painters": {}}
    if args.painters:
        repo = os.environ.get("GEN3D_HUNYUAN21_REPO")
        if repo:
            sys.path.insert(0, os.path.join(repo, "hy3dshape"))
        try:
            run_painters(args, device, report, repo)
        finally:
            with open(os.path.join(args.out, "report.json"), "w") as handle:
                json.dump(report, handle, indent=2, default=str)
            print_painter_table(report)
        return 0

    import hunyuan_tiny

    repo = os.environ.get("GEN3D_HUNYUAN21_REPO")
    if repo:
        sys.path.insert(0, os.path.join(repo, "hy3dshape"))
    started = time.perf_counter()
    report["tiny_weights"] = hunyuan_tiny.build(weights, [TINY[name] for name in args.engines],
                                                turbo="hunyuan3d-2mv" in args.engines)
    report["tiny_weights_seconds"] = round(time.perf_counter() - started, 2)
    settings = {"weights_dir": weights, "repo": repo}

    for name in args.engines:
        log("engine %s" % name)
        try:
            report["engines"][name] = bench_engine(name, settings, device, args.out)
        except Exception as exc:
            report["engines"][name] = {"error": "%s: %s" % (type(exc).__name__, exc),
                                       "traceback": traceback.format_exc()[-3000:]}
        log(json.dumps(report["engines"][name])[:600])
        if name == "hunyuan3d-2mv":
            try:
                report["engines"][name]["multiview"] = bench_multiview(name, settings, device, args.out)
            except Exception as exc:
                report["engines"][name]["multiview"] = {"error": "%s: %s" % (type(exc).__name__, exc),
                                                        "traceback": traceback.format_exc()[-3000:]}
            log(json.dumps(report["engines"][name]["multiview"])[:600])

    if "hunyuan3d-2" in args.engines:
        report["painter_hunyuan3d-2_before_build"] = painter_attempt(settings, device, args.out)
        if args.rasterizer_source:
            report["rasterizer_build"] = build_rasterizer(args.rasterizer_source)
            try:
                report["frame_check"] = frame_check(device)
            except Exception as exc:
                report["frame_check"] = {"error": "%s: %s" % (type(exc).__name__, exc),
                                         "traceback": traceback.format_exc()[-2000:]}
            report["painter_hunyuan3d-2_after_build"] = painter_attempt(settings, device, args.out)
    if "hunyuan3d-2.1" in args.engines:
        engine = registry.EngineRegistry({"hunyuan3d-2.1": settings}).get("hunyuan3d-2.1", SHAPE)
        report["painter_hunyuan3d-2.1"] = engine.availability(TEXTURE).__dict__

    with open(os.path.join(args.out, "report.json"), "w") as handle:
        json.dump(report, handle, indent=2, default=str)
    log("report: %s" % os.path.join(args.out, "report.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
