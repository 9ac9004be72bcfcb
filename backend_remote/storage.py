"""Result storage in S3-compatible buckets (AWS S3, Cloudflare R2, MinIO) through boto3, and the
pieces every storage shares (job-id checks, URL decoration, the upload timing).

A job's files go under `<prefix>/<job_id>/`; meta.json is uploaded last, so a prefix with meta.json
holds a complete result. Downloads use presigned GET URLs that expire (`url_expiry_s`).

Configuration comes from the environment; the first name that is set wins:

  endpoint   GEN3D_S3_ENDPOINT_URL, BUCKET_ENDPOINT_URL (RunPod's name); unset: AWS S3 / AWS_ENDPOINT_URL
  bucket     GEN3D_S3_BUCKET, BUCKET_NAME                 (or s3://bucket/prefix on the server's command line)
  prefix     GEN3D_S3_PREFIX (default "gen3d")
  keys       GEN3D_S3_ACCESS_KEY_ID / GEN3D_S3_SECRET_ACCESS_KEY, BUCKET_ACCESS_KEY_ID /
             BUCKET_SECRET_ACCESS_KEY; unset: boto3's own chain (AWS_ACCESS_KEY_ID, ~/.aws, IAM role)
  region     GEN3D_S3_REGION, AWS_REGION, AWS_DEFAULT_REGION; "auto" for an R2 endpoint
  other      GEN3D_URL_EXPIRES_S (presigned URL lifetime, default 86400), GEN3D_S3_ADDRESSING
             (path|virtual|auto), GEN3D_S3_UPLOAD_ATTEMPTS (4), GEN3D_S3_RETRY_BACKOFF_S (0.5),
             GEN3D_S3_CONNECT_TIMEOUT_S (5), GEN3D_S3_READ_TIMEOUT_S (60)
"""

import copy
import os
import re
import time
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from shared.errors import CANCELLED, INVALID_INPUT, STORAGE, Gen3DError
from shared.manifest import META_FILE, write_manifest

MAX_PRESIGN_S = 7 * 24 * 3600          # SigV4 presigned URLs cannot live longer
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# .obj/.mtl: IANA's model/obj and model/mtl; PLY has no registered type.
_CONTENT_TYPES = {".glb": "model/gltf-binary", ".png": "image/png", ".json": "application/json",
                  ".obj": "model/obj", ".mtl": "model/mtl", ".ply": "application/octet-stream"}

# S3 error codes worth another try; anything else (bad keys, missing bucket) will not fix itself.
_TRANSIENT_CODES = {"RequestTimeout", "RequestTimeoutException", "SlowDown", "InternalError", "ServiceUnavailable",
                    "Throttling", "ThrottlingException", "RequestLimitExceeded", "503", "500", "502", "504"}


def check_job_id(job_id):
    """Job ids become folder names and object keys: only plain names are accepted."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id) or ".." in job_id:
        raise Gen3DError(INVALID_INPUT, "The job id %r is not a plain name (letters, digits, '-', '_', '.')."
                         % (job_id,), stage="queued", retryable=False)
    return job_id


def content_type(name):
    return _CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


def with_upload_time(manifest, seconds):
    """The manifest with the upload stage's time recorded (and counted in the total)."""
    manifest = copy.deepcopy(manifest)
    timings = manifest["timings"]
    timings["upload"] = round(float(seconds), 4)
    timings["total"] = round(float(timings.get("total", 0.0)) + float(seconds), 4)
    return manifest


def with_urls(manifest, url_for):
    """A copy of `manifest` with `url` on every file and `meta_url`, from `url_for(name)`."""
    manifest = copy.deepcopy(manifest)
    for name, info in manifest["files"].items():
        info["url"] = url_for(name)
    manifest["meta_url"] = url_for(META_FILE)
    return manifest


def check_cancel(cancel):
    if cancel is not None and cancel.is_set():
        raise Gen3DError(CANCELLED, "The job was cancelled.", stage="upload", retryable=False)


def _env(env, *names, default=None):
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            return value
    return default


def _region_for(endpoint_url, env):
    region = _env(env, "GEN3D_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
    if region:
        return region
    host = (urlsplit(endpoint_url).hostname or "") if endpoint_url else ""
    if host.endswith(".r2.cloudflarestorage.com"):
        return "auto"                      # R2 accepts only "auto" in its signatures
    match = re.search(r"\.s3[.-]([a-z0-9-]+)\.", host)
    if match and match.group(1) != "amazonaws":
        return match.group(1)
    return None


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = "gen3d"
    endpoint_url: str = None
    access_key_id: str = None
    secret_access_key: str = None
    region: str = None
    addressing_style: str = None
    url_expiry_s: int = 86400
    upload_attempts: int = 4
    retry_backoff_s: float = 0.5
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0

    @classmethod
    def from_env(cls, env=None, spec=None):
        """Settings from the environment; `spec` ("s3://bucket/prefix") overrides bucket and prefix."""
        env = os.environ if env is None else env
        bucket = _env(env, "GEN3D_S3_BUCKET", "BUCKET_NAME")
        prefix = _env(env, "GEN3D_S3_PREFIX", default="gen3d")
        if spec:
            parts = urlsplit(spec)
            if parts.scheme != "s3" or not parts.netloc:
                raise ValueError("storage %r is not of the form s3://bucket/prefix" % spec)
            bucket, prefix = parts.netloc, parts.path.strip("/")
        if not bucket:
            raise Gen3DError(STORAGE, "No storage bucket is configured. Set GEN3D_S3_BUCKET (and GEN3D_S3_ENDPOINT_URL "
                             "with its access keys for R2 or MinIO) on the worker.", stage="upload", retryable=False)
        endpoint = _env(env, "GEN3D_S3_ENDPOINT_URL", "BUCKET_ENDPOINT_URL")
        expiry = int(_env(env, "GEN3D_URL_EXPIRES_S", default=86400))
        return cls(
            bucket=bucket, prefix=prefix.strip("/"), endpoint_url=endpoint,
            access_key_id=_env(env, "GEN3D_S3_ACCESS_KEY_ID", "BUCKET_ACCESS_KEY_ID"),
            secret_access_key=_env(env, "GEN3D_S3_SECRET_ACCESS_KEY", "BUCKET_SECRET_ACCESS_KEY"),
            region=_region_for(endpoint, env),
            # Path-style addressing works on every S3-compatible service (MinIO needs it); AWS picks its own.
            addressing_style=_env(env, "GEN3D_S3_ADDRESSING", default="path" if endpoint else None),
            url_expiry_s=max(1, min(expiry, MAX_PRESIGN_S)),
            upload_attempts=max(1, int(_env(env, "GEN3D_S3_UPLOAD_ATTEMPTS", default=4))),
            retry_backoff_s=float(_env(env, "GEN3D_S3_RETRY_BACKOFF_S", default=0.5)),
            connect_timeout_s=float(_env(env, "GEN3D_S3_CONNECT_TIMEOUT_S", default=5)),
            read_timeout_s=float(_env(env, "GEN3D_S3_READ_TIMEOUT_S", default=60)),
        )

    def with_expiry(self, seconds):
        return replace(self, url_expiry_s=max(1, min(int(seconds), MAX_PRESIGN_S)))


def _is_transient(exc):
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return True                        # connect/read timeouts, refused or reset connections
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.get("Code") in _TRANSIENT_CODES or status >= 500 or status == 429
    return False


class S3Storage:
    kind = "s3"

    def __init__(self, config, client=None):
        self.config = config
        self.client = client or self._make_client(config)

    @staticmethod
    def _make_client(config):
        import boto3
        from botocore.config import Config

        options = {"signature_version": "s3v4", "connect_timeout": config.connect_timeout_s,
                   "read_timeout": config.read_timeout_s,
                   # We retry ourselves (with our backoff and our error message), so botocore tries once.
                   "retries": {"total_max_attempts": 1, "mode": "standard"}}
        if config.addressing_style:
            options["s3"] = {"addressing_style": config.addressing_style}
        return boto3.session.Session().client(
            "s3", endpoint_url=config.endpoint_url, region_name=config.region,
            aws_access_key_id=config.access_key_id, aws_secret_access_key=config.secret_access_key,
            config=Config(**options))

    @property
    def where(self):
        return "s3://%s/%s (%s)" % (self.config.bucket, self.config.prefix, self.config.endpoint_url or "AWS S3")

    def key(self, job_id, name=""):
        """`<prefix>/<job_id>/<name>`; without a name, the job's folder prefix (ending in "/")."""
        folder = "%s/" % check_job_id(job_id)
        return (self.config.prefix + "/" if self.config.prefix else "") + folder + name

    def _error(self, exc, action, transient, attempts):
        from botocore.exceptions import ClientError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return Gen3DError(STORAGE, "No storage access keys are configured for %s. Set GEN3D_S3_ACCESS_KEY_ID and "
                              "GEN3D_S3_SECRET_ACCESS_KEY (or RunPod's BUCKET_ACCESS_KEY_ID and "
                              "BUCKET_SECRET_ACCESS_KEY)." % self.where, stage="upload", retryable=False)
        if transient:
            return Gen3DError(STORAGE, "Could not %s at %s after %d tries (%s). The storage service looks down or "
                              "unreachable; try the job again later." % (action, self.where, attempts, exc),
                              stage="upload", retryable=True)
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "404"):         # head_bucket answers a bare 404
                return Gen3DError(STORAGE, "The bucket '%s' does not exist at %s. Create it or fix GEN3D_S3_BUCKET."
                                  % (self.config.bucket, self.config.endpoint_url or "AWS S3"),
                                  stage="upload", retryable=False)
            return Gen3DError(STORAGE, "Storage refused to %s at %s (%s). Check the bucket name, the access keys and "
                              "their permissions." % (action, self.where, exc), stage="upload", retryable=False)
        return Gen3DError(STORAGE, "Could not %s at %s (%s)." % (action, self.where, exc), stage="upload",
                          retryable=False)

    def _with_retries(self, action, call):
        attempts = self.config.upload_attempts
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except Exception as exc:
                transient = _is_transient(exc)
                if not transient or attempt == attempts:
                    raise self._error(exc, action, transient, attempt) from exc
                time.sleep(self.config.retry_backoff_s * 2 ** (attempt - 1))

    def _put(self, job_id, name, path):
        def put():
            with open(path, "rb") as body:
                self.client.put_object(Bucket=self.config.bucket, Key=self.key(job_id, name), Body=body,
                                       ContentType=content_type(name))
        self._with_retries("upload %s" % name, put)

    def publish(self, job_id, local_dir, manifest, on_progress=None, cancel=None):
        """Upload a finished job folder; returns the manifest with its upload time. meta.json goes last."""
        started = time.perf_counter()
        names = list(manifest["files"])
        total = sum(info["bytes"] for info in manifest["files"].values()) or 1
        sent = 0
        try:
            for name in names:
                check_cancel(cancel)
                self._put(job_id, name, os.path.join(local_dir, name))
                sent += manifest["files"][name]["bytes"]
                if on_progress:
                    on_progress(sent / total, "uploaded %s" % name)
            check_cancel(cancel)
            manifest = with_upload_time(manifest, time.perf_counter() - started)
            write_manifest(local_dir, manifest)
            self._put(job_id, META_FILE, os.path.join(local_dir, META_FILE))
        except Gen3DError as exc:
            if exc.code == CANCELLED:
                self._delete_quietly(job_id)
            raise
        return manifest

    def url(self, job_id, name):
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.config.bucket, "Key": self.key(job_id, name)},
            ExpiresIn=self.config.url_expiry_s)

    def with_urls(self, job_id, manifest, base_url=None):
        return with_urls(manifest, lambda name: self.url(job_id, name))

    def delete(self, job_id):
        prefix = self.key(job_id)

        def delete_all():
            listed = self.client.list_objects_v2(Bucket=self.config.bucket, Prefix=prefix)
            keys = [{"Key": item["Key"]} for item in listed.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.config.bucket, Delete={"Objects": keys, "Quiet": True})
        self._with_retries("delete job %s" % job_id, delete_all)

    def _delete_quietly(self, job_id):
        try:
            self.delete(job_id)
        except Gen3DError:
            pass                           # an unreachable bucket keeps the orphans; retention cleans them

    def check(self):
        """Raise STORAGE when the bucket cannot be reached with these settings (used at start-up)."""
        self._with_retries("reach bucket %s" % self.config.bucket,
                           lambda: self.client.head_bucket(Bucket=self.config.bucket))


def open_storage(spec, data_dir, url_expiry_s=None, env=None):
    """The server's storage: "s3://bucket/prefix" (keys and endpoint from the environment), a folder,
    or None for `<data_dir>/results`."""
    if spec and spec.startswith("s3://"):
        config = S3Config.from_env(env, spec)
        if url_expiry_s is not None:
            config = config.with_expiry(url_expiry_s)
        return S3Storage(config)
    from .disk_storage import DiskStorage
    from .signing import UrlSigner, load_or_create_secret

    os.makedirs(data_dir, exist_ok=True)
    root = os.path.abspath(os.path.expanduser(spec)) if spec else os.path.join(data_dir, "results")
    signer = UrlSigner(load_or_create_secret(os.path.join(data_dir, "url-signing.key")))
    return DiskStorage(root, signer, url_expiry_s or 3600)
