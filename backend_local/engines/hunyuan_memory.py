"""Memory handling the Hunyuan engines share: loading without a CPU fp32 copy, moving a loaded stage
between the GPU and pinned host RAM (vram_plan decides), the libraries' own offload modes, out-of-memory
recovery that really frees the failed stage's activations, and clearing the painters' per-job renderer
state."""

import contextlib
import gc
import sys

import torch

from .. import offload, vram_plan

# Tensors the painters' MeshRender keeps from the last job (mesh, textures, texel grids): dropped after a job.
RENDER_JOB_STATE = ("vtx_pos", "pos_idx", "vtx_uv", "uv_idx", "tex", "tex_mr", "tex_normal", "tex_position",
                    "tex_grid", "texture_indices")


def log(message):
    print("[gen3d] %s" % message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# Loading


@contextlib.contextmanager
def lean_construction():
    """While a library builds its modules from a config and loads a checkpoint into them: parameters are
    created on the meta device (no memory, no random init of billions of fp32 values), load_state_dict
    assigns the checkpoint's own tensors (already fp16), and torch.load memory-maps the file instead of
    reading all of it into RAM. Any parameter the checkpoint did not fill (the libraries load some parts
    with strict=False) is materialised afterwards by materialize_leftovers()."""
    try:
        from accelerate import init_empty_weights
    except ImportError:              # gen3d[hunyuan] installs accelerate; without it, the library's own way
        yield
        return
    original_load_state_dict = torch.nn.Module.load_state_dict
    original_register = torch.nn.Module.register_parameter
    original_load = torch.load

    def load_state_dict(self, state_dict, strict=True, assign=False):
        # accelerate's meta patch of register_parameter would send the assigned tensors to meta too
        patched = torch.nn.Module.register_parameter
        torch.nn.Module.register_parameter = original_register
        try:
            result = original_load_state_dict(self, state_dict, strict=strict, assign=True)
        finally:
            torch.nn.Module.register_parameter = patched
        materialize_leftovers(self)
        return result

    def load(path, *args, **kwargs):
        if isinstance(path, str) and "mmap" not in kwargs:
            kwargs["mmap"] = True
        try:
            return original_load(path, *args, **kwargs)
        except RuntimeError:               # old (non-zip) pickles cannot be memory-mapped
            kwargs.pop("mmap", None)
            return original_load(path, *args, **kwargs)

    torch.nn.Module.load_state_dict = load_state_dict
    torch.load = load
    try:
        with init_empty_weights(include_buffers=False):
            yield
    finally:
        torch.nn.Module.load_state_dict = original_load_state_dict
        torch.load = original_load


def materialize_leftovers(module):
    """Parameters still on the meta device after loading (not in the checkpoint): real zeros, as the
    library would have had random values there that its inference never reads. Returns their count."""
    count = 0
    for owner in module.modules():
        for name, param in list(owner._parameters.items()):
            if param is not None and param.device.type == "meta":
                owner._parameters[name] = torch.nn.Parameter(torch.zeros(param.shape, dtype=param.dtype),
                                                             requires_grad=False)
                count += 1
    if count:
        log("%d parameters were not in the checkpoint; set to zero" % count)
    return count


# ---------------------------------------------------------------------------------------------------
# Stage placement


class StageMemory:
    """Mixin for HunyuanEngine: what a stage needs (vram_plan.StageNeed), and moving a loaded stage.

    Engines declare `stage_sizes = {stage: (weights_gb, largest_component_gb, work_gb)}` for models not
    loaded yet; once loaded the weights are measured from the model itself."""

    stage_sizes = {}

    def _memory_state(self):
        if not hasattr(self, "_homes"):
            self._homes, self._run_modes = {}, {}
        return self._homes

    def stage_need(self, stage):
        weights, largest, work = self.stage_sizes.get(stage, (self.vram_gb.get(stage, 0.0),) * 2 + (0.0,))
        home = self._memory_state().get(stage)
        if home is not None:
            weights, largest = home.weights_gb(), home.largest_gb()
        return vram_plan.StageNeed("%s/%s" % (self.name, stage), weights, largest, work)

    def stage_home(self, stage):
        homes = self._memory_state()
        if stage not in homes and stage in self._models:
            homes[stage] = offload.ModelHome(self._models[stage])
        return homes.get(stage)

    def gpu_gb(self, stage):
        """GB of this stage's weights on the GPU now (0 when on the host or offloaded)."""
        home = self.stage_home(stage)
        if home is None or home.where != "gpu" or self._run_modes.get(stage, vram_plan.RESIDENT) != vram_plan.RESIDENT:
            return 0.0
        return home.weights_gb()

    def move_to_host(self, stage):
        home = self.stage_home(stage)
        if home is not None and home.where == "gpu" and self._run_modes.get(stage) in (None, vram_plan.RESIDENT):
            home.to_host()

    def bring_back(self, stage, device):
        """Before a stage runs: its weights back on the GPU if the planner moved them to the host."""
        home = self._memory_state().get(stage)
        if home is not None and home.where == "host" and self._run_modes.get(stage) in (None, vram_plan.RESIDENT):
            home.to_device(device)

    def set_run_mode(self, stage, mode, device):
        """Apply MODEL_OFFLOAD / SEQUENTIAL_OFFLOAD with the libraries' own (accelerate) offload; RESIDENT
        needs nothing. A mode, once set, stays until the stage is unloaded."""
        self._memory_state()
        current = self._run_modes.get(stage, vram_plan.RESIDENT)
        if mode == current or stage not in self._models or mode == vram_plan.RESIDENT:
            return
        if stage == "texture" and mode == vram_plan.SEQUENTIAL_OFFLOAD:
            # the painters seed with torch.Generator(device=pipeline.device), which is "meta" under diffusers'
            # sequential offload (seen at full size on the H200 with a 12 GB cap): model offload is the least
            # they can run with
            mode = vram_plan.MODEL_OFFLOAD
        apply_offload(self._models[stage], mode, device)
        self._run_modes[stage] = mode
        log("%s/%s runs with %s" % (self.name, stage, mode))

    def forget_stage(self, stage=None):
        homes = self._memory_state()
        for name in ([stage] if stage else list(homes)):
            homes.pop(name, None)
            self._run_modes.pop(name, None)

    def after_job(self):
        """Drop what the painters' renderers kept of the last job (mesh and textures on the GPU)."""
        for model in self._models.values():
            render = getattr(model, "render", None)
            if render is not None:
                clear_render_state(render)


def apply_offload(model, mode, device):
    """The libraries' offload on a loaded stage model: shape pipelines have enable_model_cpu_offload
    (accelerate hooks, one component on the GPU at a time); painters hold diffusers pipelines, which have
    both enable_model_cpu_offload and enable_sequential_cpu_offload; plain modules next to them (DINOv2,
    the upscaler) get accelerate's hooks directly."""
    from accelerate import cpu_offload, cpu_offload_with_hook

    index = device.index or 0
    pipelines = [model] if hasattr(model, "enable_model_cpu_offload") else []
    pipelines += [value for value in _library_objects(model) if hasattr(value, "enable_model_cpu_offload")
                  and value is not model]
    covered = set()
    for pipeline in pipelines:
        if mode == vram_plan.SEQUENTIAL_OFFLOAD and hasattr(pipeline, "enable_sequential_cpu_offload"):
            pipeline.enable_sequential_cpu_offload(gpu_id=index)
        else:
            pipeline.enable_model_cpu_offload(gpu_id=index)
        for component in offload.find_modules(pipeline):
            covered.update(id(sub) for sub in component.modules())
    modules = offload.find_modules(model)
    for module in modules:
        if id(module) in covered:
            continue
        if mode == vram_plan.SEQUENTIAL_OFFLOAD:
            cpu_offload(module, execution_device=device)
        else:
            cpu_offload_with_hook(module, execution_device=device)
    for module in modules:
        for sub in module.modules():
            inputs_follow_offload(sub)
    gc.collect()
    torch.cuda.empty_cache()


# Methods diffusers decorates with apply_forward_hook: they run the offload hook's pre_forward on the module
# alone, so the module moves to the GPU but its inputs do not.
HOOKED_METHODS = ("encode", "decode")


def _execution_device(hook):
    device = getattr(hook, "execution_device", None)
    if device is None:                                   # accelerate's SequentialHook chains several
        for inner in getattr(hook, "hooks", ()):
            device = device or _execution_device(inner)
    return device


def _to_device(value, device):
    """Tensors inside value moved to device. A dict is updated in place (the painters keep per-job caches in
    the dicts they pass, and read them back by identity); a list or tuple is rebuilt only if an item moved."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        for key, item in list(value.items()):
            moved = _to_device(item, device)
            if moved is not item:
                value[key] = moved
        return value
    if isinstance(value, (list, tuple)):
        moved = [_to_device(item, device) for item in value]
        if any(new is not old for new, old in zip(moved, value)):
            return type(value)(moved) if isinstance(value, list) else tuple(moved)
    return value


def inputs_follow_offload(module):
    """accelerate's model-offload hook moves a module's inputs only on the call that moves the module: once
    the module is on the GPU it passes them as they are. The 2.1 painter builds tensors on `unet.device` /
    `vae.device` (the host, while those wait there) and passes them to every denoising step, so step 2 saw
    cuda weights and host inputs (seen at full size with a 12 GB cap); its `vae.encode` (a hooked method, not
    forward) never moved them. Every forward and hooked encode/decode of an offloaded module now gets its
    tensor arguments on the hook's execution device (no copy for those already there)."""
    hook = getattr(module, "_hf_hook", None)
    device = _execution_device(hook)
    if device is None:
        return
    if not getattr(hook, "_gen3d_follows", False):
        original = hook.pre_forward

        def pre_forward(mod, *args, **kwargs):
            args, kwargs = original(mod, *args, **kwargs)
            return _to_device(args, device), _to_device(kwargs, device)

        hook.pre_forward = pre_forward
        hook._gen3d_follows = True
    for name in HOOKED_METHODS:
        method = getattr(module, name, None)
        if method is None or getattr(method, "_gen3d_follows", False):
            continue

        def follow(*args, _method=method, **kwargs):
            return _method(*_to_device(args, device), **_to_device(kwargs, device))

        follow._gen3d_follows = True
        setattr(module, name, follow)


def _library_objects(root, depth=3):
    """The plain library objects (pipelines, their holders) reachable from a stage model, not modules."""
    found = []

    def visit(value, _seen):
        if isinstance(value, (torch.nn.Module, type)):
            return None
        if isinstance(value, dict):
            return list(value.values())
        if hasattr(value, "__dict__"):
            found.append(value)
            return list(vars(value).values())
        return None

    offload.walk_objects(root, depth, visit)
    return found


def clear_render_state(render):
    for name in RENDER_JOB_STATE:
        if isinstance(getattr(render, name, None), torch.Tensor):
            setattr(render, name, None)


free_failure = offload.free_failure
