"""Turn the sidebar's image choice into a file the backend can read, after checking Blender can read it."""

import os
import re
import uuid

import bpy

from .contract import Gen3DError, errors

SOURCES_DIR = ".sources"          # inside the output folder: loaded images that had no file of their own
_FORMAT_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


def _bad_image(message):
    return Gen3DError(errors.INVALID_INPUT, message, stage="queued", retryable=False)


def check_readable(path):
    """Raise unless Blender can decode the file as an image (the probe leaves bpy.data as it was)."""
    if not path:
        raise _bad_image("Choose an image file first.")
    if not os.path.isfile(path):
        raise _bad_image("The image file %s does not exist." % path)
    try:
        probe = bpy.data.images.load(path, check_existing=False)
    except RuntimeError as exc:
        raise _bad_image("Blender cannot open %s (%s)." % (path, str(exc).replace("Error: ", "").strip()))
    try:
        width, height = probe.size[:]
    finally:
        bpy.data.images.remove(probe)
    if width == 0 or height == 0:
        raise _bad_image("Blender cannot read %s as an image. Use a PNG, JPEG or WebP file." % os.path.basename(path))


def image_name(path_or_name):
    return os.path.splitext(os.path.basename(path_or_name))[0] or "image"


def datablock_name(image):
    """'photo' for photo.png, photo.png.001 or an image called photo: what the object will be called."""
    if image.filepath:
        return image_name(bpy.path.abspath(image.filepath))
    return image_name(re.sub(r"\.\d{3}$", "", image.name))


def file_source(filepath):
    """(absolute path, name) for an image file."""
    path = os.path.abspath(bpy.path.abspath(filepath)) if filepath else ""
    check_readable(path)
    return path, image_name(path)


def chosen_source(props, output_dir, filepath=""):
    """(path, name) of the sidebar's image choice (`props`: the scene's gen3d settings), or of `filepath`
    when one is given (a dropped file). Generate and Texture Selected both start from it, so they read
    the same choice the same way."""
    if filepath or props.source == "FILE":
        return file_source(filepath or props.filepath)
    return loaded_image_source(props.image, output_dir)


def loaded_image_source(image, output_dir):
    """(path, name) for an image datablock: its own file when that is what Blender shows, else a copy
    written to <output>/.sources/ (packed, generated, painted or render results)."""
    if image is None:
        raise _bad_image("Choose an image first.")
    name = datablock_name(image)
    path = bpy.path.abspath(image.filepath, library=image.library) if image.filepath else ""
    if image.source == "FILE" and not image.packed_file and not image.is_dirty and path and os.path.isfile(path):
        check_readable(path)
        return os.path.abspath(path), name
    if image.type == "COMPOSITING" or not (image.has_data or image.packed_file or image.size[0]):
        raise _bad_image("The image '%s' has no pixels Blender can read. Open or render it first." % image.name)
    folder = os.path.join(output_dir, SOURCES_DIR)
    os.makedirs(folder, exist_ok=True)
    stem = "%s-%s" % (name, uuid.uuid4().hex[:8])
    if image.packed_file and not image.is_dirty:     # the original file's bytes, untouched
        target = os.path.join(folder, stem + (os.path.splitext(path or image.name)[1] or ".png"))
        with open(target, "wb") as handle:
            handle.write(image.packed_file.data)
    elif image.type == "RENDER_RESULT":
        target = os.path.join(folder, stem + ".png")
        image.save_render(target)
    else:
        target = os.path.join(folder, stem + _FORMAT_EXTENSIONS.get(image.file_format, ".png"))
        _save_copy(image, target)
    check_readable(target)
    return target, name


def _save_copy(image, target):
    """Write the image's pixels to target (PNG unless it is a PNG, JPEG or WebP already), leaving the
    datablock as it was."""
    original = image.file_format
    try:
        if original not in _FORMAT_EXTENSIONS:
            image.file_format = "PNG"
        image.save(filepath=target)
    except (RuntimeError, TypeError) as exc:
        raise _bad_image("Cannot write the image '%s' for the backend (%s)." % (image.name, exc))
    finally:
        if image.file_format != original:
            image.file_format = original
