"""How an install reports itself: plain lines and a progress bar for people (stderr), or one JSON
object per line on stdout for the add-on's "Install engine" button (`--json-progress`):

    {"event": "progress", "stage": ..., "fraction": 0..1, "message": ...}   fraction: the whole install's, never back
    {"event": "done", "engine": ..., "available": bool, "reason": ..., "engines": [...]}
    {"event": "error", "code": ..., "message": ..., "stage": ..., "retryable": bool}
"""

import json
import sys
import threading

# Share of the whole install each stage takes, in order (weights dominate: gigabytes).
STAGES = (("check", 0.02), ("packages", 0.18), ("source", 0.05), ("build", 0.15), ("weights", 0.57),
          ("verify", 0.03))


class Reporter:
    def __init__(self, json_lines=False, out=None, err=None):
        self.json_lines = json_lines
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.fraction = 0.0
        self._bar = None
        self._lock = threading.Lock()

    # -- progress

    def stage_span(self, stage):
        start = 0.0
        for name, share in STAGES:
            if name == stage:
                return start, share
            start += share
        raise KeyError(stage)

    def progress(self, stage, stage_fraction, message):
        """Report `stage_fraction` (0..1) of `stage`, mapped to the whole install."""
        start, share = self.stage_span(stage)
        with self._lock:
            self.fraction = max(self.fraction, min(1.0, start + share * max(0.0, min(1.0, stage_fraction))))
            if self.json_lines:
                self._emit({"event": "progress", "stage": stage, "fraction": round(self.fraction, 4),
                            "message": message})
            elif self._bar is None:
                print("[%3d%%] %-8s %s" % (self.fraction * 100, stage, message), file=self.err, flush=True)

    def bytes_bar(self, total, description):
        """A byte progress bar on stderr for people (None in JSON mode; progress() still reports)."""
        if self.json_lines:
            return None
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description,
                         file=self.err, dynamic_ncols=True)
        return self._bar

    def close_bar(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def note(self, message):
        """A line for people that is not progress (what was skipped, what to know)."""
        if self.json_lines:
            self._emit({"event": "progress", "stage": "note", "fraction": round(self.fraction, 4), "message": message})
        else:
            print("         %s" % message, file=self.err, flush=True)

    # -- the end

    def done(self, engine, row, rows):
        self.close_bar()
        if self.json_lines:
            self._emit({"event": "done", "engine": engine, "available": bool(row.get("available")),
                        "reason": row.get("reason", ""), "engines": rows})
            return
        print("", file=self.err)
        for entry in rows:
            state = "available" if entry["available"] else "unavailable: %s" % entry["reason"]
            print("%-16s %-16s %s" % (entry["name"], "+".join(entry["capabilities"]) or "-", state), file=self.out)

    def error(self, exc):
        self.close_bar()
        if self.json_lines:
            self._emit({"event": "error", "code": exc.code, "message": exc.message, "stage": exc.stage,
                        "retryable": exc.retryable})
        else:
            print("error [%s]: %s" % (exc.code, exc.message), file=self.err, flush=True)

    def _emit(self, payload):
        self.out.write(json.dumps(payload) + "\n")
        self.out.flush()
