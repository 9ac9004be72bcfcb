"""The add-on's job code without Blender: the job queue, settings, presets, and the local client
against the real worker process (cancel latency, configuration errors)."""

import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "blender_scripts"))
import harness  # noqa: E402

from blender_addon import jobs, quality, settings as addon_settings  # noqa: E402
from blender_addon.client_base import JobClient, cancelled  # noqa: E402
from blender_addon.contract import Gen3DError, errors, progress, request as contract_request  # noqa: E402
from blender_addon.local_client import LocalClient  # noqa: E402

IMAGE = os.path.join(harness.DATA, "sphere", "input.png")


class ScriptedClient(JobClient):
    """Plays back progress values, then returns or raises what it was given (for the queue's logic)."""

    def __init__(self, settings, steps=(0.1, 0.5, 0.3, 0.9), outcome=None, hold=None):
        super().__init__(settings)
        self.steps, self.outcome, self.hold, self.order = steps, outcome, hold, []

    def run(self, job_id, request, job_dir, emit, cancel_event):
        self.order.append(job_id)
        for value in self.steps:
            emit(progress.progress_event(job_id, "shape", value, "step"))
        if self.hold is not None:
            while not cancel_event.wait(0.01):
                pass
            raise cancelled("shape")
        if self.outcome is not None:
            raise self.outcome
        os.makedirs(job_dir)


def manager_with(client):
    return jobs.JobManager(client_factory=lambda _settings: client)


def local_settings(tmp_path, **changes):
    values = dict(python=sys.executable, backend_dir=harness.BACKEND_DIR, device="cpu",
                  output_dir=str(tmp_path / "out"))
    values.update(changes)
    return addon_settings.BackendSettings(**values).resolve()


def test_jobs_run_in_order_with_progress_that_never_goes_back(tmp_path):
    client = ScriptedClient(None)
    manager = manager_with(client)
    seen = []
    manager.on_change.append(lambda job: seen.append((job.job_id, job.progress)))
    first = manager.submit("a", IMAGE, {}, local_settings(tmp_path))
    second = manager.submit("b", IMAGE, {}, local_settings(tmp_path))
    assert manager.wait(timeout=10)
    assert client.order == [first.job_id, second.job_id]
    assert first.status == second.status == jobs.COMPLETED and first.progress == 1.0
    for job_id in (first.job_id, second.job_id):
        values = [value for seen_id, value in seen if seen_id == job_id]
        assert values == sorted(values)
    assert os.path.basename(first.job_dir).startswith("a-")
    manager.shutdown()


def test_backend_errors_pass_through_and_client_bugs_become_internal(tmp_path):
    settings = local_settings(tmp_path)
    no_object = Gen3DError(errors.EMPTY_FOREGROUND, "No object.", "preprocess")
    rejected = manager_with(ScriptedClient(None, outcome=no_object))
    job = rejected.submit("a", IMAGE, {}, settings)
    rejected.wait(timeout=10)
    assert job.status == jobs.FAILED and job.error["code"] == errors.EMPTY_FOREGROUND and job.message == "No object."
    broken = manager_with(ScriptedClient(None, outcome=KeyError("oops")))
    job = broken.submit("a", IMAGE, {}, settings)
    broken.wait(timeout=10)
    assert job.status == jobs.FAILED and job.error["code"] == errors.INTERNAL and "KeyError" in job.message
    broken.submit("b", IMAGE, {}, settings)       # the queue keeps working after a client bug
    assert broken.wait(timeout=10)
    rejected.shutdown()
    broken.shutdown()


def test_cancel_running_and_queued_jobs(tmp_path):
    manager = manager_with(ScriptedClient(None, hold=True))
    running = manager.submit("a", IMAGE, {}, local_settings(tmp_path))
    queued = manager.submit("b", IMAGE, {}, local_settings(tmp_path))
    deadline = time.monotonic() + 5
    while running.status != jobs.RUNNING and time.monotonic() < deadline:
        manager.pump()
    assert manager.cancel(queued.job_id) and queued.status == jobs.CANCELLED    # on the spot
    assert manager.cancel(running.job_id) and running.cancelling
    assert manager.wait(timeout=5)
    assert running.status == jobs.CANCELLED and not manager.cancel(running.job_id)
    manager.shutdown()


def test_submit_refuses_bad_requests_and_settings_before_queueing(tmp_path):
    manager = jobs.JobManager()
    with pytest.raises(Gen3DError) as bad_request:
        manager.submit("a", IMAGE, {"face_count": 10}, local_settings(tmp_path))
    assert bad_request.value.code == errors.INVALID_INPUT and "face_count" in bad_request.value.message
    with pytest.raises(Gen3DError) as no_python:
        manager.submit("a", IMAGE, {}, local_settings(tmp_path, python=str(tmp_path / "nope" / "python")))
    assert "does not exist" in no_python.value.message
    with pytest.raises(Gen3DError) as bad_dir:
        manager.submit("a", IMAGE, {}, local_settings(tmp_path, backend_dir=str(tmp_path)))
    assert "no backend_local package" in bad_dir.value.message
    offline = local_settings(tmp_path, backend="REMOTE", remote_url="https://api.runpod.ai/v2/x", api_key="k",
                             online_access=False)
    with pytest.raises(Gen3DError) as refused:
        manager.submit("a", IMAGE, {}, offline)
    assert "online access" in refused.value.message
    assert manager.jobs == {} and not manager.busy()
    manager.shutdown()


def test_settings_fall_back_to_environment_then_source_tree(tmp_path, monkeypatch):
    monkeypatch.delenv(addon_settings.ENV_PYTHON, raising=False)
    monkeypatch.delenv(addon_settings.ENV_BACKEND_DIR, raising=False)
    resolved = addon_settings.BackendSettings().resolve()
    assert resolved.backend_dir == harness.ROOT                  # the project the add-on was loaded from
    assert resolved.python == os.path.join(harness.ROOT, ".venv", "bin", "python")
    monkeypatch.setenv(addon_settings.ENV_PYTHON, "/opt/gen3d/bin/python")
    monkeypatch.setenv(addon_settings.ENV_BACKEND_DIR, str(tmp_path))
    resolved = addon_settings.BackendSettings().resolve()
    assert (resolved.python, resolved.backend_dir) == ("/opt/gen3d/bin/python", str(tmp_path))
    explicit = addon_settings.BackendSettings(python="/x/python", backend_dir="/y").resolve()
    assert (explicit.python, explicit.backend_dir) == ("/x/python", "/y")


def test_sidebar_ranges_and_presets_match_the_contract():
    contract = contract_request._NUMERIC
    for name, (default, low, high) in quality.NUMERIC.items():
        _kind, c_default, c_low, c_high = contract[name]
        # a null contract default (num_inference_steps: the engine's own) leaves the sidebar its own number
        assert (default if c_default is not None else None, low) == (c_default, c_low) and high <= c_high, name
    assert quality.DEFAULT_TEXTURE_SIZE == contract["texture_size"][1]
    assert set(quality.NUMERIC) | {"texture_size"} == set(contract)
    for name, fields in quality.PRESETS.items():
        contract_request.parse_request(dict(fields, image_path=IMAGE))
    assert quality.PRESETS["BALANCED"] == {key: contract[key][1] for key in quality.PRESETS["BALANCED"]}


def test_cancel_stops_the_job_in_the_real_worker_within_two_seconds(tmp_path):
    client = LocalClient(local_settings(tmp_path))
    events, outcome = [], {}
    cancel = threading.Event()
    job_dir = str(tmp_path / "out" / "job")
    os.makedirs(os.path.dirname(job_dir))
    request = dict(harness.SMALL_REQUEST, image_path=IMAGE)

    def run():
        try:
            client.run("0123456789abcdef", request, job_dir, events.append, cancel)
            outcome["result"] = "completed"
        except Gen3DError as exc:
            outcome["result"], outcome["error"] = exc.code, exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 180
    while not any(e["stage"] in ("shape", "texture") for e in events) and thread.is_alive():
        assert time.monotonic() < deadline, events
        time.sleep(0.02)
    worker = client.worker
    started = time.perf_counter()
    cancel.set()
    thread.join(10)
    seconds = time.perf_counter() - started
    try:
        assert outcome["result"] == errors.CANCELLED, outcome
        assert seconds < 2.0, seconds
        # Stopped means stopped: either the worker confirmed it, or it was killed (and restarts later).
        if worker.alive():
            assert worker.send({"op": "ping"})
        assert not os.path.exists(job_dir)
        assert not [name for name in os.listdir(os.path.dirname(job_dir)) if ".partial-" in name]
    finally:
        client.close()
    assert not worker.alive()


def test_engine_status_lists_every_engine_and_why_not():
    """The engine menu's availability line: built in the background from `backend_local engines --json`."""
    from blender_addon.engine_status import EngineStatus

    status = EngineStatus()
    settings = addon_settings.BackendSettings(python=harness.VENV_PYTHON, backend_dir=harness.ROOT)
    assert status.describe(settings, "builtin") == (None, "not checked yet")
    status.refresh(settings).join(timeout=120)
    assert not status.checking(settings) and status.checked(settings)
    assert status.describe(settings, "builtin") == (True, "builtin can run here")
    available, reason = status.describe(settings, "hunyuan3d-2mini")
    assert available is False and "weights not found" in reason and "Looked in" in reason

    broken = addon_settings.BackendSettings(python="/nonexistent/python", backend_dir=harness.ROOT)
    status.refresh(broken).join(timeout=30)
    available, reason = status.describe(broken, "builtin")
    assert available is None and "/nonexistent/python" in reason and "preferences" in reason

    # the engine menu says how each GPU size runs a Hunyuan engine, from the backend's planner
    memory = status.memory_lines(settings, "hunyuan3d-2.1")
    assert [line.split(":")[0] for line in memory] == ["24 GB", "16 GB", "12 GB"], memory
    assert "offload" in memory[-1] and "host RAM" in memory[1]
    assert status.memory_lines(settings, "builtin") == []

    # a worker's ready event carries the same rows and replaces what was known
    status.update(settings, [{"name": "builtin", "available": False, "reason": "CUDA was requested"}])
    assert status.describe(settings, "builtin") == (False, "CUDA was requested")


def test_blender_without_requests_gets_the_apt_hint(monkeypatch):
    from blender_addon import clients
    from blender_addon.contract import Gen3DError

    def missing(name):
        raise ModuleNotFoundError("No module named 'requests'", name="requests")

    monkeypatch.setattr(clients.importlib, "import_module", missing)
    with pytest.raises(Gen3DError) as info:
        clients._remote_client_class()
    assert info.value.code == "ENGINE_UNAVAILABLE"
    assert "sudo apt-get install python3-requests" in info.value.message


def test_remote_progress_says_at_once_that_the_endpoint_is_unreachable(tmp_path):
    import socket
    import threading
    from blender_addon.contract import Gen3DError
    from blender_addon.remote_client import RemoteClient
    with socket.socket() as probe:                      # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = addon_settings.BackendSettings(backend="REMOTE", remote_url="http://127.0.0.1:%d" % port, api_key="k",
                                              output_dir=str(tmp_path))
    client = RemoteClient(settings, network_patience=1.5)
    image = tmp_path / "in.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    seen, started = [], time.monotonic()
    with pytest.raises(Gen3DError) as info:
        client.run("0" * 16, {"image_path": str(image)}, str(tmp_path / "job"),
                   lambda event: seen.append((time.monotonic() - started, event["message"])), threading.Event())
    retrying = [(at, text) for at, text in seen if text.startswith("Cannot reach 127.0.0.1:%d" % port)]
    assert retrying and retrying[0][0] < 1.0, seen
    assert "connection refused" in retrying[0][1] and "retrying" in retrying[0][1]
    assert "Cannot reach the remote endpoint" in info.value.message


def test_chosen_source_reads_the_file_the_drop_or_the_loaded_image(monkeypatch):
    pytest.importorskip("bpy")
    from blender_addon import images
    from types import SimpleNamespace

    monkeypatch.setattr(images, "file_source", lambda path: ("file", path))
    monkeypatch.setattr(images, "loaded_image_source", lambda image, out: ("image", image, out))
    file_props = SimpleNamespace(source="FILE", filepath="//a.png", image="img")
    image_props = SimpleNamespace(source="IMAGE", filepath="//a.png", image="img")
    assert images.chosen_source(file_props, "/out") == ("file", "//a.png")
    assert images.chosen_source(image_props, "/out") == ("image", "img", "/out")
    assert images.chosen_source(image_props, "/out", "/drop.png") == ("file", "/drop.png")   # a drop wins


def test_start_failure_text_says_errors_plainly_and_bugs_with_their_traceback(capsys):
    pytest.importorskip("bpy")
    from blender_addon import session

    texts = []
    for exc in (Gen3DError(errors.INVALID_INPUT, "Choose an image first."), OSError("disk full"), ValueError("oops")):
        try:
            raise exc
        except Exception as caught:
            texts.append(session.start_failure_text(caught))
    assert texts == ["Gen3D: Choose an image first.", "Gen3D: disk full",
                     "Gen3D: unexpected error (ValueError: oops); see the system console."]
    assert capsys.readouterr().err.count("Traceback") == 1
