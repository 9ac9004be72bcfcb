"""Device choice and memory accounting (peak RSS on CPU, peak allocated on CUDA)."""

import os
import threading

import torch

from shared.errors import ENGINE_UNAVAILABLE, Gen3DError

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resolve_device(name="auto"):
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise Gen3DError(ENGINE_UNAVAILABLE, "CUDA was requested but this machine has no usable NVIDIA GPU "
                         "(or this torch build has no CUDA). Use --device cpu or auto.", retryable=False)
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise Gen3DError(ENGINE_UNAVAILABLE, "Unknown device '%s'; use auto, cpu or cuda." % name, retryable=False)
    return torch.device(name)


def describe(device):
    if device.type == "cuda":
        return "cuda:%s (%s)" % (device.index or 0, torch.cuda.get_device_name(device))
    return "cpu (%d threads)" % torch.get_num_threads()


def _rss_bytes():
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Context manager measuring peak memory during a block: process RSS sampled every 10 ms on CPU,
    torch's own peak allocation counter on CUDA."""

    def __init__(self, device):
        self.device = device
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = None
        self._peak_rss = 0

    def _sample(self):
        while not self._stop.wait(0.01):
            self._peak_rss = max(self._peak_rss, _rss_bytes())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)   # torch tracks the peak itself: no sampling
            return self
        self._peak_rss = _rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
            return False
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self._peak_rss, _rss_bytes()) / 2 ** 20
        return False
