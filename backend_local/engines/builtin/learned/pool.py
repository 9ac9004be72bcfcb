"""A replay pool of generated training samples: each render is used several times, flipped and recoloured.

Why: on the lent H100 the sphere tracer makes about 100 samples a second while the network's step at
batch 128 takes a fraction of the batch's generation time, so training on fresh batches only leaves the
GPU waiting for data, and a 15-minute run sees 90 k samples in 700 steps. Reusing each sample `reuse`
times, with exact symmetries so that no two uses are the same image, gives `reuse` times the steps for the
same data time.

Scheme (deterministic, so a resumed run draws what an uninterrupted one would):
* data comes in chunks of `chunk` samples; chunk c is `generate(c)` (seeded by its index);
* a new chunk is generated every `every = round(reuse * chunk / batch)` steps: chunk c at step c * every;
* the pool holds the last `capacity` chunks; step s draws `batch` samples uniformly from the chunks
  present at step s, with an index generator seeded by `pick_seed(s)`;
* each drawn sample is mirrored left-right with probability 1/2 (image columns and grid columns: the
  same object seen in a mirror, same elevation) and has its colour channels permuted at random (the
  shape does not depend on hue).
On resume at step s the chunks the pool held are regenerated from their seeds: `capacity` chunks of
generation time once per slice.
"""

from __future__ import annotations

import collections
import itertools

import torch

# The six orders of (r, g, b).
PERMUTATIONS = torch.tensor(list(itertools.permutations(range(3))))


class SamplePool:
    def __init__(self, generate, pick_seed, batch: int, chunk: int, reuse: float, capacity: int):
        if reuse < 1 or chunk < 1 or capacity < 1:
            raise ValueError("reuse >= 1, chunk >= 1 and capacity >= 1 are needed")
        self.generate = generate          # chunk index -> dict with rgba, occupancy, elevation, family
        self.pick_seed = pick_seed        # step -> generator seed for that step's draw
        self.batch = batch
        self.chunk = chunk
        self.every = max(1, int(round(reuse * chunk / batch)))
        self.capacity = capacity
        self.ring = None                  # name -> (capacity * chunk, ...) tensor; chunk c in slot c % capacity
        self.held = set()                 # chunk indices in the ring
        self.generated_families = collections.Counter()

    def chunk_at(self, step: int) -> int:
        """Index of the newest chunk in the pool at `step`."""
        return step // self.every

    def _add(self, index: int, count_families: bool):
        data = self.generate(index)
        if len(data["elevation"]) != self.chunk:
            raise ValueError("a chunk must hold %d samples, got %d" % (self.chunk, len(data["elevation"])))
        values = {"rgba": data["rgba"], "occupancy": data["occupancy"].to(torch.uint8), "elevation": data["elevation"]}
        if self.ring is None:
            self.ring = {k: v.new_zeros((self.capacity * self.chunk,) + v.shape[1:]) for k, v in values.items()}
        slot = (index % self.capacity) * self.chunk
        for k, v in values.items():
            self.ring[k][slot:slot + self.chunk] = v
        self.held = {c for c in self.held if c % self.capacity != index % self.capacity} | {index}
        if count_families:
            self.generated_families.update(data["family"])

    def prepare(self, step: int):
        """Make the pool what it is at `step`: the newest chunk added (counted as new data when it is made at
        its own step), or on resume every chunk it held then, regenerated (not counted again)."""
        newest = self.chunk_at(step)
        for index in range(max(0, newest - self.capacity + 1), newest + 1):
            if index not in self.held:
                self._add(index, count_families=index == newest and step % self.every == 0)

    def draw(self, step: int) -> dict:
        """The training batch of `step`: rgba (B, 4, S, S), occupancy (B, G, G, G) float, elevation (B,)."""
        self.prepare(step)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.pick_seed(step))
        slots = torch.tensor(sorted(c % self.capacity for c in self.held))
        which = slots[torch.randint(len(slots), (self.batch,), generator=gen)]
        rows = which * self.chunk + torch.randint(self.chunk, (self.batch,), generator=gen)
        flip = torch.rand(self.batch, generator=gen) < 0.5
        perm = PERMUTATIONS[torch.randint(len(PERMUTATIONS), (self.batch,), generator=gen)]
        device = self.ring["rgba"].device
        rows, flip, perm = rows.to(device), flip.to(device)[:, None, None, None], perm.to(device)
        rgba = self.ring["rgba"].index_select(0, rows)
        occupancy = self.ring["occupancy"].index_select(0, rows)
        rgba = torch.where(flip, rgba.flip(3), rgba)
        occupancy = torch.where(flip, occupancy.flip(3), occupancy).float()
        colour = torch.gather(rgba[:, :3], 1, perm[:, :, None, None].expand(-1, -1, *rgba.shape[2:]))
        return {"rgba": torch.cat([colour, rgba[:, 3:]], 1).contiguous(), "occupancy": occupancy,
                "elevation": self.ring["elevation"].index_select(0, rows)}
