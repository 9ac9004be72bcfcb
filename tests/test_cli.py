"""The CLI as a newcomer meets it: bad --out, cancel by signal, re-running into a result, --help and
bad numbers. Each failure is one clear line (error JSON or argparse's message), never a traceback."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shared.manifest import read_manifest
from shared.request import NUMERIC_FIELDS
from backend_local.cli import default_text

from conftest import ROOT, data, run_cli

TINY = ("--face-count", "2000", "--texture-size", "256", "--quiet")


def last_error(result):
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stderr.strip().splitlines()[-1])["error"]


def test_out_under_a_file_is_invalid_input(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    result = run_cli("generate", data("sphere", "input.png"), "--out", str(blocker / "result"), *TINY)
    assert result.returncode == 2
    error = last_error(result)
    assert error["code"] == "INVALID_INPUT" and "is a file" in error["message"]
    assert blocker.read_text() == "x"


def test_out_where_nothing_can_be_written_is_invalid_input():
    # /sys refuses new folders even to root (a permission check alone would say yes to root)
    result = run_cli("generate", data("sphere", "input.png"), "--out", "/sys/gen3d-result", *TINY)
    assert result.returncode == 2
    error = last_error(result)
    assert error["code"] == "INVALID_INPUT" and "Cannot write" in error["message"]


def test_existing_result_is_kept_unless_overwrite(tmp_path):
    out = str(tmp_path / "torus")
    first = run_cli("generate", data("torus", "input.png"), "--out", out, *TINY)
    assert first.returncode == 0, first.stderr
    before = read_manifest(out)
    again = run_cli("generate", data("torus", "input.png"), "--out", out, *TINY)
    assert again.returncode == 2
    error = last_error(again)
    assert error["code"] == "INVALID_INPUT" and "--overwrite" in error["message"]
    assert read_manifest(out) == before
    replaced = run_cli("generate", data("torus", "input.png"), "--out", out, "--overwrite", *TINY)
    assert replaced.returncode == 0, replaced.stderr
    assert read_manifest(out)["job_id"] != before["job_id"]
    assert sorted(os.listdir(tmp_path)) == ["torus"]        # no staging or .old folder left


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_cancels_cleanly(tmp_path, signum, code):
    out = tmp_path / "job"
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "backend_local", "generate", data("mug", "input.png"),
                             "--out", str(out), "--face-count", "100000", "--texture-size", "2048"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until the job is under way (its first shape progress line), then signal it
    deadline = time.time() + 120
    lines = []
    while time.time() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if " shape " in line or not line:
            break
    assert any(" shape " in line for line in lines), "".join(lines)
    proc.send_signal(signum)
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(lines) + rest
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    error = json.loads(stderr.strip().splitlines()[-1])["error"]
    assert error["code"] == "CANCELLED" and signal.Signals(signum).name in error["message"]
    assert os.listdir(tmp_path) == []                        # no result and no .partial-* folder


def test_help_shows_description_default_and_range_from_the_contract():
    result = run_cli("generate", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())                   # argparse wraps lines
    for option, name in (("--face-count", "face_count"), ("--texture-size", "texture_size"),
                         ("--octree-resolution", "octree_resolution"), ("--steps", "num_inference_steps"),
                         ("--guidance-scale", "guidance_scale"), ("--seed", "seed")):
        spec = NUMERIC_FIELDS[name]
        assert "%s N %s (default %s; %s)" % (option, " ".join(spec.help.split()), default_text(spec),
                                              spec.describe_range()) in text, option
    assert "--overwrite" in text and "--no-texture untextured mesh only" in text


def test_a_bad_number_says_what_is_allowed():
    result = run_cli("generate", data("sphere", "input.png"), "--out", "/tmp/unused", "--face-count", "lots")
    assert result.returncode == 2
    assert "argument --face-count: must be a whole number between 1000 and 200000, got 'lots'" in result.stderr
    assert "_positive_int" not in result.stderr and "Traceback" not in result.stderr
    out_of_range = run_cli("generate", data("sphere", "input.png"), "--out", "/tmp/unused", "--seed", "-1")
    assert out_of_range.returncode == 2
    assert "'seed' must be between 0 and 4294967295" in last_error(out_of_range)["message"]
