"""GPU memory planning between stages: models stay loaded while they fit, and are unloaded (least
useful first) when the next stage needs the room. On a 24 GB card Hunyuan3D-2.1's shape model
(~10 GB) is unloaded before its paint model (~21 GB) loads; on an 80 GB card both stay resident."""

import gc
import sys

import torch

GB = 1024 ** 3


def log(message):
    print("[gen3d] %s" % message, file=sys.stderr, flush=True)


class MemoryPlanner:
    def __init__(self, device, low_memory=None):
        self.device = device
        self.low_memory = low_memory   # None: decide from free memory; True/False: forced

    def free_gb(self):
        if self.device.type != "cuda":
            return float("inf")
        free, _total = torch.cuda.mem_get_info(self.device)
        return free / GB

    def total_gb(self):
        if self.device.type != "cuda":
            return float("inf")
        return torch.cuda.get_device_properties(self.device).total_memory / GB

    def release(self):
        if self.device.type == "cuda":  # on CPU the allocator returns memory by itself
            gc.collect()
            torch.cuda.empty_cache()

    def prepare(self, registry, engine, stage):
        """Make room for `engine`'s `stage` before it runs."""
        if self.device.type != "cuda":
            return
        need = float(engine.vram_gb.get(stage, 0.0))
        others = [(e, s) for e in registry.loaded().values() for s in e.loaded_stages()
                  if (e is not engine or s != stage)]
        if self.low_memory:
            for other, other_stage in others:
                other.unload(other_stage)
            self.release()
            return
        if engine.loaded_stages() and stage in engine.loaded_stages():
            return
        if self.free_gb() >= need:
            return
        for other, other_stage in others:
            log("unloading %s/%s to free memory for %s/%s (%.1f GB free, %.1f GB needed)"
                % (other.name, other_stage, engine.name, stage, self.free_gb(), need))
            other.unload(other_stage)
            self.release()
            if self.free_gb() >= need:
                return
        if self.free_gb() < need:
            log("only %.1f GB free for %s/%s which needs about %.1f GB; trying anyway"
                % (self.free_gb(), engine.name, stage, need))

    def after_job(self, registry):
        """Low-memory mode frees everything between jobs; otherwise models and torch's cached blocks stay
        for the next job (prepare() frees them when a stage needs the room)."""
        if self.low_memory:
            for engine in registry.loaded().values():
                engine.unload()
            self.release()
