"""One remote job from request to stored result; shared by the RunPod handler and the server.

The local pipeline ends its progress at 1.0 when its files are written, but a remote job still has
to upload them. So its events are capped at the start of the upload span (0.95) and the upload
reports the rest; the relay also drops anything that would make the bar go back.
"""

import os
import shutil

from shared.progress import overall, progress_event

UPLOAD_START = overall("upload", 0.0)


class ProgressRelay:
    """Forwards monotonic progress events for one job to `sink` (None: keep only the latest)."""

    def __init__(self, job_id, sink=None):
        self.job_id = job_id
        self.sink = sink
        self.latest = progress_event(job_id, "queued", 0.0, "queued")

    def _send(self, event):
        if event["progress"] < self.latest["progress"]:
            return
        self.latest = event
        if self.sink is not None:
            self.sink(event)

    def from_pipeline(self, event):
        if event["progress"] > UPLOAD_START:
            event = dict(event, progress=UPLOAD_START, message="files written")
        self._send(dict(event, job_id=self.job_id))

    def upload(self, fraction, message):
        self._send(progress_event(self.job_id, "upload", overall("upload", fraction), message))


def execute_job(pipeline, storage, request, job_id, work_root, on_progress=None, cancel=None):
    """Run `request` on `pipeline` and publish the result to `storage`.

    Returns the stored manifest (without URLs; storage.with_urls adds them). Raises Gen3DError; a
    failed job leaves nothing in `work_root`.
    """
    relay = ProgressRelay(job_id, on_progress)
    out_dir = os.path.join(work_root, job_id)
    try:
        manifest = pipeline.run(request, out_dir, job_id=job_id, on_progress=relay.from_pipeline, cancel=cancel)
        relay.upload(0.0, "storing the result")
        manifest = storage.publish(job_id, out_dir, manifest, on_progress=relay.upload, cancel=cancel)
        relay.upload(1.0, "completed")
        return manifest
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
