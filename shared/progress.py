"""Progress events: stages, overall progress that never goes back."""

STAGES = ("queued", "preprocess", "shape", "texture", "export", "upload")

# Share of the overall 0..1 bar each stage owns (upload only exists for remote jobs; a local job
# jumps from the end of export to 1.0 when it completes).
_SPANS = {
    "queued": (0.0, 0.0),
    "preprocess": (0.0, 0.05),
    "shape": (0.05, 0.45),
    "texture": (0.45, 0.85),
    "export": (0.85, 0.95),
    "upload": (0.95, 1.0),
}


def progress_event(job_id, stage, progress, message=""):
    if stage not in STAGES:
        raise ValueError("unknown stage %r" % (stage,))
    return {"job_id": job_id, "stage": stage, "progress": round(min(max(float(progress), 0.0), 1.0), 4),
            "message": str(message)}


def overall(stage, fraction):
    """Map progress within a stage (0..1) onto the overall bar."""
    start, end = _SPANS[stage]
    return start + (end - start) * min(max(float(fraction), 0.0), 1.0)


class ProgressTracker:
    """Builds monotonic progress events for one job and hands them to `sink` (if any)."""

    def __init__(self, job_id, sink=None):
        self.job_id = job_id
        self.sink = sink
        self.value = 0.0
        self.stage = "queued"

    def update(self, stage, fraction=0.0, message=""):
        self.stage = stage
        self.value = max(self.value, overall(stage, fraction))
        event = progress_event(self.job_id, stage, self.value, message)
        if self.sink is not None:
            self.sink(event)
        return event

    def finish(self, message="done"):
        self.value = 1.0
        event = progress_event(self.job_id, self.stage, 1.0, message)
        if self.sink is not None:
            self.sink(event)
        return event
