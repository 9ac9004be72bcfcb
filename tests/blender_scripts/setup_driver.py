"""Runs inside Blender (the bpy module) for tests/test_addon_setup.py: the preferences' set-up part.

    python setup_driver.py SCENARIO CONFIG.json REPORT.json

Installs the built extension, then drives the preferences as an artist would: the online-access gate,
choosing a bad and a good Python (the check runs from the field's update callback), "Install engine"
against a fake installer, and "Set up local backend" cancelled while it runs. Background Blender runs
no timers, so `pump` calls the add-on's poll itself, as its timer would.
"""

import json
import sys
import time
import traceback

import bpy

import addon_driver  # noqa: E402  (same folder: install() and the module helpers)


class TextRecorder:
    """A UILayout stand-in that keeps what the artist would read: labels, operators, progress texts."""

    def __init__(self, log):
        object.__setattr__(self, "log", log)

    def __getattr__(self, name):
        if not hasattr(bpy.types.UILayout, name) and name not in bpy.types.UILayout.bl_rna.functions:
            raise AttributeError("UILayout has no %r" % name)
        if name in ("row", "column", "box", "split"):
            return lambda *args, **kwargs: TextRecorder(self.log)
        return lambda *args, **kwargs: self.log.append([name, kwargs.get("text", "")])

    def __setattr__(self, name, value):
        assert name in bpy.types.UILayout.bl_rna.properties, name

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, name
        self.log.append(["prop", name])

    def operator(self, idname, **kwargs):
        module, name = idname.split(".")
        getattr(getattr(bpy.ops, module), name).get_rna_type()
        self.log.append(["operator", idname, kwargs.get("text", "")])
        return addon_driver.OperatorProps(getattr(getattr(bpy.ops, module), name).get_rna_type().properties)


def draw(setup_ui, prefs):
    log = []
    setup_ui.draw_local(TextRecorder(log), prefs)
    return log


def pump(setup_ui, until, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        setup_ui.poll_tasks()
        if until():
            setup_ui.poll_tasks()
            return True
        time.sleep(0.05)
    return False


def operator_result(call):
    try:
        return sorted(call())
    except RuntimeError as exc:
        return "refused: %s" % exc


def scenario_prefs(config, report):
    module = addon_driver.install("extension", config["zip"])
    setup_ui = addon_driver.submodule(module, "setup_ui")
    prefs_module = addon_driver.submodule(module, "prefs")
    engine_status = addon_driver.submodule(module, "engine_status")
    prefs = bpy.context.preferences.addons[module].preferences
    report["online_access"] = getattr(bpy.app, "online_access", None)
    report["env_dir"] = setup_ui.env_dir()

    # online access off (the bpy module's default): both buttons refuse and say why
    report["setup_offline"] = operator_result(lambda: bpy.ops.gen3d.setup_backend())
    report["install_offline"] = operator_result(lambda: bpy.ops.gen3d.install_engine(engine="hunyuan3d-2"))

    # no Python at all: the check line and the engine menu say what to do
    prefs.python_path = ""
    draw(setup_ui, prefs)                             # opening the preferences starts the check
    pump(setup_ui, lambda: setup_ui.checks.get(*setup_ui._key(setup_ui._settings())) is not None, 30)
    report["empty_check"] = setup_ui.check_line(setup_ui._settings())
    engine_status.status.refresh(setup_ui._settings())
    pump(setup_ui, lambda: not engine_status.status.checking(setup_ui._settings()), 30)
    report["empty_engine_status"] = engine_status.status.describe(setup_ui._settings(), "builtin")
    report["draw_offline"] = draw(setup_ui, prefs)

    # a Python that is not a Gen3D environment, then a good one, each checked when chosen
    prefs.python_path = config["bad_python"]
    report["bad_started"] = setup_ui.checks.running(config["bad_python"], "")
    pump(setup_ui, lambda: not setup_ui.checks.any_running(), 60)
    report["bad_check"] = setup_ui.check_line(setup_ui._settings())
    prefs.backend_dir = config["backend_dir"]
    prefs.python_path = config["good_python"]
    pump(setup_ui, lambda: not setup_ui.checks.any_running(), 120)
    report["good_check"] = setup_ui.check_line(setup_ui._settings())
    report["menu_after_check"] = engine_status.status.describe(setup_ui._settings(), "builtin")

    # online access on: Install engine runs the (fake) installer in the background
    prefs_module.online_access = lambda: True
    report["draw_online"] = draw(setup_ui, prefs)
    report["install_result"] = operator_result(lambda: bpy.ops.gen3d.install_engine(engine="hunyuan3d-2"))
    seen = []

    def record():
        task = setup_ui.tasks["hunyuan3d-2"]
        state = task.snapshot()
        if not seen or seen[-1][:2] != [state["fraction"], state["message"]]:
            seen.append([state["fraction"], state["message"], state["state"]])
        if state["fraction"] >= 0.5 and not task.finished and "draw_installing" not in report:
            report["draw_installing"] = draw(setup_ui, prefs)
            open(config["gate"], "w").close()          # let the fake installer finish
        return task.finished

    report["install_finished"] = pump(setup_ui, record, 60)
    report["install_progress"] = seen
    report["install_state"] = setup_ui.tasks["hunyuan3d-2"].snapshot()
    report["status_refreshed"] = engine_status.status.checking(setup_ui._settings()) or \
        engine_status.status.checked(setup_ui._settings())
    pump(setup_ui, lambda: not setup_ui.checks.any_running() and
         not engine_status.status.checking(setup_ui._settings()), 120)

    # Set up local backend, cancelled while it runs
    report["setup_result"] = operator_result(lambda: bpy.ops.gen3d.setup_backend())
    task = setup_ui.tasks["setup"]
    pump(setup_ui, lambda: task.snapshot()["fraction"] > 0.0 or task.finished, 30)
    report["setup_running"] = task.snapshot()
    report["draw_setup_running"] = draw(setup_ui, prefs)
    report["setup_again"] = operator_result(lambda: bpy.ops.gen3d.setup_backend())
    started = time.monotonic()
    bpy.ops.gen3d.cancel_setup_task(name="setup")
    report["cancel_finished"] = pump(setup_ui, lambda: task.finished, 20)
    report["cancel_s"] = time.monotonic() - started
    report["setup_state"] = task.snapshot()
    report["draw_cancelled"] = draw(setup_ui, prefs)
    report["python_after_cancel"] = prefs.python_path


SCENARIOS = {"prefs": scenario_prefs}


def main():
    scenario, config_path, report_path = sys.argv[1:4]
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    report = {"blender": bpy.app.version_string}
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        SCENARIOS[scenario](config, report)
    except Exception:
        report["exception"] = traceback.format_exc()
    with open(report_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, default=str)
    return 1 if "exception" in report else 0


if __name__ == "__main__":
    sys.exit(main())
