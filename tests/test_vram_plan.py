"""The GPU memory planner's decisions under fake budgets, the usable-memory measurement, pinned host homes,
and the out-of-memory path freeing the failed stage's frames."""

import gc
import types
import weakref

import pytest
import torch

from backend_local import offload, vram_plan as vp
from backend_local.engines import hunyuan_memory

# Hunyuan3D-2.1 as measured at full size: shape 6.9 GB of weights (DiT 6.1) + 2.5 GB working memory,
# paint 6.6 GB (UNet 3.9) + 6.5 GB.
SHAPE = vp.StageNeed("hunyuan3d-2.1/shape", 6.9, 6.1, 2.5)
PAINT = vp.StageNeed("hunyuan3d-2.1/texture", 6.6, 3.9, 6.5)
HOST_GB = 64


def plans(total_gb, host_gb=HOST_GB):
    return [(key, plan.run, dict(plan.moves), source) for key, plan, source in vp.plan_jobs([SHAPE, PAINT], total_gb, host_gb)]


def test_80_gb_keeps_both_models_resident_and_the_second_job_loads_nothing():
    steps = plans(80)
    assert [run for _k, run, _m, _s in steps] == [vp.RESIDENT] * 4
    assert steps[1][2] == {SHAPE.key: vp.KEEP}
    assert [source for *_rest, source in steps] == ["disk", "disk", "gpu", "gpu"]


def test_24_gb_keeps_both_measured_models_and_the_second_job_loads_nothing():
    steps = plans(24)
    assert [run for _k, run, _m, _s in steps] == [vp.RESIDENT] * 4
    assert steps[1][2] == {SHAPE.key: vp.KEEP}           # 9.4 + 13.1 GB fit in 24 (93 %)
    assert steps[2][2] == {PAINT.key: vp.KEEP}
    assert [source for *_rest, source in steps] == ["disk", "disk", "gpu", "gpu"]


def test_24_gb_with_a_larger_painter_moves_the_shape_model_to_host_ram_and_back():
    big = vp.StageNeed(PAINT.key, 7.5, 4.0, 8.0)
    steps = [(key, plan.run, dict(plan.moves), source) for key, plan, source in vp.plan_jobs([SHAPE, big], 24, HOST_GB)]
    assert steps[1][2] == {SHAPE.key: vp.TO_HOST}        # 9.4 + 15.5 GB do not fit
    assert [source for *_rest, source in steps] == ["disk", "disk", "host", "gpu"]


def test_16_gb_paints_resident_with_the_shape_model_in_host_ram():
    steps = plans(16)
    assert [run for _k, run, _m, _s in steps] == [vp.RESIDENT] * 4
    assert steps[1][2] == {SHAPE.key: vp.TO_HOST}
    assert "disk" not in [source for *_rest, source in steps[2:]]


def test_12_gb_paints_with_model_offload_and_reads_nothing_from_disk_twice():
    steps = plans(12)
    assert [run for _k, run, _m, _s in steps] == [vp.RESIDENT, vp.MODEL_OFFLOAD] * 2
    assert [source for *_rest, source in steps] == ["disk", "disk", "host", "host"]


def test_8_gb_falls_back_to_sequential_offload():
    steps = plans(8)
    assert steps[1][1] == vp.SEQUENTIAL_OFFLOAD


def test_small_host_ram_drops_instead_of_keeping():
    steps = plans(16, host_gb=10)        # 10 GB of host RAM minus the reserve cannot hold the 6.9 GB shape model
    assert steps[1][2] == {SHAPE.key: vp.DROP}
    assert steps[2][3] == "disk"


def test_models_needed_next_are_kept_first():
    small = vp.StageNeed("a/shape", 2.0, 2.0, 1.0)
    plan = vp.plan_stage(small, {"b/x": 9.0, "c/y": 9.0}, usable_gb=3.0, host_free_gb=64, upcoming=["c/y"])
    assert plan.moves == {"c/y": vp.KEEP, "b/x": vp.TO_HOST}


def test_surface_decoding_batch_is_upstreams_default_unless_set():
    from backend_local.engines import hunyuan_speed
    assert hunyuan_speed.shape_chunks({}) == hunyuan_speed.DEFAULT_CHUNKS == 8000
    assert hunyuan_speed.shape_chunks({"num_chunks": "200000"}) == 200000


class FakeCuda:
    def __init__(self, free, total, reserved, allocated, fraction=1.0):
        self.values = (free, total, reserved, allocated, fraction)

    def mem_get_info(self, device=None):
        return self.values[0], self.values[1]

    def memory_reserved(self, device=None):
        return self.values[2]

    def memory_allocated(self, device=None):
        return self.values[3]

    def get_per_process_memory_fraction(self, device=None):
        return self.values[4]


def test_usable_memory_counts_reusable_cache_and_respects_the_process_cap():
    gb = vp.GB
    fake = types.SimpleNamespace(cuda=FakeCuda(10 * gb, 80 * gb, 12 * gb, 4 * gb))
    assert vp.usable_bytes("cuda", fake) == 18 * gb           # 10 free + (12 - 4) cached but unused
    capped = types.SimpleNamespace(cuda=FakeCuda(70 * gb, 80 * gb, 12 * gb, 4 * gb, fraction=0.3))
    assert vp.usable_bytes("cuda", capped) == 20 * gb         # 24 GB cap - 4 GB allocated


def test_host_home_moves_a_module_and_reuses_its_buffers():
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    home = offload.ModelHome(types.SimpleNamespace(net=module))
    assert home.components == [module]
    assert home.weights_gb() == pytest.approx(sum(t.numel() * 4 for t in module.state_dict().values()
                                                   if t.dtype == torch.float32) / vp.GB + 8 / vp.GB, rel=0.5)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    home.to_host()
    home.to_device(torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_library_walks_find_modules_and_pipelines_once_within_their_depth():
    inner, outer, listed, component = (torch.nn.Linear(2, 2) for _ in range(4))
    holder = torch.nn.Sequential(inner)
    pipeline = types.SimpleNamespace(net=holder, again=inner, components={"extra": component})
    root = types.SimpleNamespace(pipeline=pipeline, parts={"a": outer, "b": [listed, holder]},
                                 kind=torch.nn.Linear, deep=types.SimpleNamespace(x=types.SimpleNamespace(
                                     y=types.SimpleNamespace(z=types.SimpleNamespace(m=torch.nn.Linear(1, 1))))))
    root.cycle = root
    assert offload.find_modules(root) == [holder, component, outer, listed]
    assert offload.find_modules(root, depth=2) == [holder, component, outer]
    found = hunyuan_memory._library_objects(root)
    assert found == [root, pipeline, root.deep, root.deep.x, root.deep.x.y]
    assert hunyuan_memory._library_objects(root, depth=0) == [root]


def test_oom_frees_the_failed_frames_before_measuring():
    kept = []

    def stage():
        activations = torch.ones(1000)
        kept.append(weakref.ref(activations))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    engine = types.SimpleNamespace(name="hunyuan3d-2.1", vram_gb={"shape": 10.0})
    from backend_local.engines import hunyuan_common as hc
    from shared.errors import OUT_OF_MEMORY, Gen3DError

    with pytest.raises(Gen3DError) as caught:
        with hc.gpu_stage(engine, "shape", torch.device("cpu")):
            stage()
    gc.collect()
    assert caught.value.code == OUT_OF_MEMORY
    assert kept[0]() is None            # the activations died with the cleared frames, not with the error
    assert caught.value.__context__ is None or caught.value.__context__.__traceback__ is None


def test_render_state_of_the_last_job_is_dropped():
    render = types.SimpleNamespace(tex=torch.ones(2), tex_mr=torch.ones(2), vtx_pos=torch.ones(3),
                                   camera_proj_mat=torch.eye(4))
    hunyuan_memory.clear_render_state(render)
    assert render.tex is None and render.tex_mr is None and render.vtx_pos is None
    assert render.camera_proj_mat is not None            # the renderer's own setup stays


def test_lean_construction_builds_on_meta_and_takes_the_checkpoint_tensors(tmp_path):
    source = torch.nn.Linear(8, 8).half()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict()}, path)
    with hunyuan_memory.lean_construction():
        model = torch.nn.Linear(8, 8)
        assert model.weight.device.type == "meta"
        model.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True)["model"])
    assert model.weight.dtype == torch.float16 and torch.equal(model.weight, source.weight)


def test_engine_menu_says_how_each_card_runs_hunyuan21():
    from backend_local.engines.hunyuan21 import Hunyuan21Engine

    engine = Hunyuan21Engine({})
    summary = vp.card_summary([engine.stage_need(stage) for stage in ("shape", "texture")])
    assert summary["80"] == summary["24"] == "shape resident, texture resident"
    assert summary["16"].endswith("waits in host RAM")
    assert "texture model offload" in summary["12"]


def test_offloaded_modules_get_their_inputs_on_the_execution_device_on_every_call():
    """accelerate's hook skips moving the inputs once the module is on the GPU (its pre_forward returns them
    as given), and a hooked encode runs the hook without the inputs; the 2.1 painter passes host tensors to
    both. After inputs_follow_offload every call's tensors reach the execution device (meta stands in for
    cuda), inside lists and dicts; a dict keeps its identity (the painter's per-job cache lives in one); a
    module without a hook keeps its methods."""

    class Vae(torch.nn.Module):
        def encode(self, images, extra=None):
            return images.device, [t.device for t in (extra or [])]

    class SkipsWhenResident:                             # accelerate's CpuOffload once the module is resident
        execution_device = torch.device("meta")

        def pre_forward(self, module, *args, **kwargs):
            return args, kwargs

    vae, plain = Vae(), Vae()
    vae._hf_hook = types.SimpleNamespace(hooks=[types.SimpleNamespace(), SkipsWhenResident()])
    vae._hf_hook.pre_forward = vae._hf_hook.hooks[1].pre_forward
    hunyuan_memory.inputs_follow_offload(vae)
    hunyuan_memory.inputs_follow_offload(vae)            # twice: wrapped once
    hunyuan_memory.inputs_follow_offload(plain)
    assert vae.encode(torch.zeros(2), extra=[torch.zeros(1)]) == (torch.device("meta"), [torch.device("meta")])
    assert plain.encode(torch.zeros(2)) == (torch.device("cpu"), [])
    cache = {"embeds": torch.zeros(3), "cache": {}}
    args, kwargs = vae._hf_hook.pre_forward(vae, torch.zeros(2), cached_condition=cache)
    assert args[0].device.type == "meta" and kwargs["cached_condition"] is cache
    assert cache["embeds"].device.type == "meta"
