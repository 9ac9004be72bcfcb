"""The RunPod serverless worker: `python -m backend_remote.handler` (the Docker image's entry point).

RunPod calls `handler(job)` with `{"id": ..., "input": <Gen3D request>}`. The request is validated
with shared/ (no local paths), the pipeline runs with its models loaded once per worker, each stage
is reported with `runpod.serverless.progress_update` (what /status shows as IN_PROGRESS output),
the files are uploaded to S3-compatible storage under `<prefix>/<job_id>/`, and the manifest comes
back with presigned URLs. A failure returns `{"error": "<JSON of {code, message, stage, retryable}>"}`:
the SDK types `error` as a string (a dict fails its own response validation), so the contract
error travels as JSON text, which the add-on parses back. After OUT_OF_MEMORY or INTERNAL the
result also carries `refresh_worker: true`, so RunPod replaces the worker instead of giving the
next job a CUDA context that may be broken.

`python backend_remote/handler.py` (RunPod's usual CMD style) works as well as `python -m
backend_remote.handler`.

The handler is a coroutine that runs the job in a thread: when RunPod stops a job (cancel or
timeout) it cancels the coroutine, and that sets the job's cancel event so the pipeline stops at
its next step instead of holding the GPU until the end.
"""

import asyncio
import json
import os
import sys
import tempfile
import threading
import traceback

if not __package__:          # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backend_remote.execute import execute_job  # noqa: E402
from backend_remote.storage import S3Config, S3Storage, check_job_id  # noqa: E402
from shared.errors import INTERNAL, OUT_OF_MEMORY, Gen3DError  # noqa: E402
from shared.request import parse_request  # noqa: E402

# After these the process may hold a broken CUDA context or leaked memory: RunPod starts a new worker.
REFRESH_AFTER = (OUT_OF_MEMORY, INTERNAL)

_state_lock = threading.Lock()
_pipeline = None
_storage = None


def get_pipeline():
    """The worker's one pipeline: created on first use and kept, so models stay loaded between jobs."""
    global _pipeline
    with _state_lock:
        if _pipeline is None:
            from backend_local.pipeline import Pipeline
            _pipeline = Pipeline(os.environ.get("GEN3D_DEVICE", "auto"))
        return _pipeline


def get_storage():
    """Storage from the environment, built once (raises STORAGE when no bucket is configured)."""
    global _storage
    with _state_lock:
        if _storage is None:
            _storage = S3Storage(S3Config.from_env())
        return _storage


def _report(progress_update, job, event):
    # The SDK posts each update from its own thread, so one sent just before the job returns could
    # land after the result; the final 100% is left to COMPLETED instead.
    if event["progress"] < 1.0:
        progress_update(job, event)


def failure(exc):
    """What the handler returns for a failed job (see the module docstring)."""
    result = {"error": json.dumps(exc.to_dict()["error"])}
    if exc.code in REFRESH_AFTER:
        result["refresh_worker"] = True
    return result


def parse_failure(result):
    """The Gen3DError in a handler result or a RunPod `error` field (JSON text or, from older
    workers, a dict); None when there is none."""
    error = result.get("error") if isinstance(result, dict) else None
    if error is None:
        return None
    if isinstance(error, str):
        try:
            error = json.loads(error)
        except ValueError:
            error = {"code": INTERNAL, "message": error}
    return Gen3DError.from_dict(error)


def run_job(job, progress_update, cancel=None, pipeline=None, storage=None):
    """Run one RunPod job synchronously; returns the manifest with URLs or a failure()."""
    cancel = cancel or threading.Event()
    try:
        job_id = check_job_id(str(job.get("id", "")))
        request = parse_request(job.get("input"), allow_path=False)
        storage = storage or get_storage()
        pipeline = pipeline or get_pipeline()
        work_root = os.environ.get("GEN3D_WORK_DIR") or tempfile.gettempdir()
        manifest = execute_job(pipeline, storage, request, job_id, work_root,
                               on_progress=lambda event: _report(progress_update, job, event), cancel=cancel)
        return storage.with_urls(job_id, manifest)
    except Gen3DError as exc:
        return failure(exc)
    except Exception as exc:   # whatever happens, RunPod gets a contract error rather than a traceback
        traceback.print_exc(file=sys.stderr)
        return failure(Gen3DError(INTERNAL, "The worker failed unexpectedly (%s). Try again; if it keeps failing, "
                                  "check the endpoint's logs." % type(exc).__name__, retryable=True))


async def handler(job):
    import runpod

    cancel = threading.Event()
    try:
        return await asyncio.to_thread(run_job, job, runpod.serverless.progress_update, cancel)
    except asyncio.CancelledError:
        cancel.set()
        raise


def main():
    import runpod

    get_pipeline()         # load at start-up: a cold start pays for it once, not the first job
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
