"""Cancel and --job-timeout stop a job wherever it is (issue 12, High): a device's jobs run in a
child process that is killed when a stop is not obeyed within the grace time; a slow-drip image_url
ends at once on cancel and at the job timeout on a real server."""

import os
import threading
import time

import pytest

from backend_remote import job_store
from backend_remote.device_process import DeviceProcess
from shared.errors import CANCELLED, INTERNAL, Gen3DError
from shared.manifest import describe_files
from shared.progress import progress_event

from test_remote_jobs import make_scheduler, wait_status
from test_remote_support import LOOPBACK_ENV, ServerProcess, sphere_request, wait_for

pytest_plugins = ["test_remote_support"]

STUCK, COOPERATIVE, CRASH = 1, 2, 3     # the request's seed picks what the stand-in pipeline does


def _mode(request):
    return request["seed"] if isinstance(request, dict) else request.seed


class ChildPipeline:
    """Runs in the device process: a quick job, one stuck in a 'native' call that never checks
    cancel, one that checks cancel, or one whose process dies."""

    def run(self, request, out_dir, job_id=None, on_progress=None, cancel=None):
        on_progress(progress_event(job_id, "shape", 0.2, "working in %d" % os.getpid()))
        mode = _mode(request)
        if mode == STUCK:
            time.sleep(3600)
        elif mode == COOPERATIVE:
            while not cancel.is_set():
                time.sleep(0.01)
            raise Gen3DError(CANCELLED, "The job was cancelled.", stage="shape", retryable=False)
        elif mode == CRASH:
            os._exit(9)
        os.makedirs(out_dir)
        with open(os.path.join(out_dir, "mesh.glb"), "wb") as handle:
            handle.write(b"pid %d" % os.getpid())
        return {"job_id": job_id, "pid": os.getpid(), "files": describe_files(out_dir, ["mesh.glb"]),
                "timings": {"total": 0.0, "upload": 0.0}}


def child_factory(_device):
    return ChildPipeline()


@pytest.fixture()
def device(tmp_path):
    worker = DeviceProcess("cpu", factory=child_factory, grace_s=0.5)
    yield worker
    worker.close()


def _run(worker, tmp_path, mode, cancel_after=None, name="job"):
    cancel = threading.Event()
    if cancel_after is not None:
        threading.Timer(cancel_after, cancel.set).start()
    events = []
    return worker.run({"seed": mode}, str(tmp_path / name), job_id=name, on_progress=events.append,
                      cancel=cancel), events


def test_a_job_stuck_in_one_call_is_killed_after_the_grace_time(device, tmp_path):
    first, _ = _run(device, tmp_path, 0, name="warm")
    started = time.monotonic()
    with pytest.raises(Gen3DError) as caught:
        _run(device, tmp_path, STUCK, cancel_after=0.3, name="stuck")
    assert caught.value.code == CANCELLED and caught.value.stage == "shape"
    assert 0.7 < time.monotonic() - started < 3.0                 # cancel at 0.3 s + grace 0.5 s
    assert device.restarts == 1
    with pytest.raises(ProcessLookupError):
        os.kill(first["pid"], 0)                                  # the old child is gone
    second, events = _run(device, tmp_path, 0, name="after")
    assert second["pid"] != first["pid"] and events[0]["stage"] == "shape"
    assert open(str(tmp_path / "after" / "mesh.glb"), "rb").read() == b"pid %d" % second["pid"]
    assert not os.path.exists(str(tmp_path / "stuck"))


def test_a_job_that_obeys_cancel_keeps_its_process(device, tmp_path):
    first, _ = _run(device, tmp_path, 0, name="warm")
    started = time.monotonic()
    with pytest.raises(Gen3DError) as caught:
        _run(device, tmp_path, COOPERATIVE, cancel_after=0.2, name="polite")
    assert caught.value.code == CANCELLED and time.monotonic() - started < 0.6
    second, _ = _run(device, tmp_path, 0, name="after")
    assert second["pid"] == first["pid"] and device.restarts == 0    # models stay loaded


def test_a_dead_child_fails_its_job_as_internal_retryable(device, tmp_path):
    with pytest.raises(Gen3DError) as caught:
        _run(device, tmp_path, CRASH, name="crash")
    assert caught.value.code == INTERNAL and caught.value.retryable and "exit code 9" in caught.value.message
    result, _ = _run(device, tmp_path, 0, name="after")
    assert result["pid"] > 0 and device.restarts == 1


def test_job_timeout_stops_a_stuck_job_and_the_device_serves_on(tmp_path):
    worker = DeviceProcess("cpu", factory=child_factory, grace_s=0.5)
    scheduler, store = make_scheduler(tmp_path, {"cpu": worker}, job_timeout_s=3.0)
    try:
        stuck = scheduler.submit(sphere_request(seed=STUCK))
        wait_status(store, stuck, (job_store.IN_PROGRESS,))
        scheduler.job_timeout_s = 120            # the next job's limit: room for a fresh process on a busy machine
        after = scheduler.submit(sphere_request(seed=0))
        job = wait_status(store, stuck, job_store.FINAL, timeout=15)
        assert job.status == job_store.TIMED_OUT and job.error["code"] == "TIMEOUT" and job.error["stage"] == "shape"
        assert job.execution_ms(store.clock()) < 12000       # 3 s + 0.5 s grace + a busy machine
        assert wait_status(store, after, job_store.FINAL, timeout=30).status == job_store.COMPLETED
    finally:
        scheduler.stop()


# --- a real server and a slow-drip image_url ------------------------------------------------------
@pytest.fixture(scope="module")
def timeout_server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("timeout-server"), env=LOOPBACK_ENV,
                           extra_args=["--job-timeout", "20"]).start()
    yield server
    server.stop()


def test_slow_drip_image_url_times_out_and_cancel_stops_it_at_once(timeout_server, image_site):
    with timeout_server.client() as api:
        drip = api.post("/run", json={"input": {"image_url": image_site.url("/drip"), "face_count": 5000,
                                                 "texture_size": 512, "octree_resolution": 64}}).json()["id"]
        started = time.monotonic()
        body = wait_for(api, drip, ("TIMED_OUT", "FAILED", "COMPLETED"), timeout=30)
        assert body["status"] == "TIMED_OUT" and body["error"]["code"] == "TIMEOUT", body
        assert body["error"]["stage"] == "preprocess" and time.monotonic() - started < 25

        cancelled = api.post("/run", json={"input": {"image_url": image_site.url("/drip")}}).json()["id"]
        wait_for(api, cancelled, ("IN_PROGRESS",), timeout=30)
        time.sleep(0.5)
        started = time.monotonic()
        assert api.post("/cancel/%s" % cancelled).json()["status"] == "CANCELLED"
        deadline = time.monotonic() + 5
        while image_site.drips and time.monotonic() < deadline:       # the download really stopped
            time.sleep(0.05)
        assert image_site.drips == 0 and time.monotonic() - started < 2.0

        done = api.post("/run", json={"input": sphere_request(face_count=1000, texture_size=256)}).json()["id"]
        assert wait_for(api, done, ("COMPLETED", "FAILED"), timeout=120)["status"] == "COMPLETED"
