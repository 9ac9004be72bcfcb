"""The interface every Gen3D backend client implements (local worker, remote endpoint).

The add-on's job manager (jobs.py) owns one client per backend configuration and calls it from its
job thread, one job at a time. A client never touches bpy: it only talks to its backend and writes
files, and reports progress through `emit`, which is safe to call from any thread.

    class JobClient:
        def __init__(self, settings)      settings.BackendSettings, already resolved; cheap (no network,
                                          no process start: those happen in run)
        def check(self)                   main thread, on Generate, before anything is queued
        def run(self, job_id, request, job_dir, emit, cancel_event)      job thread, blocks until done
        def close(self)                   main thread; stops whatever run() is waiting on
        def status(self)                  main thread; one line for the UI, "" when there is nothing to say

settings (BackendSettings, settings.py)
    remote_url, api_key: what the user typed in the preferences (stripped). output_dir: the folder
    job folders go to. backend, python, backend_dir, device, keep_models_loaded: local only.
    Blender's "Allow Online Access" switch is enforced before a REMOTE client is made
    (clients.check_policy), so a client need not read bpy.app.online_access itself.

check()
    Fast validation of the settings only: no network, no process start, well under 10 ms. Raise
    Gen3DError (INVALID_INPUT, UNAUTHORIZED or ENGINE_UNAVAILABLE) whose message says what to set and
    where ("Set the endpoint URL in Edit > Preferences > Add-ons > Gen3D").

run(job_id, request, job_dir, emit, cancel_event)
    job_id        str, [0-9a-f]{16}, unique; use it as the backend's job id where one can be chosen.
    request       dict of wire fields (DESIGN.md "The job contract"), already validated with
                  shared.request.parse_request(allow_path=True). The image is always `image_path`, an
                  absolute path to a readable PNG, JPEG or WebP on this machine; a remote client sends
                  it as base64 `image` instead (endpoints refuse image_path).
    job_dir       absolute path of the job folder; its parent exists. It does not exist yet, or (a batch
                  run again into the same folder) holds an earlier result, which the new one replaces
                  only once it is complete. When run() returns, job_dir holds the complete result of
                  DESIGN.md "Result": mesh.glb, the five map PNGs, input.png and meta.json, with
                  shared.manifest.verify_files(job_dir, manifest) == []. Assemble it in a staging
                  folder next to it and rename it into place so that a failure never leaves something
                  that looks like a result.
    emit          emit(event) with event = shared.progress.progress_event(job_id, stage, progress,
                  message): stage one of shared.progress.STAGES, progress overall 0..1. Never blocks.
                  The manager ignores progress that goes back, so a client may re-send the last value.
    cancel_event  threading.Event, set when the user presses Cancel, the add-on is disabled or
                  Blender exits. Look at it at least every 0.25 s; once set, stop the job on the backend
                  (remote: POST /cancel/{id}) and raise Gen3DError(CANCELLED) within 2 seconds.
    Returns None on success. Raises Gen3DError on failure: its code, message and stage reach the user
    as they are (code CANCELLED reports the job as cancelled, not failed). Any other exception is
    reported as INTERNAL with its text, so clients should translate what they can (connection refused,
    HTTP 401, timeouts) into Gen3DError with a message that says what to do next.

close()
    Release what the client holds (worker process, HTTP session). Called on the main thread when the
    add-on is disabled, Blender exits or the backend settings change, possibly while run() is still
    running on the job thread: run() must then return (raising) within 2 seconds. Idempotent.

detach()
    Called instead of close() when Blender exits: the local worker completes the job it holds and
    then exits, so its result is in the job folder when the file is opened again. Default: close().

status()
    A short line for the panel, e.g. "worker ready (cpu, pid 4242)". Optional.

The remote client lives in remote_client.py as `RemoteClient(JobClient)`; clients.py imports it only
when the REMOTE backend is chosen, so it may import `requests` at module level (Blender bundles it;
where a Blender lacks it, choosing Remote shows a clear message instead of breaking the add-on).
"""

from .contract import Gen3DError, errors


class JobClient:
    """Base class: see the module docstring for the exact contract."""

    def __init__(self, settings):
        self.settings = settings

    def check(self):
        pass

    def run(self, job_id, request, job_dir, emit, cancel_event):
        raise NotImplementedError

    def close(self):
        pass

    def detach(self):
        """Blender is closing: let the backend finish the job it holds if it can; default close()."""
        self.close()

    def status(self):
        return ""


def cancelled(stage=None):
    """The error a client raises once it has stopped a cancelled job."""
    return Gen3DError(errors.CANCELLED, "The job was cancelled.", stage=stage, retryable=False)
