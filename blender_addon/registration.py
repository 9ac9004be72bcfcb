"""Register and unregister everything, in dependency order (property groups before their users)."""

import bpy

from . import file_handler, operators, prefs, props, session, setup_ui, texture_existing, ui

_CLASSES = (prefs.classes + props.classes + operators.classes + texture_existing.classes + setup_ui.classes
            + ui.classes + file_handler.classes)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    props.register()
    session.start()


def unregister():
    session.stop()                # cancels jobs and stops the worker before the classes go
    setup_ui.cancel_all()         # a set-up or engine install in progress stops with the add-on
    props.unregister()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
