"""Pick the JobClient for a backend setting. The remote client is imported only when chosen, so a
Blender without `requests` (Debian's 3.4) still runs local jobs."""

import importlib

from .contract import Gen3DError, errors
from .settings import LOCAL, REMOTE


def check_policy(settings):
    """Refuse what Blender's preferences forbid, before any client is made."""
    if settings.backend == REMOTE and not settings.online_access:
        raise Gen3DError(errors.UNAUTHORIZED, "Blender's online access is off, so the remote backend cannot be "
                         "used. Turn on Allow Online Access in Preferences > System > Network (or start Blender "
                         "with --online-mode), or switch to the Local backend.", stage="queued", retryable=False)


def make_client(settings):
    if settings.backend == LOCAL:
        from .local_client import LocalClient
        return LocalClient(settings)
    if settings.backend == REMOTE:
        return _remote_client_class()(settings)
    raise Gen3DError(errors.INVALID_INPUT, "Unknown backend %r; choose Local or Remote in the add-on preferences."
                     % (settings.backend,), stage="queued", retryable=False)


def _remote_client_class():
    name = __package__ + ".remote_client"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise Gen3DError(errors.ENGINE_UNAVAILABLE, "This build of the Gen3D add-on has no remote backend "
                             "(remote_client.py is missing). Use the Local backend or install a newer build.",
                             stage="queued", retryable=False)
        hint = ""
        if exc.name == "requests":       # Debian's blender package uses the system Python's modules
            hint = " On Debian/Ubuntu: sudo apt-get install python3-requests, then restart Blender."
        raise Gen3DError(errors.ENGINE_UNAVAILABLE, "The remote backend needs the Python module '%s', which this "
                         "Blender does not have.%s Or use the Local backend, or a Blender from blender.org (it "
                         "bundles it)." % (exc.name, hint), stage="queued", retryable=False)
    client = getattr(module, "RemoteClient", None)
    if client is None:
        raise Gen3DError(errors.ENGINE_UNAVAILABLE, "remote_client.py defines no RemoteClient; the add-on build "
                         "is broken. Use the Local backend.", stage="queued", retryable=False)
    return client
