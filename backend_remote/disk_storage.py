"""Results kept on the self-hosted server's own disk, downloaded through signed expiring URLs that
the server itself answers (`GET /files/<job_id>/<name>?expires=..&sig=..`)."""

import os
import shutil
import time
from urllib.parse import urlencode

from shared.errors import STORAGE, Gen3DError
from shared.manifest import META_FILE, write_manifest

from .storage import check_cancel, check_job_id, with_upload_time, with_urls

FILES_ROUTE = "/files"


class DiskStorage:
    kind = "disk"

    def __init__(self, root, signer, url_expiry_s=3600):
        self.root = os.path.abspath(root)
        self.signer = signer
        self.url_expiry_s = int(url_expiry_s)
        os.makedirs(self.root, exist_ok=True)

    @property
    def where(self):
        return self.root

    def job_dir(self, job_id):
        return os.path.join(self.root, check_job_id(job_id))

    def publish(self, job_id, local_dir, manifest, on_progress=None, cancel=None):
        """Move the finished job folder into the results folder (a rename when on the same disk)."""
        started = time.perf_counter()
        check_cancel(cancel)
        target = self.job_dir(job_id)
        try:
            if os.path.realpath(local_dir) != os.path.realpath(target):
                shutil.rmtree(target, ignore_errors=True)
                shutil.move(local_dir, target)
            manifest = with_upload_time(manifest, time.perf_counter() - started)
            write_manifest(target, manifest)
        except OSError as exc:         # read-only, full, gone: the admin's problem, said without our paths
            shutil.rmtree(target, ignore_errors=True)
            raise Gen3DError(STORAGE, "The server could not store the result (%s). Its results disk is full or "
                             "read-only; try again later or tell the server's admin."
                             % (exc.strerror or type(exc).__name__), stage="upload", retryable=True)
        if on_progress:
            on_progress(1.0, "stored")
        return manifest

    @staticmethod
    def url_path(job_id, name):
        return "%s/%s/%s" % (FILES_ROUTE, job_id, name)

    def with_urls(self, job_id, manifest, base_url):
        base = base_url.rstrip("/")

        def url_for(name):
            path = self.url_path(job_id, name)
            return "%s%s?%s" % (base, path, urlencode(self.signer.sign(path, self.url_expiry_s)))
        return with_urls(manifest, url_for)

    def signed_file(self, job_id, name, expires, sig):
        """The path of a stored result file when the signature is valid and unexpired, else None."""
        if not self.signer.verify(self.url_path(job_id, name), expires, sig):
            return None
        if name != os.path.basename(name) or name.startswith("."):
            return None
        try:
            path = os.path.join(self.job_dir(job_id), name)
        except Gen3DError:
            return None
        return path if os.path.isfile(path) else None

    def has_result(self, job_id):
        return os.path.isfile(os.path.join(self.job_dir(job_id), META_FILE))

    def delete(self, job_id):
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def check(self):
        os.makedirs(self.root, exist_ok=True)

