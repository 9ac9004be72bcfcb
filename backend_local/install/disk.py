"""Free-space check before anything large is written."""

import os
import shutil

from shared.errors import STORAGE, Gen3DError

GB = 1024 ** 3
MARGIN = 1 * GB          # left free beyond what is needed: unpacking, temp files, the system


def free_bytes(path):
    """Free bytes on the volume that holds `path` (or would, once its missing folders exist)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return shutil.disk_usage(probe).free


def require_space(path, needed, what, stage="weights", free=None):
    """STORAGE when `path`'s volume has less than `needed` bytes plus a margin free."""
    free = free_bytes(path) if free is None else free
    if needed > 0 and free < needed + MARGIN:
        raise Gen3DError(STORAGE, "Not enough disk space for %s: %.1f GB are needed in %s (plus %.0f GB to spare) but "
                         "only %.1f GB are free. Free some space or choose another folder with --weights-dir, then run "
                         "the install again." % (what, needed / GB, path, MARGIN / GB, free / GB),
                         stage=stage, retryable=False)
    return free
