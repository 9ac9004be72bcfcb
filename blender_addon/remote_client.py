"""REMOTE backend: jobs go to a RunPod serverless endpoint (https://api.runpod.ai/v2/<endpoint>) or to
our self-hosted server (`python -m backend_remote serve`); both speak RunPod's protocol.

One job: POST /run {"input": request} (the image travels as base64 `image`), then GET /status/{id}
until it ends, passing each IN_PROGRESS output (a progress event) on to the panel. Polling starts
every `poll_interval` seconds and slows down, up to `max_poll_interval`, while nothing changes.
A COMPLETED job's output is the manifest with a URL per file: every file is downloaded with a
timeout, checked against the manifest's size and sha256, and the finished folder (meta.json written
last) is renamed into place. Cancel sends POST /cancel/{id}.

Network errors and 429/5xx answers are retried with exponential backoff (with jitter) for up to
`network_patience` seconds, then the job fails with a message naming the endpoint and what went
wrong, and the remote job is cancelled (it would keep running, and billing, unwatched). A
Retry-After header is honoured, for as long as it says (up to the job's own time limit). POST /run
is resent only when the request surely never left this machine, or after a 429 (refused, not
queued): never after a 5xx, which may have queued it, so a job is never submitted twice.

The staging folder (<parent>/.<name>.remote, one per output folder whatever the add-on's job id)
holds .gen3d-remote.json with the endpoint, the remote job id and a digest of the request: running
the same request into the same folder again, even after a Blender restart, resumes that remote job
instead of submitting a new one, and files already downloaded with the right sha256 are never
downloaded again. The finished folder keeps that record, so a later run reuses the result only for
the same request and endpoint; any other request (another engine, other settings) runs anew and
replaces the earlier result.

Runs on the add-on's job thread: stdlib and requests only, never bpy. Each blocking HTTP call runs
on a helper thread so Cancel and close() take effect within a fraction of a second.
"""

import ast
import base64
import email.utils
import hashlib
import json
import os
import random
import shutil
import threading
import time
from urllib.parse import urlsplit

import requests

from .client_base import JobClient, cancelled
from .contract import Gen3DError, errors, manifest as manifests, progress, request as contract_request

RUNPOD_API = "https://api.runpod.ai/v2/"
PREFERENCES_HINT = "Edit > Preferences > Add-ons > Gen3D"
STATE_FILE = ".gen3d-remote.json"
MAX_FILE_BYTES = 2 * 1024 ** 3
CHUNK_BYTES = 256 * 1024
STOP_CHECK_S = 0.1
CANCEL_REQUEST_S = 1.5          # how long Cancel waits for POST /cancel before reporting the job cancelled
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER_S = 600.0       # a longer Retry-After is waited in steps of this (within the job's time limit)
FAILED_STATUSES = ("FAILED", "TIMED_OUT", "CANCELLED")


class _Stopped(Exception):
    """Cancel was pressed or the client was closed while we waited."""


def endpoint_base(url):
    """The base URL that /run, /status and /cancel hang off. A bare RunPod endpoint id is accepted."""
    url = (url or "").strip().rstrip("/")
    if url and "://" not in url and "/" not in url and "." not in url:
        return RUNPOD_API + url
    return url


def _file_base64(path, what):
    try:
        with open(path, "rb") as handle:
            return base64.b64encode(handle.read()).decode("ascii")
    except OSError as exc:
        raise Gen3DError(errors.INVALID_INPUT, "Cannot read the %s %s (%s)." % (what, path, exc.strerror or exc),
                         stage="queued", retryable=False)


def wire_request(request):
    """The request as an endpoint accepts it: the local image files (the main image and any views)
    become base64 `image`."""
    data = {key: value for key, value in request.items() if value is not None and key not in ("image_path", "mesh_path")}
    if request.get("mesh_path"):      # "Texture selected object": the mesh travels inline too
        data["mesh"] = _file_base64(request["mesh_path"], "mesh")
    path = request.get("image_path")
    if path:
        data["image"] = _base64_file(path)
    if request.get("views"):
        data["views"] = {name: ({"image": _base64_file(source["image_path"])}
                                if isinstance(source, dict) and source.get("image_path") else source)
                         for name, source in request["views"].items()}
    return data


def _base64_file(path):
    try:
        size = os.path.getsize(path)
        if size > contract_request.MAX_IMAGE_BYTES:
            raise Gen3DError(errors.IMAGE_TOO_LARGE, "%s is %.0f MB; remote endpoints accept images up to %d MB. "
                             "Scale it down and try again." % (path, size / 2 ** 20,
                                                               contract_request.MAX_IMAGE_BYTES // 2 ** 20),
                             stage="queued", retryable=False)
        with open(path, "rb") as handle:
            return base64.b64encode(handle.read()).decode("ascii")
    except OSError as exc:
        raise Gen3DError(errors.INVALID_INPUT, "Cannot read the image %s (%s)." % (path, exc.strerror or exc),
                         stage="queued", retryable=False)


def remote_error(value, stage=None):
    """A Gen3DError from a FAILED job's `error`: our contract's dict, or whatever text RunPod relays
    (a JSON string, a Python repr of a dict, or the SDK's own crash report)."""
    if isinstance(value, str):
        text = value.strip()
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(parsed, (dict, str)) and parsed != value:
                return remote_error(parsed, stage)
        return Gen3DError(errors.INTERNAL, "The remote job failed: %s" % (text or "no reason given"), stage=stage,
                          retryable=True)
    if isinstance(value, dict):
        body = value.get("error", value)
        if isinstance(body, dict) and body.get("code") in errors.ERROR_CODES:
            return Gen3DError.from_dict(body)
        if isinstance(body, dict) and "error_message" in body:      # runpod's report of a handler crash
            return Gen3DError(errors.INTERNAL, "The remote worker crashed: %s. Check the endpoint's logs."
                              % body["error_message"], stage=stage, retryable=True)
        if isinstance(body, (str, dict)) and body is not value:
            return remote_error(body, stage)
    return Gen3DError(errors.INTERNAL, "The remote job failed: %s" % (value,), stage=stage, retryable=True)


def _never_sent(exc):
    """True when a requests error happened before the request reached the server (safe to resend)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    names = {cls.__name__ for cls in type(reason).__mro__}
    return bool(names & {"NewConnectionError", "NameResolutionError", "ConnectTimeoutError"})


def _describe(exc):
    if isinstance(exc, requests.exceptions.Timeout):
        return "no answer in time"
    reason = exc.args[0] if isinstance(exc, requests.exceptions.ConnectionError) and exc.args else exc
    reason = getattr(reason, "reason", reason)
    text = str(reason)
    for hint, words in (("Connection refused", "connection refused"), ("Name or service not known", "unknown host"),
                        ("nodename nor servname", "unknown host"), ("NameResolution", "unknown host"),
                        ("timed out", "no answer in time")):
        if hint in text:
            return words
    return text or type(exc).__name__


def retry_after_s(response):
    """Seconds a 429/503's Retry-After asks for (a number or an HTTP date), or None."""
    value = (response.headers.get("Retry-After") or "").strip() if response is not None else ""
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when is not None else None


def _jittered(seconds):
    """Spread retries of many clients so they do not all come back at the same instant."""
    return seconds * random.uniform(1.0, 1.25)


def _safe_file_name(name):
    return (isinstance(name, str) and name == os.path.basename(name) and "\\" not in name
            and name not in ("", ".", "..") and not name.startswith(".") and name != manifests.META_FILE)


def _file_ok(path, info):
    return (os.path.isfile(path) and os.path.getsize(path) == info.get("bytes")
            and manifests.sha256_file(path) == info.get("sha256"))


def _without_urls(manifest):
    clean = json.loads(json.dumps(manifest))
    clean.pop("meta_url", None)
    for info in clean.get("files", {}).values():
        info.pop("url", None)
    return clean


class RemoteClient(JobClient):
    def __init__(self, settings, poll_interval=0.25, max_poll_interval=2.0, timeout=30.0, job_timeout=6 * 3600.0,
                 network_patience=60.0, download_attempts=3):
        """`timeout`: seconds to connect and between bytes of each HTTP call and download;
        `job_timeout`: the longest a job may take from submit to downloaded files."""
        super().__init__(settings)
        self.base_url = endpoint_base(getattr(settings, "remote_url", ""))
        self.api_key = (getattr(settings, "api_key", "") or "").strip()
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(float(max_poll_interval), self.poll_interval)
        self.timeout = (min(10.0, float(timeout)), float(timeout))
        self.job_timeout = float(job_timeout)
        self.network_patience = float(network_patience)
        self.download_attempts = int(download_attempts)
        self._closed = threading.Event()
        self._last_status = ""

    # JobClient --------------------------------------------------------------------------------
    def check(self):
        if not getattr(self.settings, "online_access", True):
            raise Gen3DError(errors.INVALID_INPUT, "Blender's online access is turned off, and the remote backend "
                             "needs the network. Allow it in Edit > Preferences > System > Network, or use the Local "
                             "backend.", stage="queued", retryable=False)
        if not self.base_url:
            raise Gen3DError(errors.INVALID_INPUT, "No remote endpoint is set. Set the endpoint URL (e.g. "
                             "https://api.runpod.ai/v2/<endpoint-id> or http://host:8000) in %s." % PREFERENCES_HINT,
                             stage="queued", retryable=False)
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Gen3DError(errors.INVALID_INPUT, "The endpoint URL %r is not an http(s) URL. Fix it in %s."
                             % (self.base_url, PREFERENCES_HINT), stage="queued", retryable=False)
        if not self.api_key:
            raise Gen3DError(errors.UNAUTHORIZED, "No API key is set for the remote endpoint. Set it in %s."
                             % PREFERENCES_HINT, stage="queued", retryable=False)

    def status(self):
        return self._last_status

    def close(self):
        self._closed.set()

    def run(self, job_id, request, job_dir, emit, cancel_event):
        self.check()
        job = _RemoteJob(self, job_id, request, job_dir, emit, cancel_event)
        try:
            job.run()
        except _Stopped:
            job.stop_remote()
            job.discard_staging()
            raise cancelled(job.stage)
        except Gen3DError as exc:
            if job.remote_live:           # we stop watching it: do not leave it running (and billing)
                job.stop_remote()
                job.discard_staging()
            elif not exc.retryable:
                job.discard_staging()     # a retry could not use what is there
            raise
        except OSError as exc:            # disk full, folder not writable...
            raise Gen3DError(errors.STORAGE, "Cannot write the result next to %s (%s). Check that the output folder "
                             "is writable and has free space." % (job_dir, exc.strerror or exc), stage=job.stage,
                             retryable=True)
        finally:
            job.session.close()
            job.downloads.close()


class _RemoteJob:
    """The state of one run(): its session, remote id, staging folder and progress."""

    def __init__(self, client, job_id, request, job_dir, emit, cancel_event):
        self.client = client
        self.job_id = job_id
        self.request = request
        self.job_dir = os.path.abspath(job_dir)
        # Named after the output folder only, so a run after a Blender restart (a new job id) finds it.
        self.staging = os.path.join(os.path.dirname(self.job_dir), ".%s.remote" % os.path.basename(self.job_dir))
        self.emit = emit
        self.cancel_event = cancel_event
        self.session = requests.Session()
        self.session.headers.update({"Authorization": "Bearer %s" % client.api_key, "User-Agent": "Gen3D-Blender"})
        # Result links carry their own signature: no Authorization header (S3 refuses two kinds of auth).
        self.downloads = requests.Session()
        self.downloads.headers.update({"User-Agent": "Gen3D-Blender"})
        self.remote_id = None
        self.remote_live = False          # submitted and not known to have ended
        self.stage = "queued"
        self.progress = 0.0
        self.message = ""
        self.deadline = time.monotonic() + client.job_timeout

    # flow -------------------------------------------------------------------------------------
    def run(self):
        if self._recorded_id(self.job_dir) is not None and self._complete(self.job_dir):
            return                                    # this request's result is already here
        self._check_output_folder()
        os.makedirs(self.staging, exist_ok=True)
        self.remote_id = self._recorded_id(self.staging)
        if self.remote_id is not None and not self._still_usable(self.remote_id):
            self.remote_id = None                     # that remote job is gone or failed: submit again
        if self.remote_id is None:
            self._report("queued", 0.0, "sending the image to %s" % self._host())
            self.remote_id = self._submit()
        self.remote_live = True
        manifest = self._wait()
        self._download_all(manifest)
        manifests.write_manifest(self.staging, _without_urls(manifest))
        self._publish()
        self._report("upload", 1.0, "downloaded")

    def _check_output_folder(self):
        """Before any GPU time is spent: the output folder is new, empty or an earlier Gen3D result."""
        if os.path.exists(self.job_dir) and not os.path.isdir(self.job_dir):
            raise Gen3DError(errors.INVALID_INPUT, "The output path %s is a file, not a folder." % self.job_dir,
                             stage="queued", retryable=False)
        if (os.path.isdir(self.job_dir) and os.listdir(self.job_dir)
                and not os.path.isfile(os.path.join(self.job_dir, manifests.META_FILE))):
            raise Gen3DError(errors.INVALID_INPUT, "The output folder %s already holds other files; choose an empty "
                             "or new folder." % self.job_dir, stage="queued", retryable=False)

    def _publish(self):
        """Move the finished staging folder into place; an earlier result there is replaced (renamed
        away first, deleted once the new one is in place)."""
        old = self.staging + ".old"
        try:
            shutil.rmtree(old, ignore_errors=True)
            if os.path.isdir(self.job_dir):
                os.rename(self.job_dir, old)
            os.rename(self.staging, self.job_dir)
        except OSError as exc:
            if os.path.isdir(old) and not os.path.exists(self.job_dir):
                os.rename(old, self.job_dir)          # put the earlier result back
            raise Gen3DError(errors.STORAGE, "Cannot move the downloaded result into %s (%s). Check the output "
                             "folder." % (self.job_dir, exc.strerror or exc), stage="upload", retryable=True)
        shutil.rmtree(old, ignore_errors=True)

    def _complete(self, folder):
        try:
            manifest = manifests.read_manifest(folder)
        except Gen3DError:
            return False
        return not manifests.verify_files(folder, manifest)

    def _host(self):
        return urlsplit(self.client.base_url).netloc or self.client.base_url

    def _state_path(self):
        return os.path.join(self.staging, STATE_FILE)

    def _request_digest(self):
        return hashlib.sha256(json.dumps(self.request, sort_keys=True).encode("utf-8")).hexdigest()

    def _recorded_id(self, folder):
        """The remote job recorded in `folder` (staging or a finished result), if it was for this
        same request and endpoint; None otherwise."""
        try:
            with open(os.path.join(folder, STATE_FILE), "r", encoding="utf-8") as handle:
                state = json.load(handle)
        except (OSError, ValueError):
            return None
        if (isinstance(state, dict) and state.get("endpoint") == self.client.base_url
                and state.get("request") == self._request_digest()):
            return state.get("remote_id") or None
        return None

    def _still_usable(self, remote_id):
        response = self._call("GET", "/status/%s" % remote_id)
        try:
            state = response.json().get("status") if response.status_code == 200 else None
        except (ValueError, AttributeError):
            state = None
        return state not in (None,) + FAILED_STATUSES

    def _submit(self):
        response = self._call("POST", "/run", {"input": wire_request(self.request)}, resend_safe=False)
        if response.status_code >= 500:
            raise Gen3DError(errors.INTERNAL, "The endpoint %s answered HTTP %d while taking the job; it was not "
                             "sent again, since it may have been queued there anyway. Generate again in a moment."
                             % (self._host(), response.status_code), stage="queued", retryable=True)
        body = self._json(response, "submitting the job")
        remote_id = body.get("id")
        if not isinstance(remote_id, str) or not remote_id:
            raise Gen3DError(errors.INTERNAL, "The endpoint accepted the job but returned no job id (%s). Is %s a "
                             "Gen3D endpoint?" % (str(body)[:200], self.client.base_url), stage="queued",
                             retryable=True)
        manifests.write_json_atomic(self._state_path(), {"endpoint": self.client.base_url, "remote_id": remote_id,
                                                         "request": self._request_digest()})
        if body.get("status") in FAILED_STATUSES:
            raise remote_error(body.get("error") or body.get("status"), "queued")
        return remote_id

    def _wait(self):
        """Poll /status until the job ends; returns the manifest of a COMPLETED job."""
        interval = self.client.poll_interval
        while True:
            if time.monotonic() > self.deadline:
                self.stop_remote()
                raise Gen3DError(errors.TIMEOUT, "The remote job did not finish within %.0f minutes; it was cancelled."
                                 " Try lower quality settings or a faster endpoint." % (self.client.job_timeout / 60),
                                 stage=self.stage, retryable=True)
            body = self._status()
            state = body.get("status")
            if state == "COMPLETED" or state in FAILED_STATUSES:
                self.remote_live = False
            if state == "COMPLETED":
                return self._checked_manifest(body.get("output"))
            if state in FAILED_STATUSES:
                raise self._failure(body)
            if self._show(state, body.get("output")):
                interval = self.client.poll_interval
            else:
                interval = min(interval * 1.5, self.client.max_poll_interval)
            self._sleep(interval)

    def _status(self):
        response = self._call("GET", "/status/%s" % self.remote_id)
        if response.status_code == 404:
            self.remote_live = False
            raise Gen3DError(errors.INTERNAL, "The endpoint no longer knows job %s (it may have expired or the server "
                             "lost it). Generate again." % self.remote_id, stage=self.stage, retryable=True)
        return self._json(response, "asking for the job's status")

    def _show(self, state, output):
        """Pass a queued/in-progress status on to the panel; True when it was news."""
        if state == "IN_PROGRESS" and isinstance(output, dict) and output.get("stage") in progress.STAGES:
            stage, value, message = output["stage"], output.get("progress", 0.0), output.get("message", "")
        elif state == "IN_PROGRESS":
            stage, value, message = "preprocess", self.progress, "running on the endpoint"
        else:
            stage, value, message = "queued", self.progress, "waiting for the endpoint (queued)"
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = self.progress
        news = (stage, max(self.progress, value), message) != (self.stage, self.progress, self.message)
        if news:
            self._report(stage, value, message)
        return news

    def _report(self, stage, value, message):
        self.stage = stage
        self.progress = max(self.progress, min(max(float(value), 0.0), 1.0))
        self.message = message
        self.client._last_status = "%s: %s" % (self._host(), message)
        self.emit(progress.progress_event(self.job_id, stage, self.progress, message))

    def _failure(self, body):
        state = body.get("status")
        if state == "CANCELLED":
            return Gen3DError(errors.CANCELLED, "The job was cancelled on the endpoint.", stage=self.stage,
                              retryable=False)
        if state == "TIMED_OUT" and not body.get("error"):
            return Gen3DError(errors.TIMEOUT, "The endpoint stopped the job because it ran past its time limit. Use "
                              "lower quality settings or raise the endpoint's execution timeout.", stage=self.stage,
                              retryable=False)
        return remote_error(body.get("error") or "no reason given", self.stage)

    def _checked_manifest(self, output):
        if isinstance(output, str):
            try:
                output = json.loads(output)
            except ValueError:
                pass
        try:
            manifest = manifests.check_manifest(output, "The endpoint's result")
        except Gen3DError as exc:
            raise Gen3DError(errors.INTERNAL, "%s Is %s running Gen3D?" % (exc.message, self.client.base_url),
                             stage="upload", retryable=False)
        for name in manifest["files"]:
            if not _safe_file_name(name):
                raise Gen3DError(errors.INTERNAL, "The endpoint's result names a file %r, which is not a plain file "
                                 "name; refusing to write it." % (name,), stage="upload", retryable=False)
        return manifest

    # downloads --------------------------------------------------------------------------------
    def _download_all(self, manifest):
        names = list(manifest["files"])
        for index, name in enumerate(names, 1):
            info = manifest["files"][name]
            path = os.path.join(self.staging, name)
            if _file_ok(path, info):
                continue                              # downloaded by an earlier try: never again
            self._report("upload", 1.0, "downloading %s (%d of %d)" % (name, index, len(names)))
            manifest = self._download(manifest, name, path)

    def _download(self, manifest, name, path):
        """Download one file, verifying size and sha256. Returns the manifest (refreshed when its
        URLs had expired). Network errors are retried for `network_patience` seconds, other
        failures (a damaged transfer, an HTTP error) `download_attempts` times."""
        refreshed = False
        attempts = 0
        backoff = 0.5
        started = time.monotonic()
        while True:
            url = manifest["files"][name].get("url")
            if not url:
                raise Gen3DError(errors.INTERNAL, "The endpoint's result has no download URL for %s." % name,
                                 stage="upload", retryable=False)
            try:
                outcome = self._blocking(lambda abort: self._fetch(url, path, manifest["files"][name], abort))
            except requests.RequestException as exc:
                outcome = "network error: %s" % _describe(exc)
            if outcome == "ok":
                return manifest
            if outcome == "expired":
                if refreshed:
                    raise Gen3DError(errors.STORAGE, "The download link for %s was refused (it may have expired). "
                                     "Generate again." % name, stage="upload", retryable=True)
                refreshed = True                  # our server signs fresh links on every /status
                manifest = self._checked_manifest(self._status().get("output"))
                continue
            attempts += 1
            patient = (outcome.startswith("network error")
                       and time.monotonic() - started + backoff < self.client.network_patience)
            if attempts >= self.client.download_attempts and not patient:
                raise Gen3DError(errors.STORAGE, "Could not download %s from the endpoint's storage (%s). Check the "
                                 "network and generate again; files already downloaded are kept."
                                 % (name, outcome), stage="upload", retryable=True)
            self._sleep(backoff)
            backoff = min(backoff * 2, 8.0)

    def _fetch(self, url, path, info, abort):
        """One download attempt into `path` (via a .part file). Returns "ok", "expired" or a reason."""
        expected = int(info.get("bytes", -1))
        if not 0 <= expected <= MAX_FILE_BYTES:
            return "the manifest gives it an impossible size (%r bytes)" % info.get("bytes")
        with self.downloads.get(url, stream=True, timeout=self.client.timeout) as response:
            if response.status_code in (401, 403):
                return "expired"
            if response.status_code != 200:
                return "HTTP %d" % response.status_code
            digest = hashlib.sha256()
            size = 0
            part = path + ".part"
            with open(part, "wb") as handle:
                for chunk in response.iter_content(CHUNK_BYTES):
                    if abort.is_set():
                        return "stopped"
                    size += len(chunk)
                    if size > expected:
                        return "it is larger than the manifest says (%d bytes)" % expected
                    digest.update(chunk)
                    handle.write(chunk)
        if size != expected or digest.hexdigest() != info.get("sha256"):
            os.remove(part)
            return "its size or sha256 does not match the manifest (damaged in transfer)"
        os.replace(part, path)
        return "ok"

    # HTTP -------------------------------------------------------------------------------------
    def _call(self, method, path, body=None, resend_safe=True):
        """One API call with retries on network errors and 429/5xx for up to `network_patience`
        (longer when a Retry-After asks for it). With `resend_safe` False (POST /run) only a request
        that surely never reached the server, or one refused with 429, is sent again."""
        url = self.client.base_url + path
        give_up = time.monotonic() + self.client.network_patience
        backoff = 0.5
        while True:
            try:
                response = self._blocking(lambda _abort: self.session.request(
                    method, url, json=body, timeout=self.client.timeout))
                problem = None if response.status_code not in RETRY_STATUSES else "HTTP %d" % response.status_code
                if problem and not resend_safe and response.status_code != 429:
                    return response           # it may have been queued: never resent, reported by _json
            except requests.RequestException as exc:
                if not resend_safe and not _never_sent(exc):
                    raise Gen3DError(errors.INTERNAL, "The connection to %s broke while sending the job (%s); it "
                                     "may or may not have been queued there. Check the endpoint and generate again."
                                     % (self._host(), _describe(exc)), stage=self.stage, retryable=True)
                response, problem = None, _describe(exc)
            if problem is None:
                return response
            wait = _jittered(backoff)
            asked = retry_after_s(response)
            if asked is not None:             # the endpoint is up and says when: believe it
                wait = min(asked, MAX_RETRY_AFTER_S) + random.uniform(0.0, min(1.0, 0.1 * max(asked, 1.0)))
                give_up = max(give_up, time.monotonic() + wait + 1.0)
            if time.monotonic() + wait > min(give_up, self.deadline):
                raise Gen3DError(errors.INTERNAL, "Cannot reach the remote endpoint %s (%s, still failing after "
                                 "%.0f s). Check the endpoint URL in %s and your network connection, then generate "
                                 "again." % (self.client.base_url, problem, self.client.network_patience,
                                             PREFERENCES_HINT), stage=self.stage, retryable=True)
            if asked is not None:             # busy, not broken: say when the next try is
                message = "%s is busy (%s); retrying in %.0f s" % (self._host(), problem, asked)
            else:
                message = "Cannot reach %s (%s); retrying, giving up in %.0f s" % (
                    self._host(), problem, max(0.0, give_up - time.monotonic()))
            self._report(self.stage, self.progress, message)
            self._sleep(wait)
            backoff = min(backoff * 2, 8.0)

    def _json(self, response, doing):
        if response.status_code in (401, 403):
            raise Gen3DError(errors.UNAUTHORIZED, "The endpoint refused the API key (HTTP %d) while %s. Check the "
                             "API key in %s." % (response.status_code, doing, PREFERENCES_HINT), stage=self.stage,
                             retryable=False)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 404 and not (isinstance(body, dict) and "error" in body):
            raise Gen3DError(errors.INVALID_INPUT, "There is no Gen3D endpoint at %s (HTTP 404 while %s). Check the "
                             "endpoint URL in %s." % (self.client.base_url, doing, PREFERENCES_HINT),
                             stage=self.stage, retryable=False)
        if response.status_code >= 400:
            if isinstance(body, dict) and "error" in body:
                raise remote_error(body, self.stage)
            raise Gen3DError(errors.INTERNAL, "The endpoint answered HTTP %d while %s: %s" % (
                response.status_code, doing, response.text[:200]), stage=self.stage, retryable=True)
        if not isinstance(body, dict):
            raise Gen3DError(errors.INTERNAL, "The endpoint's answer while %s is not a JSON object; is %s a Gen3D "
                             "endpoint?" % (doing, self.client.base_url), stage=self.stage, retryable=False)
        return body

    def _stop_requested(self):
        return self.cancel_event.is_set() or self.client._closed.is_set()

    def _sleep(self, seconds):
        end = time.monotonic() + seconds
        while not self._stop_requested():
            left = end - time.monotonic()
            if left <= 0:
                return
            self.cancel_event.wait(min(left, STOP_CHECK_S))
        raise _Stopped()

    def _blocking(self, work):
        """Run `work(abort_event)` on a helper thread, so Cancel is noticed while it blocks."""
        if self._stop_requested():
            raise _Stopped()
        result = {}
        done = threading.Event()
        abort = threading.Event()

        def target():
            try:
                result["value"] = work(abort)
            except BaseException as exc:   # handed to the job thread below
                result["error"] = exc
            finally:
                done.set()

        threading.Thread(target=target, name="gen3d-remote-http", daemon=True).start()
        while not done.wait(STOP_CHECK_S):
            if self._stop_requested():
                abort.set()
                raise _Stopped()
        if "error" in result:
            raise result["error"]
        return result["value"]

    # cancel and clean-up ----------------------------------------------------------------------
    def stop_remote(self):
        """POST /cancel/{id}, waiting at most CANCEL_REQUEST_S for it (the job must end within 2 s)."""
        if not self.remote_id:
            return
        url = "%s/cancel/%s" % (self.client.base_url, self.remote_id)
        headers = {"Authorization": "Bearer %s" % self.client.api_key}
        sender = threading.Thread(target=_post_quietly, args=(url, headers), name="gen3d-remote-cancel", daemon=True)
        sender.start()
        sender.join(CANCEL_REQUEST_S)

    def discard_staging(self):
        shutil.rmtree(self.staging, ignore_errors=True)


def _post_quietly(url, headers):
    try:
        requests.post(url, headers=headers, timeout=(2.0, 5.0))
    except requests.RequestException:
        pass                            # the endpoint's own timeout ends the job anyway
