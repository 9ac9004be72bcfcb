"""Where each stage's model lives, decided from the GPU memory that is really usable.

Usable memory is what the driver reports free PLUS what torch's caching allocator holds but no tensor
uses (memory_reserved - memory_allocated: torch hands it out again without asking the driver), capped by
torch.cuda.set_per_process_memory_fraction when one is set (mem_get_info knows nothing of that cap).

For the stage about to run the planner picks how its model runs:
  RESIDENT            all components on the GPU (fastest);
  MODEL_OFFLOAD       components live in host RAM and move to the GPU one at a time when called
                      (the GPU holds the largest component plus the stage's working memory);
  SEQUENTIAL_OFFLOAD  submodules are streamed to the GPU layer by layer (slowest, least memory);
and for every other loaded model what to do with it before the stage runs:
  KEEP                stays on the GPU (room enough for both);
  TO_HOST             moves to host RAM (pinned), so the next job moves it back instead of reading disk;
  DROP                freed entirely (host RAM too small to keep it), reloaded from disk when needed.

The numbers are the engines' own declarations (weights, largest component, working memory at the peak),
so the decisions can be tested with any fake budget.
"""

from dataclasses import dataclass, field

GB = 1024 ** 3

RESIDENT = "resident"
MODEL_OFFLOAD = "model_offload"
SEQUENTIAL_OFFLOAD = "sequential_offload"
KEEP = "keep"
TO_HOST = "to_host"
DROP = "drop"

HEADROOM = 0.93          # share of usable memory the plan fills: the allocator fragments, kernels need scratch
HOST_RESERVE_GB = 4.0    # host RAM always left to the process and the system
SEQUENTIAL_STREAM_GB = 1.0   # GPU memory a layer-by-layer stream holds beyond the working memory


@dataclass(frozen=True)
class StageNeed:
    """One stage's model: total weight size on the GPU, its largest component, and working memory."""

    key: str                  # "engine/stage"
    weights_gb: float
    largest_gb: float
    work_gb: float

    @property
    def resident_gb(self):
        return self.weights_gb + self.work_gb


@dataclass
class StagePlan:
    run: str                                   # RESIDENT / MODEL_OFFLOAD / SEQUENTIAL_OFFLOAD
    moves: dict = field(default_factory=dict)  # other model key -> KEEP / TO_HOST / DROP
    gpu_gb: float = 0.0                        # what the plan expects the GPU to hold at the stage's peak
    fits: bool = True                          # False: even sequential offload exceeds the budget

    def describe(self):
        moved = ", ".join("%s %s" % (key, action) for key, action in sorted(self.moves.items()))
        return "%s (%.1f GB on the GPU)%s%s" % (self.run, self.gpu_gb, "; " + moved if moved else "",
                                               "" if self.fits else "; over budget")


def run_mode(need, capacity_gb):
    """How `need` runs when `capacity_gb` of GPU memory is available to it."""
    room = capacity_gb * HEADROOM
    if need.resident_gb <= room:
        return RESIDENT, need.resident_gb
    if need.largest_gb + need.work_gb <= room:
        return MODEL_OFFLOAD, need.largest_gb + need.work_gb
    return SEQUENTIAL_OFFLOAD, need.work_gb + SEQUENTIAL_STREAM_GB


def plan_stage(need, resident, usable_gb, host_free_gb, upcoming=()):
    """Plan for running `need` now.

    resident: {key: GB} models on the GPU now (the stage's own model included if it is there);
    usable_gb: usable GPU memory now (see usable_gb()); host_free_gb: host RAM available now;
    upcoming: keys used soon after this stage (kept on the GPU first when there is room).
    """
    others = {key: gb for key, gb in resident.items() if key != need.key}
    capacity = usable_gb + sum(resident.values())      # everything could be moved out of the way
    mode, gpu_gb = run_mode(need, capacity)
    room = capacity * HEADROOM - gpu_gb
    moves = {}
    host = host_free_gb - HOST_RESERVE_GB
    # models used soon first, then the larger ones (keeping a large one saves the longest move)
    order = sorted(others, key=lambda key: (key not in upcoming, -others[key]))
    for key in order:
        size = others[key]
        if size <= room:
            moves[key] = KEEP
            room -= size
            gpu_gb += size
        elif size <= host:
            moves[key] = TO_HOST
            host -= size
        else:
            moves[key] = DROP
    fits = gpu_gb <= capacity + 1e-9 if mode != SEQUENTIAL_OFFLOAD else need.work_gb + SEQUENTIAL_STREAM_GB <= capacity
    return StagePlan(mode, moves, round(gpu_gb, 2), fits)


def plan_jobs(needs, total_gb, host_gb, jobs=2):
    """Simulate `jobs` consecutive jobs, each running `needs` in order, on an empty GPU of `total_gb` and
    `host_gb` of host RAM. Returns [(key, StagePlan, loaded_from)] where loaded_from is "disk", "host"
    or "gpu": where the stage's weights came from. Used by tests and the engine menu's memory notes."""
    on_gpu, on_host, steps = {}, {}, []
    for _job in range(jobs):
        for index, need in enumerate(needs):
            upcoming = [other.key for other in needs[index + 1:]] + [other.key for other in needs[:index]]
            usable = total_gb - sum(on_gpu.values())
            host_free = host_gb - sum(on_host.values())
            plan = plan_stage(need, dict(on_gpu), usable, host_free, upcoming)
            for key, action in plan.moves.items():
                if action == KEEP:
                    continue
                size = on_gpu.pop(key)
                if action == TO_HOST:
                    on_host[key] = size
            source = "gpu" if need.key in on_gpu else "host" if need.key in on_host else "disk"
            on_host.pop(need.key, None)
            if plan.run == RESIDENT:
                on_gpu[need.key] = need.weights_gb
            else:                      # offloaded models live in host RAM between their calls
                on_host[need.key] = need.weights_gb
                on_gpu.pop(need.key, None)
            steps.append((need.key, plan, source))
    return steps


# -------------------------------------------------------------------------------------------------
# Measuring the real budget


def _indexed(device, torch):
    """torch.device("cuda") -> the current CUDA device's index (the memory queries want an index)."""
    if getattr(device, "type", device) == "cuda" and getattr(device, "index", None) is None:
        try:
            return torch.cuda.current_device()
        except (RuntimeError, AssertionError, AttributeError):
            return device
    return device


def memory_cap_bytes(device, torch_module=None):
    """The per-process cap set with set_per_process_memory_fraction, in bytes, or None."""
    torch = torch_module or __import__("torch")
    device = _indexed(device, torch)
    getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    if getter is None:
        return None
    try:
        fraction = float(getter(device))
        if fraction >= 1.0:
            return None
        return int(fraction * torch.cuda.mem_get_info(device)[1])
    except (RuntimeError, AssertionError, ValueError):      # no CUDA context to ask
        return None


def usable_bytes(device, torch_module=None):
    """GPU memory this process can still use: driver-free plus torch's reusable cached blocks, within the
    per-process cap."""
    torch = torch_module or __import__("torch")
    device = _indexed(device, torch)
    free, _total = torch.cuda.mem_get_info(device)
    try:
        reserved = torch.cuda.memory_reserved(device)
        allocated = torch.cuda.memory_allocated(device)
    except (RuntimeError, AssertionError):
        reserved = allocated = 0
    usable = free + max(reserved - allocated, 0)
    cap = memory_cap_bytes(device, torch)
    if cap is not None:
        usable = min(usable, max(cap - allocated, 0))
    return usable


def usable_gb(device, torch_module=None):
    return usable_bytes(device, torch_module) / GB


def host_available_gb():
    """Host RAM available to new allocations (MemAvailable), or a large number where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    try:
        import psutil

        return psutil.virtual_memory().available / GB
    except ImportError:
        return 1e9


def card_summary(needs, cards=(80, 24, 16, 12), host_gb=32):
    """How an engine's stages run on common card sizes, for the engine menu: {"24": "shape resident,
    texture resident; shape waits in host RAM", ...}, from the second job of plan_jobs (the steady state)."""
    summary = {}
    for card in cards:
        steps = plan_jobs(needs, card, host_gb)[len(needs):]
        parts = ["%s %s" % (key.split("/")[-1], plan.run.replace("_", " ")) for key, plan, _source in steps]
        waits = sorted({moved.split("/")[-1] for _key, plan, _s in steps for moved, action in plan.moves.items()
                        if action == TO_HOST})
        if waits:
            parts[-1] += "; %s waits in host RAM" % ", ".join(waits)
        if not all(plan.fits for _key, plan, _s in steps):
            parts.append("does not fit")
        summary[str(card)] = ", ".join(parts)
    return summary
