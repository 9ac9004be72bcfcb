"""Add-on preferences (Edit > Preferences > Add-ons > Gen3D) and their conversion to plain settings.

bl_idname is __package__, which is "gen3d" as a legacy add-on and "bl_ext.<repo>.gen3d" as an
extension, so the same code finds its preferences either way.
"""

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from .settings import ENV_PYTHON, LOCAL, REMOTE, BackendSettings, ImportSettings, resolve_backend_dir

ADDON_ID = __package__


def default_output_dir():
    """Beside the saved .blend (//gen3d/), else Gen3D in the user's Documents (or home) folder: visible,
    and the same for every Blender version."""
    if bpy.data.filepath:
        return os.path.join(os.path.dirname(bpy.data.filepath), "gen3d")
    home = os.path.expanduser("~")
    documents = os.path.join(home, "Documents")
    return os.path.join(documents if os.path.isdir(documents) else home, "Gen3D")


def _python_changed(self, context):
    from . import setup_ui
    setup_ui.python_changed(self, context)


class GEN3D_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend: EnumProperty(
        name="Backend",
        items=[(LOCAL, "Local", "Run jobs in a worker process on this computer (GPU if it has one)"),
               (REMOTE, "Remote", "Send jobs to a RunPod serverless endpoint or a self-hosted Gen3D server")],
        default=LOCAL)
    # No FILE_PATH subtype: its file browser hides .venv; setup_ui's Choose Python button shows it.
    python_path: StringProperty(
        name="Python", default=os.environ.get(ENV_PYTHON, ""), update=_python_changed,
        description="Python executable of the environment that has Gen3D's backend (torch etc.), e.g. "
                    "<project>/.venv/bin/python; \"Set up local backend\" fills it in. Empty: $GEN3D_PYTHON, "
                    "else the project's .venv")
    backend_dir: StringProperty(
        name="Backend folder", subtype="DIR_PATH", default="",
        description="The Gen3D project folder (holding backend_local/). Empty: $GEN3D_BACKEND_DIR, else the "
                    "project this add-on was loaded from, else whatever the Python has installed")
    device: EnumProperty(
        name="Device",
        items=[("auto", "Auto", "The GPU when there is one, else the CPU"),
               ("cuda", "GPU (CUDA)", "An NVIDIA GPU"),
               ("cpu", "CPU", "The processor (slow for large models)")],
        default="auto")
    keep_models_loaded: BoolProperty(
        name="Keep models loaded", default=True,
        description="Keep models in memory between jobs (faster); off frees memory after each stage")
    remote_url: StringProperty(
        name="Endpoint URL", default="",
        description="https://api.runpod.ai/v2/<endpoint id>, or the address of a self-hosted Gen3D server")
    api_key: StringProperty(name="API key", subtype="PASSWORD", default="",
                            description="Sent as a bearer token to the endpoint")
    output_dir: StringProperty(
        name="Output folder", subtype="DIR_PATH", default="",
        description="Where job folders go. Empty: gen3d/ beside the saved .blend, else Documents/Gen3D")
    place_at_cursor: BoolProperty(name="Place at 3D cursor", default=True,
                                  description="Put new objects at the 3D cursor (else at the world origin)")
    target_size: FloatProperty(
        name="Target size", default=1.0, min=0.0, soft_max=50.0, subtype="DISTANCE",
        description="Largest side of an imported object; 0 keeps the generated size (2 units)")
    pack_textures: BoolProperty(
        name="Pack textures", default=False,
        description="Store the texture maps inside the .blend (it no longer needs the job folder)")
    ao_into_base_color: BoolProperty(
        name="AO into base colour", default=False,
        description="Multiply ambient occlusion into the base colour (the AO map is always kept as a node)")

    def draw(self, context):
        from . import session, setup_ui
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "backend", expand=True)
        box = layout.box()
        if self.backend == LOCAL:
            setup_ui.draw_local(box, self)
            box.prop(self, "backend_dir")
            if not self.backend_dir:
                box.label(text="Using: %s" % (resolve_backend_dir("") or "the Python's installed Gen3D"),
                          icon="INFO")
            box.prop(self, "device")
            box.prop(self, "keep_models_loaded")
            row = box.row()
            row.label(text=session.client_status(backend_settings(self)) or "worker not started")
            row.operator("gen3d.stop_worker", icon="CANCEL")
        else:
            box.prop(self, "remote_url")
            box.prop(self, "api_key")
        layout.prop(self, "output_dir")
        if not self.output_dir:
            layout.label(text="Using: %s" % default_output_dir(), icon="INFO")
        col = layout.column(heading="Import")
        col.prop(self, "place_at_cursor")
        col.prop(self, "target_size")
        col.prop(self, "ao_into_base_color")
        col.prop(self, "pack_textures")


def online_access():
    return getattr(bpy.app, "online_access", True)      # the switch exists from Blender 4.2


def get_prefs(context=None):
    """The preferences, or None when the add-on is not enabled through Blender (e.g. batch from source)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def backend_settings(prefs=None):
    """BackendSettings from the preferences (defaults when there are none), resolved."""
    if prefs is None:
        return BackendSettings(output_dir=default_output_dir(), online_access=online_access()).resolve()
    return BackendSettings(
        backend=prefs.backend, python=bpy.path.abspath(prefs.python_path) if prefs.python_path else "",
        backend_dir=bpy.path.abspath(prefs.backend_dir) if prefs.backend_dir else "", device=prefs.device,
        keep_models_loaded=prefs.keep_models_loaded, remote_url=prefs.remote_url.strip(),
        api_key=prefs.api_key.strip(),
        output_dir=bpy.path.abspath(prefs.output_dir) if prefs.output_dir else default_output_dir(),
        online_access=online_access(),
    ).resolve()


def import_settings(prefs=None):
    if prefs is None:
        return ImportSettings()
    return ImportSettings(place_at_cursor=prefs.place_at_cursor, target_size=prefs.target_size,
                          ao_into_base_color=prefs.ao_into_base_color, pack_textures=prefs.pack_textures)


classes = (GEN3D_AP_preferences,)
