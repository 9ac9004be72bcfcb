"""Longest main-thread timer tick while a job runs (target <= 5 ms).

    python bench/addon_tick.py [--faces 40000] [--texture-size 1024] [--image PATH] [--backend-dir DIR]

Registers the add-on from the source tree in the bpy module, queues a real local job (worker
subprocess, default 40k faces and 1024 textures) and calls the add-on's timer callback every
TICK_INTERVAL_S, as Blender's event loop does, timing each call until the job ends. The import that
follows is a separate one-shot timer and is reported on its own (see bench/addon_import.py).
"""

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_MS = 5.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=40000)
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--image", default=os.path.join(ROOT, "tests", "data", "sphere", "input.png"))
    parser.add_argument("--backend-dir", default=ROOT)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()

    import bpy
    sys.path.insert(0, ROOT)
    import blender_addon
    from blender_addon import session
    from blender_addon.settings import BackendSettings, ImportSettings

    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_addon.register()
    try:
        with tempfile.TemporaryDirectory() as out:
            settings = BackendSettings(python=args.python, backend_dir=args.backend_dir, device="cpu",
                                       output_dir=out).resolve()
            job = session.submit(bpy.context, "bench", args.image,
                                 {"face_count": args.faces, "texture_size": args.texture_size}, settings,
                                 ImportSettings())
            ticks, cpu, gc_ticks = [], [], []
            collections = []
            gc.callbacks.append(lambda phase, _info: collections.append(phase) if phase == "start" else None)
            next_tick = time.perf_counter()
            while job.active:
                time.sleep(max(0.0, next_tick - time.perf_counter()))
                started, started_cpu, gc_before = time.perf_counter(), time.thread_time(), len(collections)
                session.tick()
                ticks.append(time.perf_counter() - started)
                if len(collections) != gc_before:    # Python's cycle collector ran inside this tick
                    gc_ticks.append(ticks[-1])
                cpu.append(time.thread_time() - started_cpu)
                next_tick = started + session.TICK_INTERVAL_S
            started = time.perf_counter()
            session._run_imports()
            import_s = time.perf_counter() - started
            if job.status != "COMPLETED":
                print("job %s: %s" % (job.status, job.message))
                return 1
    finally:
        blender_addon.unregister()
    ms = sorted(t * 1000 for t in ticks)
    print("Blender %s, %d-face job in %.1f s: %d ticks, longest %.2f ms, p99 %.2f ms, median %.3f ms; "
          "import afterwards %.3f s" % (bpy.app.version_string, args.faces, job.seconds, len(ms), ms[-1],
                                        ms[min(len(ms) - 1, int(len(ms) * 0.99))], statistics.median(ms), import_s))
    # Wall time includes time the OS gave other processes; the main thread's own CPU time is what the
    # add-on costs. On a busy machine the two differ.
    print("  main-thread CPU per tick: longest %.2f ms, median %.3f ms; ticks with a garbage-collector pass: %d%s"
          % (max(cpu) * 1000, statistics.median(cpu) * 1000, len(gc_ticks),
             " (longest %.2f ms)" % (max(gc_ticks) * 1000) if gc_ticks else ""))
    print("  target <= %.0f ms (wall): %s" % (TARGET_MS, "met" if ms[-1] <= TARGET_MS else "MISSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
