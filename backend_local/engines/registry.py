"""Engine registry: engines by name, created lazily and kept (so their models stay loaded)."""

import importlib

from shared.errors import ENGINE_UNAVAILABLE, Gen3DError
from shared.request import SHAPE_ENGINES

from .base import SHAPE, TEXTURE

# name -> "module:Class"; modules are imported only when the engine is used, so a machine without
# an engine's packages can still run the others.
ENGINES = {
    "builtin": "backend_local.engines.builtin.engine:BuiltinEngine",
    "hunyuan3d-2.1": "backend_local.engines.hunyuan21:Hunyuan21Engine",
    "hunyuan3d-2": "backend_local.engines.hunyuan2:Hunyuan2Engine",
    "hunyuan3d-2mini": "backend_local.engines.hunyuan2:Hunyuan2MiniEngine",
    "hunyuan3d-2mv": "backend_local.engines.hunyuan2:Hunyuan2MVEngine",
}


class EngineRegistry:
    def __init__(self, settings=None):
        self.settings = settings or {}
        self._instances = {}

    def names(self):
        return [name for name in SHAPE_ENGINES if name in ENGINES]

    def _class(self, name):
        if name not in ENGINES:
            raise Gen3DError(ENGINE_UNAVAILABLE, "The engine '%s' is not part of this Gen3D installation." % name,
                             retryable=False)
        module, _, cls = ENGINES[name].partition(":")
        return getattr(importlib.import_module(module), cls)

    def get(self, name, stage=SHAPE):
        """The engine instance (created once). Raises ENGINE_UNAVAILABLE when it cannot run here."""
        engine = self._instances.get(name)
        if engine is None:
            engine = self._class(name)(self.settings.get(name, {}))
            self._instances[name] = engine
        if stage not in engine.capabilities:
            raise Gen3DError(ENGINE_UNAVAILABLE, "The engine '%s' cannot do the %s stage; pick another %s engine."
                             % (name, stage, stage), stage=stage, retryable=False)
        status = engine.availability(stage)
        if not status.available:
            raise Gen3DError(ENGINE_UNAVAILABLE, "The engine '%s' is not available: %s" % (name, status.reason),
                             stage=stage, retryable=False)
        return engine

    def loaded(self):
        return dict(self._instances)

    def describe(self):
        """One entry per engine: capabilities, VRAM need, availability and why not."""
        rows = []
        for name in SHAPE_ENGINES:
            row = {"name": name, "capabilities": [], "vram_gb": {}, "available": False, "reason": ""}
            try:
                engine = self._instances.get(name) or self._class(name)(self.settings.get(name, {}))
                status = engine.availability()
                row.update(capabilities=sorted(engine.capabilities), vram_gb=dict(engine.vram_gb),
                           available=status.available, reason=status.reason)
                if getattr(engine, "stage_sizes", None):
                    from .. import vram_plan

                    row["memory"] = vram_plan.card_summary([engine.stage_need(stage) for stage in
                                                            sorted(engine.stage_sizes) if stage in engine.capabilities])
            except Gen3DError as exc:
                row["reason"] = exc.message
            except Exception as exc:  # an engine module that fails to import must not hide the others
                row["reason"] = "failed to load: %s" % exc
            rows.append(row)
        return rows


__all__ = ["ENGINES", "EngineRegistry", "SHAPE", "TEXTURE"]
