"""Moving a loaded model's components between the GPU and host RAM without reloading it.

A component's first move to the host copies its tensors into pinned (page-locked) buffers that are kept
as the component's home; later moves copy into the same buffers. Pinned copies run at the bus speed
(about 50 GB/s on the H200 machine, against 1-3 GB/s for ordinary pageable memory), so a 7 GB model
goes back and forth in a fraction of a second.
"""

import gc
import traceback

import torch


def _tensors(module):
    """(owner, kind, name, tensor) for every parameter and buffer, each owned tensor once."""
    for owner in module.modules():
        for kind in ("_parameters", "_buffers"):
            for name, tensor in getattr(owner, kind).items():
                if tensor is not None:
                    yield owner, kind, name, tensor


def _put(owner, kind, name, tensor, data):
    if kind == "_parameters":
        tensor.data = data
    else:
        owner._buffers[name] = data


class HostHome:
    """Pinned host buffers for one module's tensors, allocated on its first move to the host."""

    def __init__(self, module):
        self.module = module
        self.buffers = {}
        self.pinned = torch.cuda.is_available()

    def to_host(self):
        for owner, kind, name, tensor in _tensors(self.module):
            if tensor.device.type == "cpu":
                continue
            key = (id(owner), kind, name)
            home = self.buffers.get(key)
            if home is None or home.shape != tensor.shape or home.dtype != tensor.dtype:
                home = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=self.pinned)
                self.buffers[key] = home
                home.copy_(tensor.detach(), non_blocking=True)
            elif kind == "_buffers":
                # inference never changes weights: the home copy of a parameter is still exact, so only
                # buffers (which a library may update in place) are copied again
                home.copy_(tensor.detach(), non_blocking=True)
            _put(owner, kind, name, tensor, home)
        if self.pinned:
            torch.cuda.synchronize()

    def to_device(self, device):
        for owner, kind, name, tensor in _tensors(self.module):
            if tensor.device == device or (device.type == "cuda" and tensor.device.type == "cuda"):
                continue
            _put(owner, kind, name, tensor, tensor.detach().to(device, non_blocking=True))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def drop(self):
        self.buffers.clear()


def walk_objects(root, depth, visit):
    """Visit a library object and what it holds, down to `depth` levels, each object once (by id).
    visit(value, seen) returns the children to go on with, or None to stop there; it may add ids to
    `seen` to skip them. One walk for find_modules and hunyuan_memory's pipeline search, so both
    cover a library's objects the same way."""
    seen = set()

    def step(value, level):
        if id(value) in seen or level < 0:
            return
        seen.add(id(value))
        for child in visit(value, seen) or ():
            step(child, level - 1)

    step(root, depth)


def find_modules(root, depth=4):
    """The torch modules reachable from a library object: its attributes, dict/list values and a diffusers
    pipeline's components, outermost first; a module inside another one found is not listed again."""
    found = []

    def visit(value, seen):
        if isinstance(value, torch.nn.Module):
            found.append(value)
            seen.update(id(sub) for sub in value.modules())
            return None
        if isinstance(value, dict):
            return list(value.values())
        if isinstance(value, (list, tuple)):
            return list(value)
        if hasattr(value, "__dict__") and not isinstance(value, type):
            children = list(vars(value).values())
            components = getattr(value, "components", None)
            if isinstance(components, dict):
                children += list(components.values())
            return children
        return None

    walk_objects(root, depth, visit)
    return found


def module_bytes(module):
    return sum(tensor.numel() * tensor.element_size() for _o, _k, _n, tensor in _tensors(module))


class ModelHome:
    """All components of one loaded stage model, moved together."""

    def __init__(self, root, depth=4):
        self.components = find_modules(root, depth)
        self.homes = [HostHome(component) for component in self.components]
        self.where = "gpu"

    def weights_gb(self):
        return sum(module_bytes(component) for component in self.components) / 1024 ** 3

    def largest_gb(self):
        return max((module_bytes(component) for component in self.components), default=0) / 1024 ** 3

    def to_host(self):
        for home in self.homes:
            home.to_host()
        self.where = "host"
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def to_device(self, device):
        for home in self.homes:
            home.to_device(device)
        self.where = "gpu"


def free_failure(exc):
    """Release everything a failed CUDA call still holds through its exception: the traceback's frames
    keep the stage's activations alive, so they are cleared before torch's cache is emptied. Returns the
    error text."""
    text = str(exc)
    tb = exc.__traceback__
    if tb is not None:
        traceback.clear_frames(tb)
    exc.__traceback__ = None
    context = exc.__context__
    while context is not None:          # a chained exception holds frames too
        if context.__traceback__ is not None:
            traceback.clear_frames(context.__traceback__)
            context.__traceback__ = None
        context = context.__context__
    del tb, exc
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return text
