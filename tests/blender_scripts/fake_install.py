"""Stands in for `python -m backend_local install ENGINE --json-progress` (tests copy it as a package's
__main__.py): it speaks the JSON-lines protocol blender_addon/engine_install.py reads, mixed with the
kind of plain output pip and compilers print. FAKE_INSTALL_MODE picks the ending: ok, error, crash,
old (a backend without the install command), hang (never ends; starts a grandchild, pid in FAKE_CHILD_PID).
Any other command goes to the real backend_local CLI when it is there."""

import json
import os
import subprocess
import sys
import time


def emit(**event):
    print(json.dumps(event), flush=True)


def main(args):
    mode = os.environ.get("FAKE_INSTALL_MODE", "ok")
    if args[:1] != ["install"] or mode == "old":
        if args[:1] != ["install"]:
            try:
                from backend_local.cli import main as real_main
            except ImportError:
                real_main = None
            if real_main is not None:
                return real_main(args)
        sys.stderr.write("usage: backend_local [-h] {generate,serve,engines} ...\nbackend_local: error: argument "
                         "command: invalid choice: 'install' (choose from 'generate', 'serve', 'engines')\n")
        return 2
    engine = args[1]
    assert "--json-progress" in args, args
    print("Collecting hy3dgen==2.0.2", flush=True)
    emit(event="progress", stage="packages", fraction=0.25, message="hy3dgen 2.0.2")
    print("  Downloading model.safetensors ━━━━━━━━━━ 1.2/2.4 GB", flush=True)
    emit(event="progress", stage="weights", fraction=0.5, message="model.safetensors 1.2 of 2.4 GB")
    gate = os.environ.get("FAKE_GATE")
    deadline = time.monotonic() + 60
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    if mode == "ok":
        emit(event="progress", stage="check", fraction=1.0, message="engines")
        emit(event="done", engine=engine, message="%s is installed and available" % engine)
        return 0
    if mode == "error":
        emit(event="error", code="ENGINE_UNAVAILABLE",
             message="nvcc was not found, so custom_rasterizer cannot be built. Install the CUDA toolkit 12.x "
                     "(nvcc on PATH) and press Install engine again.")
        return 2
    if mode == "crash":
        print("Traceback (most recent call last):\nRuntimeError: disk I/O error", flush=True)
        return 1
    if mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(os.environ["FAKE_CHILD_PID"], "w") as handle:
            handle.write(str(child.pid))
        time.sleep(600)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
