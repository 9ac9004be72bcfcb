"""The RunPod serverless worker: `python -m backend_remote.handler` (the Docker image's entry point).

RunPod calls `handler(job)` with `{"id": ..., "input": <Gen3D request>}`. The request is validated
with shared/ (no local paths), the pipeline runs with its models loaded once per worker, each stage
is reported with `runpod.serverless.progress_update` (what /status shows as IN_PROGRESS output),
the files are uploaded to S3-compatible storage under `<prefix>/<job_id>/`, and the manifest comes
back with presigned URLs. A failure returns `{"error": {"code", "message", "stage", "retryable"}}`,
which RunPod reports as FAILED with that error.

The handler is a coroutine that runs the job in a thread: when RunPod stops a job (cancel or
timeout) it cancels the coroutine, and that sets the job's cancel event so the pipeline stops at
its next step instead of holding the GPU until the end.
"""

import asyncio
import os
import sys
import tempfile
import threading
import traceback

from shared.errors import INTERNAL, Gen3DError
from shared.request import parse_request

from .execute import execute_job
from .storage import S3Config, S3Storage, check_job_id

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


def run_job(job, progress_update, cancel=None, pipeline=None, storage=None):
    """Run one RunPod job synchronously; returns the manifest with URLs or {"error": {...}}."""
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
        return exc.to_dict()
    except Exception as exc:   # whatever happens, RunPod gets a contract error rather than a traceback
        traceback.print_exc(file=sys.stderr)
        return Gen3DError(INTERNAL, "The worker failed unexpectedly (%s: %s). Try again; if it keeps failing, "
                          "check the endpoint's logs." % (type(exc).__name__, exc), retryable=True).to_dict()


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
