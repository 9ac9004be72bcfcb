"""Training loss and metrics of the shape network (shared by training, validation and tests).

Occupancy: most cells of a 64^3 grid are empty, and the rays outside the silhouette are empty by
construction (the network masks them), so binary cross-entropy is averaged over the cells of the
rays the silhouette touches only, and a soft-IoU term per image keeps thin parts (legs, handles),
whose few cells barely move a per-cell average, from being traded away. Elevation: Huber in radians
(linear beyond 2 degrees, so odd views do not dominate), weighted 3: at a 8-degree error it is 0.13, a tenth
of the occupancy terms, and a first 15-minute run learned no elevation at all (every image got the
training range's middle, 15.7 degrees), so the shared encoder needs a stronger pull towards its cues. Confidence: cross-entropy against the IoU
the prediction actually reached (detached), so its sigmoid estimates that IoU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SOFT_IOU_WEIGHT = 1.0
ELEVATION_WEIGHT = 3.0
CONFIDENCE_WEIGHT = 0.1
ELEVATION_HUBER_RAD = math.radians(2.0)


def hard_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) IoU of the occupancy thresholded at probability 0.5 against the {0, 1} target (1 where both are empty)."""
    pred = logits > 0
    true = target > 0.5
    inter = (pred & true).sum((1, 2, 3)).float()
    union = (pred | true).sum((1, 2, 3)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def shape_losses(out: dict, occupancy: torch.Tensor, elevation: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Total loss and its parts (per-batch means, detached) plus the per-image hard IoU under 'iou_per_image'."""
    logits = out["occupancy_logits"].float()
    target = occupancy.float()
    weight = out["support"][:, None].expand_as(logits).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = ((bce * weight).sum((1, 2, 3)) / weight.sum((1, 2, 3)).clamp(min=1)).mean()

    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((1, 2, 3))
    union = (prob + target - prob * target).sum((1, 2, 3))
    soft_iou_loss = (1 - inter / union.clamp(min=1e-6)).mean()

    elevation_loss = F.smooth_l1_loss(out["elevation"].float(), elevation.float(), beta=ELEVATION_HUBER_RAD)

    iou = hard_iou(logits.detach(), target)
    confidence_loss = F.binary_cross_entropy_with_logits(out["confidence_logit"].float(), iou)

    total = bce + SOFT_IOU_WEIGHT * soft_iou_loss + ELEVATION_WEIGHT * elevation_loss + CONFIDENCE_WEIGHT * confidence_loss
    parts = {"bce": bce.detach(), "soft_iou_loss": soft_iou_loss.detach(), "elevation_loss": elevation_loss.detach(),
             "confidence_loss": confidence_loss.detach(), "iou_per_image": iou}
    return total, parts


def elevation_error_deg(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """(B,) absolute elevation error in degrees."""
    return torch.rad2deg((predicted.float() - true.float()).abs())
