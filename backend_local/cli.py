"""Command line: `python -m backend_local generate|serve|engines|install`.

generate: exit 0 on success (one summary line per image on stdout), exit 2 with the error JSON on
stderr when a job fails. Several images may be given; each goes to OUT/<image stem>/ and the models
are loaded once for all of them. Ctrl-C or SIGTERM cancels: the running job stops at its next check,
nothing half-written is left, the CANCELLED error goes to stderr and the exit code is 130 (SIGINT) or
143 (SIGTERM), as shells expect.
"""

import argparse
import json
import os
import signal
import sys
import threading

from shared.errors import CANCELLED, INVALID_INPUT, Gen3DError
from shared.request import NUMERIC_FIELDS, PRESETS, SHAPE_ENGINES, TEXTURE_ENGINES, VIEW_NAMES, parse_request

from .install import cli as install_cli
from .install import record as install_record

EXIT_FAILED = 2
# CLI option -> request field, for the numeric fields (shared/request.py holds their defaults and ranges)
NUMBER_OPTIONS = {"--face-count": "face_count", "--texture-size": "texture_size",
                  "--octree-resolution": "octree_resolution", "--steps": "num_inference_steps",
                  "--guidance-scale": "guidance_scale", "--seed": "seed"}


def _number(name):
    """argparse type for a numeric request field: text that is no number gets a clear message naming
    the allowed range; the range itself is checked with the request (INVALID_INPUT JSON, exit 2)."""
    spec = NUMERIC_FIELDS[name]
    what = "a whole number" if spec.kind is int else "a number"

    def parse(text):
        try:
            return spec.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("must be %s between %s and %s, got %r"
                                             % (what, spec.low, spec.high, text))

    parse.__name__ = name   # argparse names the type in some messages
    return parse


def _number_help(name):
    spec = NUMERIC_FIELDS[name]
    return "%s (default %s; %s)" % (spec.help, default_text(spec), spec.describe_range())


def default_text(spec):
    """A nullable field's null default is the engine's own tuned value (e.g. its step count)."""
    return "the engine's own" if spec.default is None else spec.default


def _format_list(text):
    """'glb,obj' -> ["glb", "obj"]; the names are checked by parse_request (INVALID_INPUT, exit 2)."""
    return [name.strip().lower() for name in text.split(",") if name.strip()]


def _mesh_view(text):
    try:
        azimuth, elevation = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("give the camera as AZIMUTH,ELEVATION in degrees, e.g. 30,10")
    return {"azimuth_deg": azimuth, "elevation_deg": elevation}


def _view(text):
    """--view NAME=PATH: one extra view of the object (DESIGN.md "Coordinates")."""
    name, sep, path = text.partition("=")
    if not sep or name not in VIEW_NAMES or not path:
        raise argparse.ArgumentTypeError("expected NAME=PATH with NAME one of %s, got %r" % (", ".join(VIEW_NAMES), text))
    return name, path


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m backend_local", description="Gen3D local backend")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="turn image(s) into textured 3D objects")
    gen.add_argument("images", nargs="+", metavar="IMAGE")
    gen.add_argument("--out", required=True, metavar="DIR",
                     help="result folder (for several images: one sub-folder per image)")
    gen.add_argument("--view", dest="views", action="append", type=_view, default=[], metavar="NAME=PATH",
                     help="an extra view of the object: right=PATH (camera at +X), back=PATH or left=PATH; "
                          "repeat for more (one IMAGE only)")
    gen.add_argument("--overwrite", action="store_true", help="replace an earlier result in the --out folder")
    gen.add_argument("--engine", default="builtin", choices=SHAPE_ENGINES,
                     help="shape engine (default builtin: no downloads; `engines` lists what runs here)")
    gen.add_argument("--texture-engine", default=None, choices=TEXTURE_ENGINES,
                     help="texture engine (default: the shape engine if it can paint, else builtin)")
    gen.add_argument("--preset", choices=PRESETS, help="quality preset: the engine's model variant and step count")
    for option, name in NUMBER_OPTIONS.items():
        gen.add_argument(option, dest=name, type=_number(name), metavar="N", help=_number_help(name))
    gen.add_argument("--format", dest="formats", type=_format_list, metavar="LIST",
                     help="mesh files to write, comma-separated: glb (always), obj (+ mtl), ply; usdz comes from "
                          "the Blender add-on's batch")
    gen.add_argument("--mesh", metavar="MESH", help="texture this .glb or .obj mesh instead of generating a shape "
                     "(its vertices, faces and UVs are kept)")
    gen.add_argument("--mesh-view", metavar="AZIMUTH,ELEVATION", type=_mesh_view,
                     help="with --mesh: where the camera stood, in degrees around and above the mesh's front "
                          "(+Z); default: the front view, fitted")
    gen.add_argument("--no-texture", action="store_true", help="untextured mesh only")
    gen.add_argument("--no-remove-background", action="store_true",
                     help="keep the image's background (default: remove it; a real alpha channel always wins)")
    gen.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                     help="where to run (default auto: CUDA when available)")
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
                 "guidance_scale", "seed", "formats"):
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
    if args.views:
        fields["views"] = {name: {"image_path": os.path.abspath(path)} for name, path in args.views}
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


class _Interrupts:
    """Turns the first Ctrl-C / SIGTERM into a cancel of the running job (it stops at its next check
    and cleans up); a second one interrupts at once (KeyboardInterrupt, still cleaned up)."""

    def __init__(self):
        self.cancel = threading.Event()
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        self.cancel.set()

    @property
    def exit_code(self):
        return 128 + int(self.signum or signal.SIGINT)


def _cancelled(interrupts, image=None):
    name = signal.Signals(interrupts.signum or signal.SIGINT).name
    _fail(Gen3DError(CANCELLED, "Cancelled by %s; nothing was written." % name, retryable=False), image)
    return interrupts.exit_code


def cmd_generate(args):
    if args.views and len(args.images) > 1:
        _fail(Gen3DError(INVALID_INPUT, "--view belongs to one object: give a single IMAGE with it.",
                         stage="queued", retryable=False))
        return EXIT_FAILED
    requests = []
    for image in args.images:
        try:
            requests.append((image, parse_request(_request_fields(args, image), allow_path=True)))
        except Gen3DError as exc:
            _fail(exc, image)
            return EXIT_FAILED
    with _Interrupts() as interrupts:
        try:
            return _generate(args, requests, interrupts)
        except KeyboardInterrupt:
            return _cancelled(interrupts)


def _generate(args, requests, interrupts):
    from .pipeline import Pipeline, prepare_output

    jobs = []
    for (image, request), name in zip(requests, _result_names([image for image, _ in requests])):
        out = args.out if len(requests) == 1 else os.path.join(args.out, name)
        try:   # before any model loads: a bad --out is an input error, found at once
            prepare_output(out, args.overwrite)
        except Gen3DError as exc:
            _fail(exc, image)
            return EXIT_FAILED
        jobs.append((image, request, out))
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
    for image, request, out in jobs:
        if interrupts.cancel.is_set():
            return _cancelled(interrupts, image)
        try:
            manifest = pipeline.run(request, out, on_progress=show, cancel=interrupts.cancel,
                                    overwrite=args.overwrite)
        except Gen3DError as exc:
            if exc.code == CANCELLED and interrupts.signum is not None:
                return _cancelled(interrupts, image)
            _fail(exc, image)
            failed += 1
            continue
        t = manifest["timings"]
        also = "".join(" + " + file for fmt, file in manifest["mesh"]["formats"].items() if fmt != "glb")
        print("%s -> %s%s  (%d faces, %.2f s: preprocess %.2f, shape %.2f, texture %.2f, export %.2f; peak %.0f MB)"
              % (image, os.path.join(out, "mesh.glb"), also, manifest["mesh"]["faces"], t["total"], t["preprocess"],
                 t["shape"], t["texture"], t["export"], manifest["peak_memory_mb"]), flush=True)
        for warning in manifest.get("warnings") or ():
            # the job still succeeds (exit 0), but a doubtful cut-out must not pass silently
            print("warning: %s: %s" % (image, warning), file=sys.stderr, flush=True)
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
