"""scripts/setup.sh's torch choice: CUDA build with an NVIDIA GPU, the CPU build without one, and
GEN3D_TORCH taken as pip arguments split into words. The script's own functions are run with
nvidia-smi and pip's answer stood in for, so nothing is installed."""

import os
import subprocess

from conftest import ROOT

SETUP = os.path.join(ROOT, "scripts", "setup.sh")


def choose(tmp_path, gpu, pip_version, gen3d_torch=None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    if gpu:
        smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100'\n")
        smi.chmod(0o755)
    script = r"""
set -euo pipefail
eval "$(sed -n '/^TORCH_VERSION=/p;/^CPU_INDEX=/p;/^choose_torch() {/,/^}/p' "$SETUP")"
pip_would_install() { echo "$FAKE_PIP_VERSION"; }
choose_torch
printf '%s\n' "${TORCH_ARGS[@]}"
echo "WHY $TORCH_WHY"
"""
    env = {"PATH": "%s:/usr/bin:/bin" % bin_dir, "SETUP": SETUP, "FAKE_PIP_VERSION": pip_version}
    if gen3d_torch is not None:
        env["GEN3D_TORCH"] = gen3d_torch
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    return lines[:-1], lines[-1]


def test_nvidia_gpu_gets_the_cuda_build(tmp_path):
    args, why = choose(tmp_path, gpu=True, pip_version="2.13.0")
    assert args == ["torch==2.13.0"] and "CUDA" in why


def test_no_gpu_takes_the_cpu_index(tmp_path):
    args, why = choose(tmp_path, gpu=False, pip_version="2.13.0")
    assert args == ["torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu"]
    assert "CPU build" in why


def test_no_gpu_keeps_a_locally_served_cpu_build(tmp_path):
    args, why = choose(tmp_path, gpu=False, pip_version="2.13.0+cpu")
    assert args == ["torch==2.13.0"] and "CPU build" in why


def test_gen3d_torch_is_split_into_pip_arguments(tmp_path):
    args, _ = choose(tmp_path, gpu=False, pip_version="2.13.0",
                     gen3d_torch="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128")
    assert args == ["torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cu128"]
