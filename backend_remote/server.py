"""The self-hosted RunPod-compatible server (FastAPI), `python -m backend_remote serve`.

  POST /run {"input": request}        -> {"id", "status": "IN_QUEUE"}   (invalid input: "FAILED" + error)
  POST /runsync?wait=<ms>             -> as /status once the job ends, or after `wait` (default 90 s)
  GET  /status/{id}                   -> {"id", "status", "delayTime", "executionTime", "output"?, "error"?}
  POST /cancel/{id}                   -> {"id", "status"}
  GET  /health                        -> {"jobs": {...counts}, "workers": {"idle", "running"}}
  GET  /files/{id}/{name}?expires&sig -> a result file (disk storage; the signature replaces the API key)

Every route but /files needs `Authorization: Bearer <key>`. A COMPLETED job's output is its manifest
with a fresh URL per file and `meta_url`, signed anew on each /status so they stay valid for the
configured time after the last look.
"""

import asyncio
import fcntl
import json
import os
import sys
import traceback
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import IMAGE_TOO_LARGE, INTERNAL, INVALID_INPUT, UNAUTHORIZED, Gen3DError
from shared.progress import progress_event
from shared.request import MAX_IMAGE_BYTES, MAX_MESH_BYTES
from shared.version import __version__

from . import job_store
from .device_process import DeviceProcess
from .public_errors import public_error, public_message
from .retention import Janitor
from .scheduler import QueueFull, Quotas, Scheduler
from .storage import content_type

# A 64 MB image is ~86 MB of base64, and a mesh to texture as much again; leave room for the other fields.
MAX_BODY_BYTES = (MAX_IMAGE_BYTES + MAX_MESH_BYTES) * 4 // 3 + 1024 * 1024
DEFAULT_RUNSYNC_WAIT_S = 90.0
MAX_RUNSYNC_WAIT_S = 300.0
RUNSYNC_POLL_S = 0.1
BODY_TIMEOUT_S = 300.0          # the whole request body, however slowly it trickles in
MAX_JSON_DEPTH = 32


@dataclass
class ServerState:
    api_keys: object
    store: job_store.JobStore
    storage: object
    scheduler: Scheduler
    janitor: Janitor
    public_url: str = None
    hidden_paths: tuple = ()        # server folders that error messages must not show
    lock: object = field(default=None, repr=False)


class ApiError(Exception):
    def __init__(self, status_code, error, headers=None):
        super().__init__(error.message)
        self.status_code = status_code
        self.error = error
        self.headers = headers


def _api_error(status_code, code, message, headers=None):
    return ApiError(status_code, Gen3DError(code, message, retryable=False), headers)


def create_app(state):
    @asynccontextmanager
    async def lifespan(_app):
        state.scheduler.start()
        state.janitor.start()
        try:
            yield
        finally:
            state.janitor.stop()
            await run_in_threadpool(state.scheduler.stop)
            state.store.close()

    app = FastAPI(title="Gen3D remote", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    def error_response(status_code, error, headers=None):
        body = {"error": public_error(error.to_dict()["error"], state.hidden_paths)}
        return JSONResponse(body, status_code=status_code, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error_response(_request, exc):
        return error_response(exc.status_code, exc.error, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc):       # unknown routes and methods: a contract error, not {"detail"}
        if exc.status_code == 404:
            message = "No such route. The server answers /run, /runsync, /status/{id}, /cancel/{id} and /health."
        elif exc.status_code == 405:
            message = "This route does not take that HTTP method."
        else:
            message = "The request was refused (HTTP %d)." % exc.status_code
        return error_response(exc.status_code, Gen3DError(INVALID_INPUT, message, retryable=False),
                              getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request, exc):       # never a traceback or a plain-text 500
        traceback.print_exception(exc, file=sys.stderr)
        return error_response(500, Gen3DError(INTERNAL, "The server failed on this request (%s). Try again."
                                              % type(exc).__name__, retryable=True))

    @app.exception_handler(RequestValidationError)
    async def _bad_parameter(_request, exc):
        problems = "; ".join("%s: %s" % (".".join(str(part) for part in error.get("loc", ())), error.get("msg"))
                             for error in exc.errors())
        return error_response(400, Gen3DError(INVALID_INPUT, "Bad request parameter (%s)." % problems,
                                              retryable=False))

    def authorize(request):
        """The caller's key name (for quotas); 401 without a valid key."""
        owner = state.api_keys.owner(request.headers.get("authorization"))
        if owner is None:
            raise _api_error(401, UNAUTHORIZED, "Missing or wrong API key. Send 'Authorization: Bearer <key>' with a "
                             "key from the server's API key file.", headers={"WWW-Authenticate": "Bearer"})
        return owner

    def base_url(request):
        """Download links point at --public-url, else at the address this connection reached (the
        socket's own address), never at whatever the Host header claims."""
        if state.public_url:
            return state.public_url.rstrip("/")
        host, port = request.scope.get("server") or ("127.0.0.1", 80)
        host = "[%s]" % host if ":" in host else host
        return "%s://%s:%d" % (request.url.scheme, host, port)

    def known_job(job_id):
        job = state.store.get(job_id)
        if job is None:
            raise _api_error(404, INVALID_INPUT, "No job %r on this server (it may have expired and been cleaned "
                             "up)." % public_message(job_id)[:80])
        return job

    def render(job, request):
        now = state.store.clock()
        body = {"id": job.id, "status": job.status, "delayTime": job.delay_ms(now),
                "executionTime": job.execution_ms(now)}
        if job.status == job_store.IN_PROGRESS:
            body["output"] = job.progress or progress_event(job.id, "preprocess", 0.0, "starting")
        elif job.status == job_store.COMPLETED:
            body["output"] = state.storage.with_urls(job.id, job.output, base_url(request))
        elif job.error is not None:
            body["error"] = public_error(job.error, state.hidden_paths)
        return body

    async def read_input(request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _too_large()
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise _too_large()
        except TimeoutError:
            raise _api_error(408, INVALID_INPUT, "The request body took longer than %d s to arrive." % BODY_TIMEOUT_S)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise _api_error(400, INVALID_INPUT, "The request body is not valid JSON.")
        problem = _json_problem(payload)
        if problem:
            raise _api_error(400, INVALID_INPUT, "The request body %s." % problem)
        if not isinstance(payload, dict) or not isinstance(payload.get("input"), dict):
            raise _api_error(400, INVALID_INPUT, "The request body must be {\"input\": {...Gen3D request...}}.")
        return payload["input"]

    async def submit(request):
        owner = authorize(request)
        job_input = await read_input(request)
        try:
            return await run_in_threadpool(state.scheduler.submit, job_input, owner)
        except QueueFull as exc:
            raise ApiError(429, exc.error, headers={"Retry-After": str(exc.retry_after_s)})

    @app.post("/run")
    async def run(request: Request):
        job = known_job(await submit(request))
        body = {"id": job.id, "status": job.status}
        if job.error is not None:
            body["error"] = public_error(job.error, state.hidden_paths)
        return body

    @app.post("/runsync")
    async def runsync(request: Request, wait: int = None):
        job_id = await submit(request)
        timeout = DEFAULT_RUNSYNC_WAIT_S if wait is None else min(max(wait / 1000.0, 0.0), MAX_RUNSYNC_WAIT_S)
        # An async wait: it holds no thread, so any number of /runsync calls leave the thread pool to
        # the other routes. A SQLite read by primary key every RUNSYNC_POLL_S is cheap.
        deadline = asyncio.get_running_loop().time() + timeout
        job = state.store.get(job_id)
        while job is not None and job.status not in job_store.FINAL:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.sleep(min(RUNSYNC_POLL_S, left))
            job = state.store.get(job_id)
        return render(job, request)

    @app.get("/status/{job_id}")
    def status(job_id: str, request: Request):
        authorize(request)
        return render(known_job(job_id), request)

    @app.post("/cancel/{job_id}")
    def cancel(job_id: str, request: Request):
        authorize(request)
        known_job(job_id)
        job = state.scheduler.cancel(job_id)
        return {"id": job.id, "status": job.status}

    @app.get("/health")
    def health(request: Request):
        authorize(request)
        counts = state.store.counts()
        return {"jobs": {"completed": counts.get(job_store.COMPLETED, 0), "failed": counts.get(job_store.FAILED, 0)
                         + counts.get(job_store.TIMED_OUT, 0), "cancelled": counts.get(job_store.CANCELLED, 0),
                         "inProgress": counts.get(job_store.IN_PROGRESS, 0),
                         "inQueue": counts.get(job_store.IN_QUEUE, 0), "retried": 0},
                "workers": state.scheduler.workers(), "storage": state.storage.kind, "version": __version__}

    @app.api_route("/files/{job_id}/{name}", methods=["GET", "HEAD"])
    def files(job_id: str, name: str, expires: str = "", sig: str = ""):
        signed_file = getattr(state.storage, "signed_file", None)
        path = signed_file(job_id, name, expires, sig) if signed_file else None
        if path is None:
            raise _api_error(403, UNAUTHORIZED, "This download link is invalid or has expired. Ask /status/%s for a "
                             "fresh one." % job_id)
        return FileResponse(path, media_type=content_type(name), headers={"Cache-Control": "private, max-age=60"})

    return app


def _json_problem(payload):
    """Why a parsed JSON body is refused (too deeply nested, a lone surrogate that cannot be
    stored or sent back as UTF-8), or None."""
    stack = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return "is nested more than %d levels deep" % MAX_JSON_DEPTH
        if isinstance(value, dict):
            for key, item in value.items():
                stack.append((key, depth))
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "holds text that is not valid Unicode (a lone surrogate escape such as \\ud800)"
    return None


def _too_large():
    return ApiError(413, Gen3DError(IMAGE_TOO_LARGE, "The request is larger than %d MB. Send a smaller image (at most "
                                    "64 megapixels)." % (MAX_BODY_BYTES // 2 ** 20), stage="queued", retryable=False))


def lock_data_dir(data_dir):
    """Hold an exclusive lock on DATA_DIR/server.lock for the server's lifetime; a second server on
    the same folder would fail the first one's running jobs at its start-up."""
    handle = open(os.path.join(data_dir, "server.lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ValueError("Another Gen3D server (pid %s) is using the data dir %s. Stop it, or give this one "
                         "another --data-dir." % (holder, data_dir))
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def build_state(api_key_file, data_dir, storage_spec=None, devices=("auto",), retention_s=24 * 3600,
                url_expiry_s=3600, public_url=None, job_timeout_s=3600, quotas=Quotas(), queue_url=None):
    """Everything the server needs, loaded before it starts listening (so a bad key file, storage
    setting or device stops it at once instead of failing every job). With `queue_url` the jobs go
    to farm workers through Celery (backend_remote/farm) instead of running here."""
    from backend_local.device import resolve_device
    from backend_local.fetch import ALLOW_ENV

    from .auth import load_api_keys
    from .storage import open_storage

    if os.environ.get(ALLOW_ENV):
        print("[gen3d] warning: %s is set, so image_url may reach private and local addresses; unset it on a "
              "server that others can use" % ALLOW_ENV, flush=True)
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    os.makedirs(data_dir, exist_ok=True)
    lock = lock_data_dir(data_dir)
    api_keys = load_api_keys(api_key_file)
    if queue_url and not (storage_spec or "").startswith("s3://"):
        raise ValueError("farm mode (--queue) needs --storage s3://bucket/prefix: the workers upload the results")
    storage = open_storage(storage_spec, data_dir, url_expiry_s)
    try:
        storage.check()
    except Gen3DError as exc:       # storage may come back; jobs will report STORAGE until it does
        print("[gen3d] warning: %s" % exc.message, flush=True)
    store = job_store.JobStore(os.path.join(data_dir, "jobs.sqlite3"))
    work_root = os.path.join(data_dir, "work")
    if queue_url:
        from .farm.scheduler import FarmScheduler
        scheduler = FarmScheduler(store, storage, queue_url, data_dir, job_timeout_s, quotas)
    else:
        pipelines = {}
        for name in devices:                 # one child process per device: see device_process.py
            device = str(resolve_device(name))
            pipelines.setdefault(device, DeviceProcess(device))
        scheduler = Scheduler(store, storage, work_root, pipelines, job_timeout_s, quotas)
    janitor = Janitor(store, storage, retention_s)
    hidden = (work_root, getattr(storage, "root", None), data_dir)
    return ServerState(api_keys, store, storage, scheduler, janitor, public_url, hidden, lock)
