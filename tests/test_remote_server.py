"""The self-hosted server (`python -m backend_remote serve`) in a subprocess on 127.0.0.1."""

import json
import os
import time
from urllib.parse import urlsplit

import httpx

from shared.progress import STAGES

from test_remote_support import (API_KEY, BUCKET, LONG, ServerProcess, auth, check_downloads, sphere_request,
                                 wait_for)

pytest_plugins = ["test_remote_support"]

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


def test_every_route_needs_the_api_key(disk_server):
    routes = [("POST", "/run"), ("POST", "/runsync"), ("GET", "/status/x"), ("POST", "/cancel/x"), ("GET", "/health")]
    for headers in ({}, auth("wrong-key"), {"Authorization": API_KEY}, {"Authorization": "Basic " + API_KEY},
                    auth(API_KEY + "x")):
        for method, path in routes:
            response = httpx.request(method, disk_server.url + path, headers=headers, json={"input": {}})
            assert response.status_code == 401, (headers, path)
            assert response.headers["www-authenticate"] == "Bearer"
            error = response.json()["error"]
            assert error["code"] == "UNAUTHORIZED" and "API key" in error["message"]
    health = httpx.get(disk_server.url + "/health", headers=auth("second-key-unused")).json()
    assert health["workers"]["idle"] + health["workers"]["running"] == 1 and health["storage"] == "disk"


def test_full_job_with_disk_storage(disk_server):
    api = disk_server.client()
    submitted = api.post("/run", json={"input": sphere_request()}).json()
    assert submitted["status"] in ("IN_QUEUE", "IN_PROGRESS")
    job_id = submitted["id"]
    seen = []
    while True:
        body = api.get("/status/%s" % job_id).json()
        if body["status"] in FINAL:
            break
        if body["status"] == "IN_PROGRESS":
            seen.append(body["output"])
        time.sleep(0.05)
    assert body["status"] == "COMPLETED", body
    assert isinstance(body["delayTime"], int) and body["executionTime"] > 0
    manifest = body["output"]
    assert manifest["job_id"] == job_id and manifest["timings"]["upload"] >= 0
    assert manifest["params"]["face_count"] == 5000

    # progress as the client sees it: valid stages, never going back
    assert seen and all(event["job_id"] == job_id and event["stage"] in STAGES for event in seen)
    values = [event["progress"] for event in seen]
    assert values == sorted(values)

    url = urlsplit(manifest["files"]["mesh.glb"]["url"])
    assert url.netloc == "127.0.0.1:%d" % disk_server.port and url.path == "/files/%s/mesh.glb" % job_id
    files = check_downloads(manifest)                      # signed URLs work without the API key
    assert json.loads(files["meta.json"])["files"]["mesh.glb"]["sha256"] == manifest["files"]["mesh.glb"]["sha256"]

    signed = manifest["files"]["mesh.glb"]["url"]
    base = signed.split("?")[0]
    for bad in (base, signed.replace("sig=", "sig=0"), signed.replace("expires=", "expires=1"),
                signed.replace("/mesh.glb?", "/ao.png?")):
        response = httpx.get(bad)
        assert response.status_code == 403 and response.json()["error"]["code"] == "UNAUTHORIZED", bad
    escape = httpx.get(disk_server.url + "/files/%s/..%%2F..%%2Fjobs.sqlite3?%s" % (job_id, signed.split("?")[1]))
    assert escape.status_code in (403, 404) and b"SQLite" not in escape.content


def test_runsync_bad_requests_and_unknown_jobs(disk_server):
    api = disk_server.client()
    body = api.post("/runsync?wait=240000", json={"input": sphere_request(texture=False)}, timeout=300).json()
    assert body["status"] == "COMPLETED", body
    assert sorted(body["output"]["files"]) == ["input.png", "mesh.glb"] and body["output"]["textures"] is None

    refused = api.post("/run", json={"input": {"image_path": "/etc/passwd"}}).json()
    assert refused["status"] == "FAILED" and refused["error"]["code"] == "INVALID_INPUT"
    assert "image_path" in refused["error"]["message"]
    assert api.get("/status/%s" % refused["id"]).json()["error"] == refused["error"]

    assert api.post("/run", content=b"{not json").status_code == 400
    response = api.post("/run", json={"image": "abc"})
    assert response.status_code == 400 and '"input"' in response.json()["error"]["message"]
    missing = api.get("/status/no-such-job")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "INVALID_INPUT"
    assert api.post("/cancel/no-such-job").status_code == 404


def test_image_urls_to_private_addresses_are_refused(disk_server, image_site):
    api = disk_server.client()
    for url in (image_site.url("/sphere.png"), "http://169.254.169.254/latest/meta-data/iam/"):
        job_id = api.post("/run", json={"input": {"image_url": url}}).json()["id"]
        body = wait_for(api, job_id, FINAL)
        assert body["status"] == "FAILED" and body["error"]["code"] == "INVALID_INPUT", body
        assert "private, local or reserved" in body["error"]["message"]
        assert body["error"]["stage"] == "preprocess"
    assert image_site.requests == []                      # the server never connected


def test_cancel_queued_and_running_jobs(disk_server):
    api = disk_server.client()
    running = api.post("/run", json={"input": sphere_request(**LONG)}).json()["id"]
    queued = api.post("/run", json={"input": sphere_request()}).json()["id"]
    deadline = time.monotonic() + 60
    while api.get("/status/%s" % running).json().get("output", {}).get("stage") != "shape":
        assert time.monotonic() < deadline
        time.sleep(0.05)                                  # cancel in the middle of the pipeline
    assert api.get("/status/%s" % queued).json()["status"] == "IN_QUEUE"    # one job at a time per device

    assert api.post("/cancel/%s" % queued).json() == {"id": queued, "status": "CANCELLED"}
    assert api.post("/cancel/%s" % running).json() == {"id": running, "status": "CANCELLED"}

    # the pipeline really stops: the device becomes idle and nothing of either job is kept
    deadline = time.monotonic() + 120
    while api.get("/health").json()["workers"]["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    health = api.get("/health").json()
    assert health["workers"] == {"idle": 1, "running": 0} and health["jobs"]["inQueue"] == 0
    assert "job %s stopped during" % running in disk_server.log()      # not run to its end
    for job_id in (queued, running):
        body = api.get("/status/%s" % job_id).json()
        assert body["status"] == "CANCELLED" and "output" not in body
        assert not os.path.exists(os.path.join(disk_server.data_dir, "results", job_id))
    assert os.listdir(os.path.join(disk_server.data_dir, "work")) == []
    assert api.post("/cancel/%s" % running).json()["status"] == "CANCELLED"          # idempotent


def test_restart_keeps_finished_jobs_and_fails_interrupted_ones(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("restart-server")).start()
    try:
        api = server.client()
        done = api.post("/runsync", json={"input": sphere_request()}, timeout=300).json()
        assert done["status"] == "COMPLETED", done
        running = api.post("/run", json={"input": sphere_request(**LONG)}).json()["id"]
        wait_for(api, running, ("IN_PROGRESS",))
        queued = api.post("/run", json={"input": sphere_request()}).json()["id"]
        server.kill()                                     # a crash: no shutdown code runs

        server.start()
        api = server.client()
        again = api.get("/status/%s" % done["id"]).json()
        assert again["status"] == "COMPLETED"
        assert urlsplit(again["output"]["meta_url"]).port == server.port       # links signed for the new run
        check_downloads(again["output"])

        interrupted = api.get("/status/%s" % running).json()
        assert interrupted["status"] == "FAILED"
        assert interrupted["error"]["code"] == "INTERNAL" and interrupted["error"]["retryable"] is True
        assert "Submit it again" in interrupted["error"]["message"]
        assert wait_for(api, queued, FINAL, timeout=240)["status"] == "COMPLETED"     # the queue survived
    finally:
        server.stop()


def test_full_job_with_s3_storage_and_retention(moto_s3, tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("s3-server"), storage="s3://%s/server" % BUCKET, env=moto_s3.env,
                           extra_args=["--retention-hours", "0.002", "--url-expiry", "600"]).start()
    try:
        api = server.client()
        assert api.get("/health").json()["storage"] == "s3"
        body = api.post("/runsync", json={"input": sphere_request()}, timeout=300).json()
        assert body["status"] == "COMPLETED", body
        job_id, manifest = body["id"], body["output"]
        assert manifest["files"]["mesh.glb"]["url"].startswith("%s/%s/server/%s/mesh.glb?" % (moto_s3.endpoint,
                                                                                           BUCKET, job_id))
        assert "X-Amz-Expires=600" in manifest["meta_url"]
        check_downloads(manifest)
        assert len(moto_s3.keys("server/%s/" % job_id)) == len(manifest["files"]) + 1

        # kept for 0.002 h (7.2 s), then the record and the objects are cleaned up
        deadline = time.monotonic() + 60
        while api.get("/status/%s" % job_id).status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert api.get("/status/%s" % job_id).status_code == 404
        assert moto_s3.keys("server/%s/" % job_id) == []
    finally:
        server.stop()
