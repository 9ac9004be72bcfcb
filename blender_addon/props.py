"""What the sidebar edits (scene.gen3d): the image, the request fields, and this file's job list."""

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from .contract import request as contract_request
from .quality import CUSTOM, DEFAULT_TEXTURE_SIZE, NUMERIC, PRESETS, TEXTURE_SIZES, engine_label, matching_preset

AUTO = "AUTO"

JOB_STATUSES = [
    ("QUEUED", "Queued", "Waiting for the backend", "SORTTIME", 0),
    ("RUNNING", "Running", "Being generated", "PLAY", 1),
    ("COMPLETED", "Done", "Generated and imported", "CHECKMARK", 2),
    ("FAILED", "Failed", "Generation or import failed", "ERROR", 3),
    ("CANCELLED", "Cancelled", "Cancelled", "CANCEL", 4),
]
STATUS_ICONS = {identifier: icon for identifier, _name, _desc, icon, _n in JOB_STATUSES}


_applying = []                       # non-empty while a preset writes its fields


def _apply_preset(self, _context):
    if self.preset not in PRESETS:       # "Custom": nothing to apply
        return
    _applying.append(True)
    try:
        for key, value in PRESETS[self.preset].items():
            setattr(self, key, str(value) if key == "texture_size" else value)
    finally:
        _applying.pop()


def _field_edited(self, _context):
    """A preset's field edited by hand: the preset button that no longer applies is released."""
    if _applying:
        return
    preset = matching_preset({key: int(getattr(self, key)) for key in PRESETS["BALANCED"]})
    if self.preset != preset:
        self.preset = preset


def _clear_stale_message(self, _context):
    # A message about the previous choice (a missing or unreadable image) no longer applies.
    if self.message and self.message_source == "generate":
        self.message = ""


def _ensure_preview(self, context):
    _clear_stale_message(self, context)
    if self.image is not None:
        self.image.preview_ensure()      # the sidebar shows image.preview; it may not exist yet


def _engine_items(names, auto=None):
    items = [(AUTO, "Automatic", auto)] if auto else []
    return items + [(name, engine_label(name), "Engine id: %s" % name) for name in names]


class GEN3D_PG_job(bpy.types.PropertyGroup):
    """One row of this file's job list (saved with the .blend)."""

    job_id: StringProperty()
    name: StringProperty()
    status: EnumProperty(items=JOB_STATUSES, default="QUEUED")
    stage: StringProperty()
    progress: FloatProperty(min=0.0, max=1.0, subtype="FACTOR")
    message: StringProperty()
    folder: StringProperty(subtype="DIR_PATH")
    object_name: StringProperty()
    created: StringProperty()
    # meta.json's warnings (an unsure background removal): the result is there but may be wrong
    warning: StringProperty()


class GEN3D_PG_scene(bpy.types.PropertyGroup):
    source: EnumProperty(name="Source", items=[("FILE", "File", "An image file on disk"),
                                               ("IMAGE", "Loaded image", "An image already in this .blend")],
                         default="FILE", update=_clear_stale_message)
    filepath: StringProperty(name="Image", subtype="FILE_PATH", description="The photo or render to turn into 3D",
                             update=_clear_stale_message)
    image: PointerProperty(name="Image", type=bpy.types.Image, update=_ensure_preview)
    # Optional extra views of the same object (camera circled to the object's right, back, left).
    view_right: StringProperty(name="Right", subtype="FILE_PATH", description="Optional: the object seen from its right (camera at +X)")
    view_back: StringProperty(name="Back", subtype="FILE_PATH", description="Optional: the object seen from behind")
    view_left: StringProperty(name="Left", subtype="FILE_PATH", description="Optional: the object seen from its left (camera at -X)")

    preset: EnumProperty(name="Quality", items=[("FAST", "Fast", "Fewer faces, small textures"),
                                                ("BALANCED", "Balanced", "The defaults"),
                                                ("HIGH", "High", "More faces and detail, large textures"),
                                                (CUSTOM, "Custom", "Settings edited in Advanced")],
                         default="BALANCED", update=_apply_preset)
    engine: EnumProperty(name="Engine", items=_engine_items(contract_request.SHAPE_ENGINES), default="builtin",
                         description="Shape engine; models other than Built-in need downloaded weights",
                         update=_clear_stale_message)
    texture_engine: EnumProperty(name="Texture engine", default=AUTO, items=_engine_items(
        contract_request.TEXTURE_ENGINES, "The shape engine if it can paint, else builtin"))
    remove_background: BoolProperty(name="Remove background", default=True,
                                    description="Cut the object out (an image's own alpha channel wins)")
    texture: BoolProperty(name="Texture", default=True, description="Off: an untextured mesh only")
    seed: IntProperty(name="Seed", default=NUMERIC["seed"][0], min=NUMERIC["seed"][1], max=NUMERIC["seed"][2])
    octree_resolution: IntProperty(name="Octree resolution", default=NUMERIC["octree_resolution"][0],
                                   min=NUMERIC["octree_resolution"][1], max=NUMERIC["octree_resolution"][2],
                                   update=_field_edited)
    engine_steps: BoolProperty(name="Engine's steps", default=True,
                               description="Let the engine pick its tuned step count (e.g. 50 for a standard "
                                           "Hunyuan model, 5 for a turbo one); off: use Steps",
                               update=_field_edited)
    num_inference_steps: IntProperty(name="Steps", default=NUMERIC["num_inference_steps"][0],
                                     min=NUMERIC["num_inference_steps"][1], max=NUMERIC["num_inference_steps"][2],
                                     description="Diffusion steps (model engines)", update=_field_edited)
    guidance_scale: FloatProperty(name="Guidance scale", default=NUMERIC["guidance_scale"][0],
                                  min=NUMERIC["guidance_scale"][1], max=NUMERIC["guidance_scale"][2])
    face_count: IntProperty(name="Faces", default=NUMERIC["face_count"][0], min=NUMERIC["face_count"][1],
                            max=NUMERIC["face_count"][2], description="Target triangle count", update=_field_edited)
    texture_size: EnumProperty(name="Texture size", items=[(str(s), str(s), "%d x %d pixels" % (s, s))
                                                           for s in TEXTURE_SIZES], default=str(DEFAULT_TEXTURE_SIZE),
                               update=_field_edited)

    jobs: CollectionProperty(type=GEN3D_PG_job)
    job_index: IntProperty(default=-1)
    message: StringProperty(description="The last error or notice shown in the panel")
    # What the message is about: "generate" (the sidebar's choices), "job:<id>", "import"; it is
    # cleared when that goes away (another image chosen, the job's row removed).
    message_source: StringProperty()
    message_is_error: BoolProperty()
    message_is_warning: BoolProperty()


def request_fields(props):
    """The request's wire fields (without the image) from the sidebar settings."""
    fields = {
        "engine": props.engine,
        "remove_background": props.remove_background,
        "texture": props.texture,
        "seed": props.seed,
        "octree_resolution": props.octree_resolution,
        "num_inference_steps": None if props.engine_steps else props.num_inference_steps,
        # the engine's model variant (Fast: turbo models where they exist); "Custom" = the fields as set
        "preset": props.preset.lower() if props.preset.lower() in contract_request.PRESETS else None,
        "guidance_scale": round(props.guidance_scale, 4),
        "face_count": props.face_count,
        "texture_size": int(props.texture_size),
    }
    if props.texture_engine != AUTO:
        fields["texture_engine"] = props.texture_engine
    views = {name: {"image_path": bpy.path.abspath(getattr(props, "view_" + name))}
             for name in contract_request.VIEW_NAMES if getattr(props, "view_" + name, "")}
    if views:
        fields["views"] = views
    return fields


classes = (GEN3D_PG_job, GEN3D_PG_scene)


def register():
    bpy.types.Scene.gen3d = PointerProperty(type=GEN3D_PG_scene)


def unregister():
    del bpy.types.Scene.gen3d
