"""GPU memory between stages and jobs, as vram_plan decides from the memory really usable.

Before each stage the planner measures usable GPU memory (free + torch's reusable cache, within any
per-process cap), then for the stage's model picks resident / model offload / sequential offload, and for
every other loaded model keep on the GPU / move to pinned host RAM / drop. Models moved to host RAM come
back in a fraction of a second for the next job, so a second job reads nothing from disk: on a 24 GB card
Hunyuan3D-2.1's shape model waits in host RAM while its painter runs, and the painter while the next
shape runs; on an 80 GB card both stay on the GPU. --low-memory (low_memory=True) still frees everything
between jobs. Engines without StageMemory's methods (the built-in ones) are unloaded as before."""

import gc
import sys

import torch

from . import vram_plan

GB = vram_plan.GB


def log(message):
    print("[gen3d] %s" % message, file=sys.stderr, flush=True)


class MemoryPlanner:
    def __init__(self, device, low_memory=None):
        self.device = device
        self.low_memory = low_memory   # None: decide from usable memory; True: free everything between jobs
        self.last_plans = []
        self.plans = []                # (engine/stage, StagePlan) of the current job, for the manifest and tests

    def free_gb(self):
        if self.device.type != "cuda":
            return float("inf")
        return vram_plan.usable_gb(self.device)

    def total_gb(self):
        if self.device.type != "cuda":
            return float("inf")
        cap = vram_plan.memory_cap_bytes(self.device)
        return (cap or torch.cuda.get_device_properties(self.device).total_memory) / GB

    def release(self):
        if self.device.type == "cuda":  # on CPU the allocator returns memory by itself
            gc.collect()
            torch.cuda.empty_cache()

    @staticmethod
    def _need(engine, stage):
        if hasattr(engine, "stage_need"):
            return engine.stage_need(stage)
        gb = float(engine.vram_gb.get(stage, 0.0))
        return vram_plan.StageNeed("%s/%s" % (engine.name, stage), gb, gb, 0.0)

    def _resident(self, registry):
        """{key: (engine, stage, GB on the GPU)} for every loaded stage."""
        resident = {}
        for engine in registry.loaded().values():
            for stage in engine.loaded_stages():
                gb = engine.gpu_gb(stage) if hasattr(engine, "gpu_gb") else float(engine.vram_gb.get(stage, 0.0))
                resident["%s/%s" % (engine.name, stage)] = (engine, stage, gb)
        return resident

    def prepare(self, registry, engine, stage):
        """Make room for `engine`'s `stage` before it runs, and choose how it runs."""
        if self.device.type != "cuda":
            return
        resident = self._resident(registry)
        if self.low_memory:
            for key, (other, other_stage, _gb) in resident.items():
                if (other, other_stage) != (engine, stage):
                    other.unload(other_stage)
            self.release()
            return
        need = self._need(engine, stage)
        self.release()                     # cached blocks of the last stage count as usable now
        plan = vram_plan.plan_stage(need, {key: gb for key, (_e, _s, gb) in resident.items() if gb > 0},
                                    self.free_gb(), vram_plan.host_available_gb())
        self.plans.append((need.key, plan))
        for key, action in plan.moves.items():
            other, other_stage, _gb = resident[key]
            if action == vram_plan.TO_HOST and hasattr(other, "move_to_host"):
                log("moving %s to host RAM for %s" % (key, need.key))
                other.move_to_host(other_stage)
            elif action != vram_plan.KEEP:
                log("unloading %s for %s" % (key, need.key))
                other.unload(other_stage)
        self.release()
        if plan.run != vram_plan.RESIDENT and hasattr(engine, "set_run_mode"):
            engine.model(stage, self.device)
            engine.set_run_mode(stage, plan.run, self.device)
        if not plan.fits:
            log("%s: %s; trying anyway" % (need.key, plan.describe()))

    def after_job(self, registry):
        """Low-memory mode frees everything between jobs; otherwise models stay (GPU or host RAM) for the
        next job, and only what the painters' renderers kept of this job is dropped."""
        for engine in registry.loaded().values():
            if hasattr(engine, "after_job"):
                engine.after_job()
        self.last_plans, self.plans = self.plans, []
        if self.low_memory:
            for engine in registry.loaded().values():
                engine.unload()
        self.release()
