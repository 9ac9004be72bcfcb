"""Result storage: S3 (against a moto server on 127.0.0.1) and the server's signed disk storage."""

import json
import os
import shutil
import threading
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from botocore.exceptions import EndpointConnectionError

from backend_remote.disk_storage import DiskStorage
from backend_remote.signing import UrlSigner, load_or_create_secret
from backend_remote.storage import S3Config, S3Storage, check_job_id, open_storage
from shared.errors import CANCELLED, INVALID_INPUT, STORAGE, Gen3DError
from shared.manifest import read_manifest, verify_files

from test_remote_support import BUCKET, check_downloads, closed_port_url

pytest_plugins = ["test_remote_support"]


@pytest.fixture()
def job_folder(sphere_result, tmp_path):
    """A copy of a real finished job folder and its manifest."""
    source, manifest, _events = sphere_result
    folder = str(tmp_path / "job")
    shutil.copytree(source, folder)
    return folder, manifest


def s3_storage(moto_s3, **changes):
    config = S3Config.from_env(dict(moto_s3.env, GEN3D_S3_PREFIX="results"))
    for key, value in changes.items():
        config = config.__class__(**dict(config.__dict__, **{key: value}))
    return S3Storage(config)


# --- configuration -------------------------------------------------------------------------------
def test_config_from_gen3d_names():
    config = S3Config.from_env({"GEN3D_S3_BUCKET": "b", "GEN3D_S3_ENDPOINT_URL": "http://minio:9000",
                                "GEN3D_S3_ACCESS_KEY_ID": "k", "GEN3D_S3_SECRET_ACCESS_KEY": "s",
                                "GEN3D_URL_EXPIRES_S": "600", "GEN3D_S3_PREFIX": "/jobs/"})
    assert (config.bucket, config.prefix, config.endpoint_url) == ("b", "jobs", "http://minio:9000")
    assert (config.access_key_id, config.secret_access_key, config.url_expiry_s) == ("k", "s", 600)
    assert config.addressing_style == "path"            # MinIO and most S3-compatible services need it


def test_config_from_runpod_names_and_r2_region():
    env = {"BUCKET_ENDPOINT_URL": "https://0123abcd.r2.cloudflarestorage.com", "BUCKET_ACCESS_KEY_ID": "rk",
           "BUCKET_SECRET_ACCESS_KEY": "rs", "BUCKET_NAME": "gen3d"}
    config = S3Config.from_env(env)
    assert config.region == "auto" and config.bucket == "gen3d" and config.access_key_id == "rk"
    assert S3Config.from_env(dict(env, BUCKET_ENDPOINT_URL="https://s3.eu-west-3.amazonaws.com")).region is None
    regional = S3Config.from_env(dict(env, BUCKET_ENDPOINT_URL="https://bucket.s3.eu-west-3.amazonaws.com"))
    assert regional.region == "eu-west-3"
    assert S3Config.from_env(dict(env, GEN3D_S3_REGION="us-west-2")).region == "us-west-2"


def test_config_spec_expiry_and_missing_bucket():
    config = S3Config.from_env({"GEN3D_S3_BUCKET": "ignored"}, spec="s3://real-bucket/some/prefix/")
    assert (config.bucket, config.prefix, config.endpoint_url) == ("real-bucket", "some/prefix", None)
    assert config.with_expiry(10 ** 9).url_expiry_s == 7 * 24 * 3600      # SigV4's longest
    with pytest.raises(Gen3DError) as caught:
        S3Config.from_env({})
    assert caught.value.code == STORAGE and "GEN3D_S3_BUCKET" in caught.value.message
    with pytest.raises(ValueError):
        S3Config.from_env({}, spec="s3:/missing-slash")


@pytest.mark.parametrize("job_id", ["../etc", "a/b", "", ".hidden", "x" * 200, "a..b"])
def test_job_ids_must_be_plain_names(job_id):
    with pytest.raises(Gen3DError) as caught:
        check_job_id(job_id)
    assert caught.value.code == INVALID_INPUT


# --- S3 ----------------------------------------------------------------------------------------
def test_s3_publish_presigned_urls_and_delete(moto_s3, job_folder):
    folder, manifest = job_folder
    storage = s3_storage(moto_s3, url_expiry_s=900)
    order = []
    put = storage.client.put_object
    storage.client.put_object = lambda **kw: (order.append(kw["Key"]), put(**kw))[1]
    events = []
    stored = storage.publish("job-1", folder, manifest, on_progress=lambda f, m: events.append(f))

    expected = sorted("results/job-1/%s" % name for name in list(manifest["files"]) + ["meta.json"])
    assert moto_s3.keys("results/job-1/") == expected
    assert order[-1] == "results/job-1/meta.json"           # meta.json last: its presence means complete
    assert events == sorted(events) and events[-1] == pytest.approx(1.0)
    assert stored["timings"]["upload"] > 0
    assert stored["timings"]["total"] == pytest.approx(manifest["timings"]["total"] + stored["timings"]["upload"],
                                                       abs=1e-3)
    glb = moto_s3.s3.head_object(Bucket=BUCKET, Key="results/job-1/mesh.glb")
    assert glb["ContentType"] == "model/gltf-binary"

    with_urls = storage.with_urls("job-1", stored)
    files = check_downloads(with_urls)                      # every URL works without credentials
    assert json.loads(files["meta.json"]) == stored
    query = parse_qs(urlsplit(with_urls["files"]["mesh.glb"]["url"]).query)
    assert query["X-Amz-Expires"] == ["900"]

    storage.delete("job-1")
    assert moto_s3.keys("results/job-1/") == []


def test_s3_retries_transient_errors(moto_s3, job_folder):
    folder, manifest = job_folder
    storage = s3_storage(moto_s3)
    put = storage.client.put_object
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs["Key"])
        if len(calls) <= 2:
            raise EndpointConnectionError(endpoint_url=moto_s3.endpoint)
        return put(**kwargs)

    storage.client.put_object = flaky
    storage.publish("job-2", folder, manifest)
    assert calls[:3] == ["results/job-2/mesh.glb"] * 3
    assert "results/job-2/meta.json" in moto_s3.keys("results/job-2/")


def test_s3_outage_gives_storage_error(job_folder):
    folder, manifest = job_folder
    config = S3Config.from_env({"GEN3D_S3_BUCKET": BUCKET, "GEN3D_S3_ENDPOINT_URL": closed_port_url(),
                                "GEN3D_S3_ACCESS_KEY_ID": "testing", "GEN3D_S3_SECRET_ACCESS_KEY": "testing",
                                "GEN3D_S3_UPLOAD_ATTEMPTS": "3", "GEN3D_S3_RETRY_BACKOFF_S": "0.05"})
    storage = S3Storage(config)
    put = storage.client.put_object
    calls = []
    storage.client.put_object = lambda **kw: (calls.append(1), put(**kw))[1]
    started = time.monotonic()
    with pytest.raises(Gen3DError) as caught:
        storage.publish("job-3", folder, manifest)
    error = caught.value
    assert error.code == STORAGE and error.retryable and error.stage == "upload"
    assert "after 3 tries" in error.message and "try the job again later" in error.message
    assert len(calls) == 3 and time.monotonic() - started < 10


def test_missing_bucket_is_not_retried(moto_s3, job_folder):
    folder, manifest = job_folder
    storage = s3_storage(moto_s3, bucket="no-such-bucket")
    put = storage.client.put_object
    calls = []
    storage.client.put_object = lambda **kw: (calls.append(1), put(**kw))[1]
    with pytest.raises(Gen3DError) as caught:
        storage.publish("job-4", folder, manifest)
    assert caught.value.code == STORAGE and not caught.value.retryable
    assert "no-such-bucket" in caught.value.message and len(calls) == 1


def test_cancel_during_upload_leaves_nothing(moto_s3, job_folder):
    folder, manifest = job_folder
    storage = s3_storage(moto_s3)
    cancel = threading.Event()
    with pytest.raises(Gen3DError) as caught:
        storage.publish("job-5", folder, manifest, on_progress=lambda f, m: cancel.set(), cancel=cancel)
    assert caught.value.code == CANCELLED
    assert moto_s3.keys("results/job-5/") == []


# --- disk storage and signed URLs --------------------------------------------------------------
def test_signing_secret_persists_privately(tmp_path):
    path = str(tmp_path / "key")
    secret = load_or_create_secret(path)
    assert load_or_create_secret(path) == secret and len(secret) == 32
    assert os.stat(path).st_mode & 0o077 == 0


def test_signed_urls(tmp_path):
    signer = UrlSigner(b"s" * 32)
    query = signer.sign("/files/a/mesh.glb", ttl_s=60, now=1000)
    assert query["expires"] == "1060"
    assert signer.verify("/files/a/mesh.glb", query["expires"], query["sig"], now=1059)
    assert not signer.verify("/files/a/mesh.glb", query["expires"], query["sig"], now=1061)      # expired
    assert not signer.verify("/files/a/ao.png", query["expires"], query["sig"], now=1000)        # other file
    assert not signer.verify("/files/a/mesh.glb", "2060", query["sig"], now=1000)                # longer life
    assert not signer.verify("/files/a/mesh.glb", query["expires"], "0" * 64, now=1000)
    assert not UrlSigner(b"t" * 32).verify("/files/a/mesh.glb", query["expires"], query["sig"], now=1000)


def test_disk_storage_publish_and_signed_files(tmp_path, job_folder):
    folder, manifest = job_folder
    storage = open_storage(None, str(tmp_path / "data"), url_expiry_s=120)
    assert isinstance(storage, DiskStorage) and storage.root == str(tmp_path / "data" / "results")
    stored = storage.publish("job-6", folder, manifest)
    assert not os.path.exists(folder)                              # moved, not copied
    assert verify_files(storage.job_dir("job-6"), stored) == []
    assert read_manifest(storage.job_dir("job-6"))["timings"]["upload"] == stored["timings"]["upload"]

    with_urls = storage.with_urls("job-6", stored, "http://example.test:8000/")
    url = urlsplit(with_urls["files"]["mesh.glb"]["url"])
    assert url.netloc == "example.test:8000" and url.path == "/files/job-6/mesh.glb"
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    assert storage.signed_file("job-6", "mesh.glb", query["expires"], query["sig"]) == \
        os.path.join(storage.job_dir("job-6"), "mesh.glb")
    assert storage.signed_file("job-6", "ao.png", query["expires"], query["sig"]) is None
    meta = parse_qs(urlsplit(with_urls["meta_url"]).query)
    assert storage.signed_file("job-6", "meta.json", meta["expires"][0], meta["sig"][0])

    storage.delete("job-6")
    assert not os.path.exists(storage.job_dir("job-6"))
    assert storage.signed_file("job-6", "mesh.glb", query["expires"], query["sig"]) is None


def test_s3_spec_opens_s3_storage(moto_s3, monkeypatch, tmp_path):
    for key, value in moto_s3.env.items():
        monkeypatch.setenv(key, value)
    storage = open_storage("s3://%s/server-results" % BUCKET, str(tmp_path), url_expiry_s=77)
    assert isinstance(storage, S3Storage)
    assert (storage.config.prefix, storage.config.url_expiry_s) == ("server-results", 77)
    storage.check()
    assert httpx.get(storage.url("x", "mesh.glb")).status_code == 404      # signed, but nothing there yet
