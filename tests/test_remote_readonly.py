"""A disk that turns read-only mid-job is STORAGE, retryable, and the message shows no server path."""

import errno
import shutil

from backend_remote import job_store
from shared.errors import STORAGE, Gen3DError

from test_remote_jobs import FakePipeline, make_scheduler, wait_status
from test_remote_support import SMALL, sphere_request

pytest_plugins = ["test_remote_support"]


def _read_only(path):
    def fail(*_args, **_kwargs):
        raise OSError(errno.EROFS, "Read-only file system", path)
    return fail


def test_results_disk_read_only_at_publish(tmp_path, monkeypatch):
    scheduler, store = make_scheduler(tmp_path, {"cpu": FakePipeline(0.05, [])})
    try:
        monkeypatch.setattr(shutil, "move", _read_only(str(tmp_path / "results" / "x")))
        job_id = scheduler.submit(sphere_request())
        job = wait_status(store, job_id, job_store.FINAL)
    finally:
        scheduler.stop()
    assert job.status == job_store.FAILED and job.error["code"] == STORAGE and job.error["retryable"]
    assert "read-only" in job.error["message"] and str(tmp_path) not in job.error["message"]
    assert job.error["stage"] == "upload" and not (tmp_path / "results" / job_id).exists()


def test_work_disk_read_only_while_the_pipeline_writes(pipeline, tmp_path, monkeypatch):
    from backend_local import export
    from shared.request import parse_request

    monkeypatch.setattr(export, "write_glb", _read_only(str(tmp_path / "out" / "mesh.glb")))
    request = parse_request(dict(sphere_request(**SMALL), texture=False), allow_path=False)
    try:
        pipeline.run(request, str(tmp_path / "out"), job_id="ro")
    except Gen3DError as exc:
        error = exc
    assert error.code == STORAGE and error.retryable and error.stage == "export"
    assert str(tmp_path) not in error.message and "read-only" in error.message
    assert list(tmp_path.iterdir()) == []                      # no half-written staging folder left
