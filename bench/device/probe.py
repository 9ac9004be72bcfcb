"""One short look at the lent GPU machine: package versions, the Hunyuan module chains import, native builds."""
import importlib, json, os, subprocess, sys, sysconfig, time
out = {"python": sys.version.split()[0]}
for name in ("torch", "diffusers", "transformers", "accelerate", "pytorch_lightning", "omegaconf", "timm", "einops",
             "cv2", "skimage", "scipy", "trimesh", "xatlas", "pymeshlab", "basicsr", "realesrgan", "pygltflib",
             "safetensors", "huggingface_hub", "fast_simplification", "pybind11", "rembg", "onnxruntime"):
    try:
        module = importlib.import_module(name)
        out[name] = getattr(module, "__version__", "ok")
    except Exception as exc:
        out[name] = "FAIL %s: %s" % (type(exc).__name__, str(exc)[:200])
import torch
out["cuda"] = torch.version.cuda
out["gpu"] = torch.cuda.get_device_name(0)
out["nvcc"] = subprocess.run("nvcc --version | tail -2", shell=True, capture_output=True, text=True).stdout
out["has_memory_fraction_getter"] = hasattr(torch.cuda, "get_per_process_memory_fraction")
# host <-> device copy rates (what moving a model between GPU and host costs)
x = torch.empty(2 * 1024 ** 3, dtype=torch.uint8)
pinned = torch.empty_like(x).pin_memory()
for label, src in (("pageable", x), ("pinned", pinned)):
    torch.cuda.synchronize(); t = time.perf_counter(); g = src.to("cuda", non_blocking=True); torch.cuda.synchronize()
    up = 2 / (time.perf_counter() - t)
    t = time.perf_counter(); src.copy_(g); torch.cuda.synchronize(); down = 2 / (time.perf_counter() - t)
    out["copy_GBps_" + label] = [round(up, 1), round(down, 1)]
repo = os.environ["GEN3D_HUNYUAN21_REPO"]
sys.path[:0] = [os.path.join(repo, "hy3dshape"), os.path.join(repo, "hy3dpaint"), repo]
for name in ("hy3dshape.pipelines", "hy3dshape.postprocessors", "hy3dgen.shapegen", "hy3dgen.texgen"):
    try:
        importlib.import_module(name); out["import " + name] = "ok"
    except Exception as exc:
        out["import " + name] = "FAIL %s: %s" % (type(exc).__name__, str(exc)[:300])
print(json.dumps(out, indent=1))
