"""The learned shape network: pixel-aligned occupancy along each pixel's ray, from one RGBA crop.

Representation. The object is framed in a square crop (S x S, the window of `infer.frame_crop` and
of the training renders) and its solid is an occupancy grid of G x G x G cells in the normalised
camera frame, indexed [depth, row, col]: col and row are the crop's columns and rows (the xy window
is exactly the crop), depth 0 is farthest from the camera and G-1 nearest, and depth spans the same
half-width as x and y around the object's depth centre. The network is a 2D encoder-decoder (a
U-Net) whose G output channels at G x G resolution are the G depth bins of each cell's ray: the
logit of "this ray is inside the object at this depth".

Why this and not a global latent with a 3D decoder:
* The silhouette stays exactly aligned with the image. Every output column is one ray of the crop,
  and a ray that the alpha does not touch is forced empty (its logits are masked), so the mesh's
  outline is the input's outline by construction; the network only has to learn depth.
* A 2D CNN is cheap: a few GMAC at 128 x 128, well under a second on a 2-core CPU at batch 1, where a
  3D decoder at 64^3 would cost tens of GMAC; training throughput on one GPU is high for the same
  reason.
* The output is the grid marching cubes wants: no network queries per point, no resampling.
* Skip connections carry local evidence (shading, texture edges, a rim's ellipse) straight to the
  rays it concerns, while the 8 x 8 bottleneck sees the whole object for what the image cannot show
  (the back side, how deep a shape of that outline usually is).

Inputs the network sees besides RGBA (computed inside `forward`, so a weights file fully defines the
model): the distance of each pixel to the silhouette's outline, in units of a quarter crop (the
crop's scale is fixed by the framing, so thickness on screen is an absolute cue for depth extent),
and the pixel's x and y in [-1, 1] (where the outline sits within the framed window).

Heads besides occupancy, both on the pooled bottleneck (layer-normalised: format 2): the camera elevation in radians (the
upright frame needs it; 0-30 degrees in training), and a confidence: the logit of the IoU the
network expects its own occupancy to reach on this image, trained against the measured IoU, so the
engine can fall back to its hand-made priors where the model knows it is weak.

Normalisation is GroupNorm (batch-size independent: inference runs at batch 1), activations SiLU.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT_VERSION = 2
# Logit given to rays outside the silhouette: sigmoid(-30) is 1e-13, i.e. exactly empty after thresholds.
OUTSIDE_LOGIT = -30.0
# A ray counts as touched by the silhouette when some pixel of its cell has this much alpha.
SUPPORT_ALPHA = 0.5 / 255.0
# The input's outline: pixels at least this opaque are the object.
MASK_ALPHA = 0.5


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 128
    grid: int = 64
    # Channels per encoder level; level l works at image_size / 2**l.
    widths: tuple = (32, 64, 128, 192, 256)
    head_width: int = 128
    version: int = FORMAT_VERSION

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        ratio = self.image_size // self.grid
        if self.image_size % self.grid or ratio & (ratio - 1):
            raise ValueError("image_size must be grid times a power of two, got %d and %d" % (self.image_size, self.grid))
        if self.output_level >= len(self.widths):
            raise ValueError("need more encoder levels than log2(image_size / grid)")
        if self.image_size % (1 << (len(self.widths) - 1)):
            raise ValueError("image_size %d is not divisible by 2**%d" % (self.image_size, len(self.widths) - 1))

    @property
    def output_level(self) -> int:
        return int(math.log2(self.image_size // self.grid))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        fields = json.loads(text)
        if int(fields.get("version", 0)) != FORMAT_VERSION:
            raise ValueError("shape model format version %s, this code reads %d" % (fields.get("version"), FORMAT_VERSION))
        return cls(**fields)


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def distance_to_outline(mask: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Exact Euclidean distance (pixels) of each pixel of a (B, H, W) bool mask to the nearest pixel
    outside it (0 outside). Two separable brute-force min-plus passes, O(H W (H + W)) per image, in
    batch chunks so the (chunk, H, W, W) temporaries stay small."""
    b, h, w = mask.shape
    big = float(4 * (h + w) ** 2)
    out = []
    for part in torch.split(mask, chunk):
        f = torch.where(part, big, 0.0).to(torch.float32)
        rows = torch.arange(h, device=mask.device, dtype=torch.float32)
        cols = torch.arange(w, device=mask.device, dtype=torch.float32)
        d_rows = (rows[:, None] - rows[None, :]) ** 2  # (p, q)
        d_cols = (cols[:, None] - cols[None, :]) ** 2
        # along rows: g[b, p, j] = min_q f[b, q, j] + (p - q)^2
        g = (f[:, None, :, :] + d_rows[None, :, :, None]).amin(2)
        # along columns: d[b, i, p] = min_q g[b, i, q] + (p - q)^2
        g = (g[:, :, None, :] + d_cols[None, None, :, :]).amin(3)
        out.append(g.clamp(max=big).sqrt())
    return torch.cat(out)


class ShapeNet(nn.Module):
    """RGBA crop (B, 4, S, S), straight colour in [0, 1], background 0 -> dict(
    occupancy_logits (B, G, G, G) [depth, row, col], elevation (B,) radians, confidence_logit (B,))."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        self.stem = nn.Conv2d(7, w[0], 3, padding=1)
        self.enc = nn.ModuleList([ResBlock(w[0], w[0])])
        self.down = nn.ModuleList()
        for lo, hi in zip(w[:-1], w[1:]):
            self.down.append(nn.Conv2d(lo, hi, 3, stride=2, padding=1))
            self.enc.append(ResBlock(hi, hi))
        self.mid = ResBlock(w[-1], w[-1])
        # Decoder: from the bottleneck back up to the output level (image_size / grid).
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for level in range(len(w) - 2, config.output_level - 1, -1):
            self.up.append(nn.Conv2d(w[level + 1], w[level], 3, padding=1))
            self.dec.append(ResBlock(2 * w[level], w[level]))
        wo = w[config.output_level]
        self.head = nn.Sequential(nn.GroupNorm(_groups(wo), wo), nn.SiLU(),
                                  nn.Conv2d(wo, config.head_width, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(config.head_width, config.grid, 1))
        # The pooled bottleneck is a residual stream whose scale grows in training (mean |x| ~340 after 3,350
        # steps of v3): unnormalised, it drove every hidden unit of this head into SiLU's flat negative side and
        # both heads answered one constant for every image (format 1). LayerNorm keeps its input at unit scale.
        self.global_norm = nn.LayerNorm(w[-1])
        self.global_head = nn.Sequential(nn.Linear(w[-1], 128), nn.SiLU(), nn.Linear(128, 2))
        # Start the confidence near an IoU of 0.5 and the elevation near the middle of the training range.
        nn.init.zeros_(self.global_head[2].weight)
        with torch.no_grad():
            self.global_head[2].bias.copy_(torch.tensor([math.radians(15.0), 0.0]))

    def features(self, rgba: torch.Tensor) -> torch.Tensor:
        """The network's input planes: rgb, alpha, distance to the outline (quarter crops), x, y."""
        b, _, s, _ = rgba.shape
        alpha = rgba[:, 3]
        dist = distance_to_outline(alpha >= MASK_ALPHA) / (s / 4.0)
        coords = (torch.arange(s, device=rgba.device, dtype=rgba.dtype) + 0.5) / s * 2 - 1
        x = coords[None, None, None, :].expand(b, 1, s, s)
        y = -coords[None, None, :, None].expand(b, 1, s, s)
        return torch.cat([rgba[:, :3] - 0.5, alpha[:, None], dist[:, None].to(rgba.dtype), x, y], 1)

    def ray_support(self, alpha: torch.Tensor) -> torch.Tensor:
        """(B, G, G) bool: rays whose cell the silhouette touches (the others are known empty)."""
        k = self.config.image_size // self.config.grid
        return F.max_pool2d(alpha[:, None], k)[:, 0] > SUPPORT_ALPHA

    def forward(self, rgba: torch.Tensor) -> dict:
        s = self.config.image_size
        if rgba.shape[1:] != (4, s, s):
            raise ValueError("expected (B, 4, %d, %d), got %s" % (s, s, tuple(rgba.shape)))
        h = self.enc[0](self.stem(self.features(rgba)))
        skips = [h]
        for down, block in zip(self.down, self.enc[1:]):
            h = block(down(h))
            skips.append(h)
        h = self.mid(h)
        pooled = h.float().mean((2, 3))
        for i, (up, block) in enumerate(zip(self.up, self.dec)):
            skip = skips[-2 - i]
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = block(torch.cat([h, skip], 1))
        logits = self.head(h).float()
        support = self.ray_support(rgba[:, 3])
        logits = logits.masked_fill(~support[:, None], OUTSIDE_LOGIT)
        g = self.global_head(self.global_norm(pooled)).float()
        return {"occupancy_logits": logits, "elevation": g[:, 0], "confidence_logit": g[:, 1], "support": support}


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
