"""The built-in engine's learned shape: the trained network's mesh and camera elevation for one image, used
when the network is confident, else None so the engine keeps its hand-made priors.

Which weights: the engine setting "shape_model" names a safetensors file, or "priors" to never use one;
by default the file shipped beside the network's code (learned/shape_model.safetensors), when present.
"""

import math
import os

import numpy as np

from shared.errors import ENGINE_UNAVAILABLE, Gen3DError

SHIPPED_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "learned", "shape_model.safetensors")
PRIORS_ONLY = "priors"
# The learned shape is used when the network's confidence reaches this; below it the priors are. Refit by
# `learned.selector`, the confidence is the probability that the network's shape beats the priors' on this
# image, fitted on generated objects (never the dev cases), so 0.5 means "more likely than not"; as trained,
# it is the IoU the network expects of its own occupancy, which picks the wrong cases (docs/LEARNED.md).
MIN_CONFIDENCE = 0.5


def weights_path(settings):
    """The weights file to use, or None (the setting says priors, or nothing is shipped)."""
    chosen = (settings or {}).get("shape_model")
    if chosen == PRIORS_ONLY:
        return None
    if chosen:
        path = os.path.abspath(os.path.expanduser(str(chosen)))
        if not os.path.isfile(path):   # a setting that names nothing is the user's to fix, not an internal error
            raise Gen3DError(ENGINE_UNAVAILABLE, "The built-in engine's setting shape_model names %s, which does not "
                             "exist: give a shape_model.safetensors file, or 'priors'." % path, stage="shape",
                             retryable=False)
        return path
    return SHIPPED_WEIGHTS if os.path.isfile(SHIPPED_WEIGHTS) else None


def learned_surface(job, settings):
    """(pixel-frame vertices, faces, elevation in degrees) from the network for a one-image job, or None
    (no weights, extra views given, or the network unsure: the caller then builds the prior-based shape)."""
    path = weights_path(settings)
    if path is None or job.views:
        return None
    from .learned import infer       # only when a model is used: safetensors and the network stay unloaded

    try:
        model = infer.load(path, job.device)                # cached: loaded once per worker
    except ValueError as exc:   # not a shape model, or one of another format version
        raise Gen3DError(ENGINE_UNAVAILABLE, "The built-in engine cannot use the shape model %s (%s). Give a "
                         "shape_model.safetensors written by this version's training command, or set shape_model to "
                         "'priors'." % (path, exc), stage="shape", retryable=False)
    vertices, faces, elevation_rad, confidence = infer.reconstruct(model, job.image, face_count=job.request.face_count)
    job.progress("shape", 0.4, "learned shape (confidence %.2f)" % confidence)
    if confidence < MIN_CONFIDENCE or len(faces) == 0:
        return None
    return np.asarray(vertices, np.float64), np.asarray(faces, np.int64), math.degrees(elevation_rad)
