"""What an error message may show a client: no server paths, no memory addresses, bounded length
(a message may quote the caller's input, e.g. a 10 MB engine name)."""

import re

MAX_MESSAGE_CHARS = 600
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{8,}")
# An absolute path of two or more parts, not the path of a URL (those follow a host name).
_PATH = re.compile(r"(?<![\w:/.\-])/(?:[\w.\-]+/)+[\w.\-]*")


def public_message(message, hide=()):
    message = str(message)
    for root in sorted((r for r in hide if r), key=len, reverse=True):
        message = message.replace(root, "<server folder>")
    message = _ADDRESS.sub("", message)
    message = _PATH.sub("<server path>", message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "... (shortened)"
    return message


def public_error(error, hide=()):
    """A copy of a contract error body `{"code", "message", ...}` that is safe to send."""
    if not isinstance(error, dict):
        return error
    cleaned = dict(error)
    if "message" in cleaned:
        cleaned["message"] = public_message(cleaned["message"], hide)
    stage = cleaned.get("stage")
    if isinstance(stage, str) and len(stage) > 40:
        cleaned["stage"] = None
    return cleaned
