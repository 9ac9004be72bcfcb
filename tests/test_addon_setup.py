"""The add-on's local-backend set-up without a terminal: "Set up local backend" into a scratch folder
against PyPI (a venv, torch's CPU build, the backend from the built zip's sources, the check line),
Cancel, the online-access gate, checking an existing Python (good and bad), and "Install engine"
reading the installer's JSON-lines progress from a real child process; then the same buttons inside
Blender (the bpy module) through the preferences."""

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "blender_scripts"))
import harness  # noqa: E402

from blender_addon import backend_setup, engine_install, python_check  # noqa: E402
from blender_addon.background_task import CANCELLED, DONE, FAILED, ONLINE_ACCESS_OFF, online_gate  # noqa: E402
from shared.version import __version__  # noqa: E402

FAKE_INSTALL = os.path.join(harness.SCRIPTS, "fake_install.py")
SETUP_DRIVER = os.path.join(harness.SCRIPTS, "setup_driver.py")
# download.pytorch.org cannot be reached from this machine; PyPI and this machine's wheel folder
# (pip's find-links) have the same torch==2.13.0+cpu, and pip prefers the +cpu build there.
TEST_TORCH_INDEX = os.environ.get("GEN3D_TEST_TORCH_INDEX", "https://pypi.org/simple")


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    return harness.build_zips(str(tmp_path_factory.mktemp("dist")))


@pytest.fixture(scope="module")
def unpacked_addon(zips, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("addon"))
    with zipfile.ZipFile(zips[0]) as archive:
        archive.extractall(folder)
    return folder


def wait(task, timeout):
    task.wait(timeout)
    assert task.finished, "still running after %s s: %s" % (timeout, task.snapshot())
    return task.snapshot()


# the zip carries the backend -----------------------------------------------------------------------
def test_zip_carries_the_backend_sources(zips, unpacked_addon):
    with zipfile.ZipFile(zips[1]) as archive:
        legacy = set(archive.namelist())
    assert {"gen3d/backend_source/pyproject.toml", "gen3d/backend_source/backend_local/cli.py",
            "gen3d/backend_source/shared/version.py"} <= legacy
    source = backend_setup.backend_source_dir(unpacked_addon, source_root=os.path.join(unpacked_addon, "nowhere"))
    assert source == os.path.join(unpacked_addon, "backend_source")
    for relative in ("backend_local/worker.py", "backend_local/engines/registry.py", "shared/request.py",
                     "pyproject.toml", "README.md"):
        with open(os.path.join(harness.ROOT, relative), "rb") as a, open(os.path.join(source, relative), "rb") as b:
            assert a.read() == b.read(), relative


def test_environment_lives_beside_blenders_version_folders(tmp_path):
    assert backend_setup.env_dir_for("/home/a/.config/blender/4.2") == "/home/a/.config/blender/gen3d/backend-env"
    assert backend_setup.env_dir_for("/home/a/.config/blender/5.2/") == "/home/a/.config/blender/gen3d/backend-env"
    assert backend_setup.env_dir_for(str(tmp_path)) == str(tmp_path / "gen3d" / "backend-env")


def test_torch_build_follows_the_nvidia_driver():
    assert backend_setup.torch_install_args(False, "linux") == (
        ["torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu"],
        "torch for the CPU (no NVIDIA driver found)")
    assert backend_setup.torch_install_args(True, "linux")[0] == ["torch==2.13.0"]          # PyPI's CUDA build
    assert "--index-url" in backend_setup.torch_install_args(True, "win32")[0]
    assert backend_setup.torch_install_args(False, "darwin")[0] == ["torch==2.13.0"]
    assert backend_setup.has_nvidia_driver(lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    assert not backend_setup.has_nvidia_driver(lambda name: None)


def test_pip_output_moves_the_bar_and_keeps_errors():
    parser = backend_setup.PipOutput()
    fractions = [parser.feed(line)[0] for line in ("Collecting numpy>=1.24", "  Downloading numpy-2.3.whl (16 MB)",
                                                   "Collecting scipy")]
    assert 0 < fractions[0] < fractions[1] < fractions[2] < backend_setup.PipOutput.RESOLVE_SHARE
    parser = backend_setup.PipOutput()
    collected = parser.feed("Collecting torch==2.13.0")[0]
    downloading = parser.feed("  Downloading torch-2.13.0-cp311-manylinux_2_28_x86_64.whl (900 MB)")[0]
    quarter, message = parser.feed("Progress 225000000 of 900000000")
    assert message == "downloading torch-2.13.0-cp311-manylinux_2_28_x86_64.whl: 25%"
    whole = parser.feed("Progress 900000000 of 900000000")[0]
    after = parser.feed("Collecting filelock")[0]
    assert collected < downloading < quarter < whole == pytest.approx(after)    # a big file moves the bar
    assert quarter == pytest.approx(downloading + 0.25 * (after - downloading))
    assert parser.feed("Installing collected packages: numpy, scipy") == (0.75, "installing numpy, scipy")
    assert parser.feed("Successfully installed numpy-2.3 scipy-1.16")[0] == 1.0
    assert parser.feed("ERROR: No matching distribution found for torch==9") == (None, None)
    assert parser.errors == ["ERROR: No matching distribution found for torch==9"]


# online access ------------------------------------------------------------------------------------
def test_online_access_gate():
    assert online_gate(True) == (True, "")
    allowed, why = online_gate(False)
    assert not allowed and why == ONLINE_ACCESS_OFF and "Allow Online Access" in why


# checking a Python --------------------------------------------------------------------------------
def test_check_of_a_good_python():
    result = python_check.check_python(harness.VENV_PYTHON, harness.ROOT)
    assert result.ok, result.problem
    assert result.gen3d == __version__ and result.torch.startswith("2.")
    assert "builtin" in result.available_engines()
    assert result.summary().startswith("Gen3D %s, torch %s, CUDA: no, engines: builtin" % (__version__, result.torch))
    assert "not installed: hunyuan3d-2.1, hunyuan3d-2, hunyuan3d-2mini, hunyuan3d-2mv" in result.summary()


def test_check_of_bad_pythons(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    bare = shutil.which("python3.11") or shutil.which("python3")
    result = python_check.check_python(bare)                          # a Python without Gen3D
    assert not result.ok
    assert "has no working Gen3D backend (ModuleNotFoundError: No module named" in result.problem
    assert python_check.SET_UP_HINT in result.problem
    assert result.summary() == result.problem
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\necho 'this is not python' >&2\nexit 1\n")
    script.chmod(0o755)
    result = python_check.check_python(str(script))
    assert not result.ok and result.problem.startswith("'%s' is not a working Python (this is not python)" % script)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert "is not an executable program" in python_check.check_python(str(plain)).problem
    assert "does not exist" in python_check.check_python(str(tmp_path / "missing")).problem
    empty = python_check.check_python("").problem
    assert empty.startswith("No Python is set for the local backend. Press \"Set up local backend\"")
    assert "Errno" not in empty


def test_engine_status_says_what_to_do_without_a_python():
    from blender_addon import engine_status
    from blender_addon.settings import BackendSettings
    status = engine_status.EngineStatus()
    settings = BackendSettings(python="")
    status.refresh(settings).join(10)
    available, text = status.describe(settings, "builtin")
    assert available is None and text == engine_status.NO_PYTHON and "Errno" not in text


def test_check_cache_runs_in_the_background():
    calls = []

    def slow_check(python, backend_dir):
        calls.append(python)
        time.sleep(0.3)
        return python_check.CheckResult(python=python, ok=True, gen3d="0.1.0", torch="2.13.0")

    cache = python_check.CheckCache(check=slow_check)
    done = []
    thread = cache.start("/x/python", "", on_done=done.append)
    assert cache.running("/x/python") and cache.start("/x/python") is None        # no second check at once
    assert cache.get("/x/python") is None
    thread.join(5)
    assert not cache.any_running() and cache.get("/x/python").ok and done[0].python == "/x/python"
    assert calls == ["/x/python"]


# Install engine against a fake installer --------------------------------------------------------
def fake_backend(folder, real=False):
    """A folder whose backend_local's `install` is fake_install.py (with real=True, everything else is
    this checkout's real backend)."""
    package = os.path.join(folder, "backend_local")
    if real:
        shutil.copytree(os.path.join(harness.ROOT, "backend_local"), package,
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(os.path.join(harness.ROOT, "shared"), os.path.join(folder, "shared"),
                        ignore=shutil.ignore_patterns("__pycache__"))
    else:
        os.makedirs(package)
        open(os.path.join(package, "__init__.py"), "w").close()
    shutil.copyfile(FAKE_INSTALL, os.path.join(package, "__main__.py"))
    return folder


def test_parse_install_events():
    assert engine_install.install_command("/p/python", "hunyuan3d-2.1") == [
        "/p/python", "-u", "-m", "backend_local", "install", "hunyuan3d-2.1", "--json-progress"]
    event = engine_install.parse_event('{"event": "progress", "stage": "weights", "fraction": 1.7, "message": "m"}')
    assert event["fraction"] == 1.0
    assert engine_install.progress_text(event) == "downloading weights: m"
    assert engine_install.parse_event('{"event": "progress", "fraction": "x"}')["fraction"] == 0.0
    assert engine_install.parse_event('{"event": "done"}') == {"event": "done"}
    for noise in ("Collecting hy3dgen", "{not json", '{"event": "ready"}', "[1, 2]", '"event"', ""):
        assert engine_install.parse_event(noise) is None, noise
    error = engine_install.parse_event('{"event": "error", "code": "UNAUTHORIZED", "message": "Accept the licence."}')
    assert engine_install.error_text("hunyuan3d-2.1", error) == \
        "Installing hunyuan3d-2.1 failed (UNAUTHORIZED): Accept the licence."


def test_install_engine_progress_from_a_real_child(tmp_path, monkeypatch):
    backend = fake_backend(str(tmp_path / "backend"))
    gate = str(tmp_path / "gate")
    monkeypatch.setenv("FAKE_INSTALL_MODE", "ok")
    monkeypatch.setenv("FAKE_GATE", gate)
    task = engine_install.EngineInstallTask(sys.executable, "hunyuan3d-2", str(tmp_path / "install.log"),
                                            backend).start()
    deadline = time.monotonic() + 30
    while task.snapshot()["fraction"] < 0.5 and time.monotonic() < deadline:
        time.sleep(0.02)
    middle = task.snapshot()
    assert middle["state"] == "RUNNING" and middle["fraction"] == 0.5
    assert middle["message"] == "downloading weights: model.safetensors 1.2 of 2.4 GB"
    open(gate, "w").close()
    final = wait(task, 30)
    assert final["state"] == DONE and final["fraction"] == 1.0
    assert final["message"] == "hunyuan3d-2 is installed and available"
    assert task.done_event == {"event": "done", "engine": "hunyuan3d-2",
                               "message": "hunyuan3d-2 is installed and available"}
    log = open(task.log_path, encoding="utf-8").read()
    assert "Collecting hy3dgen==2.0.2" in log and "-m backend_local install hunyuan3d-2 --json-progress" in log


@pytest.mark.parametrize("mode, expected", [
    ("error", "Installing hunyuan3d-2.1 failed (ENGINE_UNAVAILABLE): nvcc was not found, so custom_rasterizer "
              "cannot be built. Install the CUDA toolkit 12.x (nvcc on PATH) and press Install engine again."),
    ("crash", "Installing hunyuan3d-2.1 stopped (exit code 1) without finishing: "),
    ("old", "Installing hunyuan3d-2.1 failed: "),
])
def test_install_engine_failures_are_shown_verbatim(mode, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_INSTALL_MODE", mode)
    monkeypatch.delenv("FAKE_GATE", raising=False)
    task = engine_install.EngineInstallTask(sys.executable, "hunyuan3d-2.1", str(tmp_path / "install.log"),
                                            fake_backend(str(tmp_path / "backend"))).start()
    final = wait(task, 30)
    assert final["state"] == FAILED
    assert final["error"].startswith(expected), final["error"]
    if mode == "crash":
        assert "RuntimeError: disk I/O error" in final["error"] and task.log_path in final["error"]
    if mode == "old":
        assert "invalid choice: 'install'" in final["error"] and engine_install.UPDATE_HINT in final["error"]


def test_cancel_stops_the_installer_and_its_children(tmp_path, monkeypatch):
    pid_file = str(tmp_path / "child.pid")
    monkeypatch.setenv("FAKE_INSTALL_MODE", "hang")
    monkeypatch.setenv("FAKE_CHILD_PID", pid_file)
    monkeypatch.setenv("FAKE_GATE", str(tmp_path / "open-gate"))
    open(str(tmp_path / "open-gate"), "w").close()
    task = engine_install.EngineInstallTask(sys.executable, "hunyuan3d-2", str(tmp_path / "install.log"),
                                            fake_backend(str(tmp_path / "backend"))).start()
    deadline = time.monotonic() + 30
    while not os.path.exists(pid_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    child = int(open(pid_file).read())
    started = time.monotonic()
    task.cancel()
    final = wait(task, 10)
    assert final["state"] == CANCELLED and final["message"] == "cancelled" and not final["error"]
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the installer's child %d survived Cancel" % child


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# the set-up itself ----------------------------------------------------------------------------------
def test_setup_reports_a_missing_python_clearly(tmp_path):
    task = backend_setup.SetupTask(str(tmp_path / "env"), harness.ROOT, str(tmp_path / "setup.log"),
                                   candidates=[str(tmp_path / "no-python")]).start()
    final = wait(task, 30)
    assert final["state"] == FAILED
    assert final["error"].startswith("No Python 3.11 or newer with the venv module was found (tried: ")
    assert "python3-venv" in final["error"]


def test_setup_cancel_while_creating_the_environment(tmp_path, unpacked_addon):
    task = backend_setup.SetupTask(str(tmp_path / "env"), backend_setup.backend_source_dir(unpacked_addon),
                                   str(tmp_path / "setup.log"),
                                   candidates=backend_setup.base_python_candidates(sys.executable)).start()
    deadline = time.monotonic() + 30
    while "creating the environment" not in task.snapshot()["message"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    started = time.monotonic()
    task.cancel()
    final = wait(task, 15)
    assert final["state"] == CANCELLED, final
    assert time.monotonic() - started < 6
    assert open(task.log_path, encoding="utf-8").read().rstrip().endswith("CANCELLED: cancelled")


def test_setup_against_pypi_in_a_scratch_folder(tmp_path, unpacked_addon, monkeypatch):
    """The operator's code path end to end: a venv, torch's CPU build, the backend from the zip."""
    monkeypatch.delenv("PYTHONPATH", raising=False)    # the check must find what was installed, not this checkout
    env_dir = backend_setup.env_dir_for(str(tmp_path / "blender" / "4.5"))
    source = backend_setup.backend_source_dir(unpacked_addon)
    task = backend_setup.SetupTask(env_dir, source, str(tmp_path / "setup.log"),
                                   candidates=backend_setup.base_python_candidates(sys.executable),
                                   nvidia=False, torch_cpu_index=TEST_TORCH_INDEX)
    started = time.monotonic()
    seen = []
    task.start()
    while not task.finished and time.monotonic() - started < 1500:
        state = task.snapshot()
        if not seen or seen[-1] != state["fraction"]:
            seen.append(state["fraction"])
        time.sleep(0.2)
    final = wait(task, 1)
    elapsed = time.monotonic() - started
    print("set-up against PyPI took %.0f s" % elapsed)
    assert final["state"] == DONE, final["error"]
    assert env_dir == str(tmp_path / "blender" / "gen3d" / "backend-env")
    assert task.python == os.path.join(env_dir, "bin", "python") and os.path.isfile(task.python)
    assert seen == sorted(seen) and len(seen) > 10 and final["fraction"] == 1.0     # the bar only moves forward
    result = task.result
    assert result.ok and result.gen3d == __version__ and result.torch.endswith("+cpu")
    assert final["message"] == result.summary()
    assert result.summary().startswith("Gen3D %s, torch %s, CUDA: no, engines: builtin" % (__version__, result.torch))
    # installed (not linked) from the zip's copy; the add-on folder gets no build leftovers
    where = subprocess.run([task.python, "-c", "import backend_local, shared; print(backend_local.__file__)"],
                           capture_output=True, text=True, cwd=str(tmp_path), env=dict(os.environ)).stdout.strip()
    assert where.startswith(os.path.join(env_dir, "lib")), where
    assert sorted(os.listdir(source)) == ["README.md", "backend_local", "pyproject.toml", "shared"]
    assert not os.path.exists(os.path.join(env_dir, backend_setup.BUILD_COPY))
    log = open(task.log_path, encoding="utf-8").read()
    assert "install --disable-pip-version-check torch==2.13.0 --index-url %s" % TEST_TORCH_INDEX in log
    assert "Successfully installed" in log and "DONE: " in log
    # a second run keeps the environment and torch, and updates the backend
    again = backend_setup.SetupTask(env_dir, source, str(tmp_path / "setup2.log"), nvidia=False,
                                    torch_cpu_index=TEST_TORCH_INDEX).start()
    assert wait(again, 900)["state"] == DONE
    log = open(again.log_path, encoding="utf-8").read()
    assert "keeping the environment" in log and "keeping torch 2.13.0+cpu" in log and "-m venv" not in log


# inside Blender -----------------------------------------------------------------------------------
def test_preferences_in_blender(zips, tmp_path):
    bad = tmp_path / "bad-python"
    bad.write_text("#!/bin/sh\necho 'not a python' >&2\nexit 3\n")
    bad.chmod(0o755)
    config = {"zip": zips[0], "bad_python": str(bad), "good_python": harness.VENV_PYTHON,
              "backend_dir": fake_backend(str(tmp_path / "backend"), real=True), "gate": str(tmp_path / "gate")}
    config_path, report_path = str(tmp_path / "config.json"), str(tmp_path / "report.json")
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    env = harness.isolated_env(str(tmp_path / "home"))
    env["FAKE_INSTALL_MODE"], env["FAKE_GATE"] = "ok", config["gate"]
    proc = subprocess.run([harness.VENV_PYTHON, SETUP_DRIVER, "prefs", config_path, report_path], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert os.path.isfile(report_path), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.load(open(report_path, encoding="utf-8"))
    assert "exception" not in report, report["exception"] + proc.stderr[-3000:]

    # the bpy module runs with online access off: both buttons refuse, saying how to allow it
    assert report["online_access"] is False
    for key in ("setup_offline", "install_offline"):
        assert report[key].startswith("refused: ") and ONLINE_ACCESS_OFF in report[key], report[key]
    labels = [entry[1] for entry in report["draw_offline"] if entry[0] == "label"]
    assert any("Blender's online access is off" in text for text in labels), labels
    assert report["env_dir"] == str(tmp_path / "home" / "gen3d" / "backend-env")

    assert report["empty_check"][0] == "ERROR" and report["empty_check"][1].startswith("No Python is set")
    assert report["empty_engine_status"][1].startswith("No Python is set") and \
        "Errno" not in report["empty_engine_status"][1]
    assert report["bad_started"]                      # the field's update callback started the check
    assert report["bad_check"] == ["ERROR", "'%s' is not a working Python (not a python). %s"
                                   % (bad, python_check.SET_UP_HINT)]
    assert report["choose_result"] == ["FINISHED"] and report["hidden_files_unchanged"]   # the folder button
    assert report["good_check"][0] == "CHECKMARK"
    assert report["good_check"][1].startswith("Gen3D %s, torch 2." % __version__)
    assert "engines: builtin; not installed: hunyuan3d-2.1, hunyuan3d-2, hunyuan3d-2mini, hunyuan3d-2mv" in report["good_check"][1]
    assert report["menu_after_check"] == [True, "builtin can run here"]

    install_buttons = [entry for entry in report["draw_online"] if entry[:2] == ["operator", "gen3d.install_engine"]]
    assert len(install_buttons) == 4
    assert report["install_result"] == ["FINISHED"] and report["install_finished"]
    fractions = [entry[0] for entry in report["install_progress"]]
    assert fractions == sorted(fractions) and 0.5 in fractions and fractions[-1] == 1.0   # 0.5 waits for the gate
    assert ["progress", "downloading weights: model.safetensors 1.2 of 2.4 GB (50%)"] in report["draw_installing"]
    assert report["install_state"]["state"] == DONE
    assert report["install_state"]["message"] == "hunyuan3d-2 is installed and available"
    assert report["status_refreshed"]

    assert report["setup_result"] == ["FINISHED"]
    assert report["setup_running"]["state"] == "RUNNING"
    assert any(entry[0] == "progress" for entry in report["draw_setup_running"])
    assert report["setup_again"].startswith("refused")           # one set-up at a time
    assert report["cancel_finished"] and report["cancel_s"] < 6
    assert report["setup_state"]["state"] == CANCELLED
    assert ["label", "Cancelled. Press the button again to continue."] in report["draw_cancelled"]
    assert report["python_after_cancel"] == harness.VENV_PYTHON
    assert os.path.isfile(str(tmp_path / "home" / "gen3d" / "setup.log"))
