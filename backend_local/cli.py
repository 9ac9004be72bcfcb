"""Command line: `python -m backend_local generate|serve|engines|install`.

generate: exit 0 on success (one summary line per image on stdout), exit 2 with the error JSON on
stderr when a job fails. Several images may be given; each goes to OUT/<image stem>/ and the models
are loaded once for all of them.
"""

import argparse
import json
import os
import sys

from shared.errors import Gen3DError
from shared.request import PRESETS, SHAPE_ENGINES, TEXTURE_ENGINES, parse_request

from .install import cli as install_cli
from .install import record as install_record

EXIT_FAILED = 2


def _positive_int(text):
    return int(text)


def _mesh_view(text):
    try:
        azimuth, elevation = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("give the camera as AZIMUTH,ELEVATION in degrees, e.g. 30,10")
    return {"azimuth_deg": azimuth, "elevation_deg": elevation}


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m backend_local", description="Gen3D local backend")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="turn image(s) into textured 3D objects")
    gen.add_argument("images", nargs="+", metavar="IMAGE")
    gen.add_argument("--out", required=True, metavar="DIR",
                     help="result folder (for several images: one sub-folder per image)")
    gen.add_argument("--engine", default="builtin", choices=SHAPE_ENGINES)
    gen.add_argument("--texture-engine", default=None, choices=TEXTURE_ENGINES)
    gen.add_argument("--face-count", type=_positive_int)
    gen.add_argument("--texture-size", type=_positive_int)
    gen.add_argument("--octree-resolution", type=_positive_int)
    gen.add_argument("--preset", choices=PRESETS, help="quality preset: the engine's model variant and step count")
    gen.add_argument("--steps", dest="num_inference_steps", type=_positive_int,
                     help="diffusion steps (default: the engine's own, e.g. 50, or 5 for a turbo model)")
    gen.add_argument("--guidance-scale", type=float)
    gen.add_argument("--seed", type=_positive_int)
    gen.add_argument("--mesh", metavar="MESH", help="texture this .glb or .obj mesh instead of generating a shape "
                     "(its vertices, faces and UVs are kept)")
    gen.add_argument("--mesh-view", metavar="AZIMUTH,ELEVATION", type=_mesh_view,
                     help="with --mesh: where the camera stood, in degrees around and above the mesh's front "
                          "(+Z); default: the front view, fitted")
    gen.add_argument("--no-texture", action="store_true")
    gen.add_argument("--no-remove-background", action="store_true")
    gen.add_argument("--device", default="auto", help="auto, cpu or cuda")
    gen.add_argument("--low-memory", action="store_true", help="unload each model as soon as its stage ends")
    gen.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    serve = sub.add_parser("serve", help="stdio worker for the Blender add-on (newline-delimited JSON)")
    serve.add_argument("--device", default="auto")
    serve.add_argument("--out-root", default=None, help="where jobs go when a submit names no out_dir")
    serve.add_argument("--low-memory", action="store_true")

    engines = sub.add_parser("engines", help="list engines and whether they can run here")
    engines.add_argument("--json", action="store_true")

    install_cli.add_parser(sub)
    return parser


def _request_fields(args, image):
    fields = {"image_path": os.path.abspath(image), "engine": args.engine}
    for name in ("preset", "texture_engine", "face_count", "texture_size", "octree_resolution", "num_inference_steps",
                 "guidance_scale", "seed"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    if args.mesh:
        fields["mesh_path"] = os.path.abspath(args.mesh)
    if args.mesh_view:
        fields["mesh_view"] = args.mesh_view
    if args.no_texture:
        fields["texture"] = False
    if args.no_remove_background:
        fields["remove_background"] = False
    return fields


def _fail(error, image=None):
    payload = error.to_dict()
    if image:
        payload["image"] = image
    print(json.dumps(payload), file=sys.stderr, flush=True)


def _result_names(images):
    """Sub-folder per image: its stem, or its folder's name when stems repeat (dataset/<case>/input.png)."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in images]
    if len(set(stems)) == len(stems):
        return stems
    parents = [os.path.basename(os.path.dirname(os.path.abspath(path))) for path in images]
    if len(set(parents)) == len(parents):
        return parents
    return ["%03d_%s" % (index, stem) for index, stem in enumerate(stems)]


def cmd_generate(args):
    from .pipeline import Pipeline

    requests = []
    for image in args.images:
        try:
            requests.append((image, parse_request(_request_fields(args, image), allow_path=True)))
        except Gen3DError as exc:
            _fail(exc, image)
            return EXIT_FAILED
    try:
        pipeline = Pipeline(args.device, low_memory=args.low_memory or None)
    except Gen3DError as exc:
        _fail(exc)
        return EXIT_FAILED

    def show(event):
        if not args.quiet:
            print("[%3d%%] %-10s %s" % (event["progress"] * 100, event["stage"], event["message"]),
                  file=sys.stderr, flush=True)

    failed = 0
    for (image, request), name in zip(requests, _result_names([image for image, _ in requests])):
        out = args.out if len(requests) == 1 else os.path.join(args.out, name)
        try:
            manifest = pipeline.run(request, out, on_progress=show)
        except Gen3DError as exc:
            _fail(exc, image)
            failed += 1
            continue
        t = manifest["timings"]
        print("%s -> %s  (%d faces, %.2f s: preprocess %.2f, shape %.2f, texture %.2f, export %.2f; peak %.0f MB)"
              % (image, os.path.join(out, "mesh.glb"), manifest["mesh"]["faces"], t["total"], t["preprocess"],
                 t["shape"], t["texture"], t["export"], manifest["peak_memory_mb"]), flush=True)
    return EXIT_FAILED if failed else 0


def cmd_engines(args):
    from .engines.registry import EngineRegistry

    rows = EngineRegistry().describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        state = "available" if row["available"] else "unavailable: %s" % row["reason"]
        print("%-16s %-16s %s" % (row["name"], "+".join(row["capabilities"]) or "-", state))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    install_record.apply_to_environment()     # engines default to what `install` put in place
    if args.command == "install":
        return install_cli.main(args)
    if args.command == "generate":
        return cmd_generate(args)
    if args.command == "engines":
        return cmd_engines(args)
    from .worker import serve
    return serve(device=args.device, out_root=args.out_root, low_memory=args.low_memory or None)
