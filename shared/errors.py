"""Error codes of the job contract and the exception that carries them."""

INVALID_INPUT = "INVALID_INPUT"
IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
EMPTY_FOREGROUND = "EMPTY_FOREGROUND"
ENGINE_UNAVAILABLE = "ENGINE_UNAVAILABLE"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
TIMEOUT = "TIMEOUT"
CANCELLED = "CANCELLED"
UNAUTHORIZED = "UNAUTHORIZED"
STORAGE = "STORAGE"
INTERNAL = "INTERNAL"

ERROR_CODES = (
    INVALID_INPUT, IMAGE_TOO_LARGE, EMPTY_FOREGROUND, ENGINE_UNAVAILABLE, OUT_OF_MEMORY,
    TIMEOUT, CANCELLED, UNAUTHORIZED, STORAGE, INTERNAL,
)

# Whether trying the same job again can help when the sender does not say.
_RETRYABLE_BY_DEFAULT = {OUT_OF_MEMORY, TIMEOUT, STORAGE, INTERNAL}


class Gen3DError(Exception):
    """A failure that is reported to the user as `{"error": {...}}`.

    `message` is shown to artists as is: it says what happened and what to do next.
    """

    def __init__(self, code, message, stage=None, retryable=None):
        if code not in ERROR_CODES:
            raise ValueError("unknown error code %r" % (code,))
        super().__init__(message)
        self.code = code
        self.message = message
        self.stage = stage
        self.retryable = (code in _RETRYABLE_BY_DEFAULT) if retryable is None else bool(retryable)

    def to_dict(self):
        return {"error": {"code": self.code, "message": self.message,
                          "stage": self.stage, "retryable": self.retryable}}

    @classmethod
    def from_dict(cls, data):
        """Rebuild from an error payload; anything malformed becomes INTERNAL."""
        body = data.get("error", data) if isinstance(data, dict) else {}
        if not isinstance(body, dict):
            body = {"message": str(body)}
        code = body.get("code")
        if code not in ERROR_CODES:
            code = INTERNAL
        message = body.get("message") or "The job failed without a message."
        return cls(code, str(message), body.get("stage"), body.get("retryable"))

    def __str__(self):
        return "%s: %s" % (self.code, self.message)


def invalid(field, problem):
    """INVALID_INPUT naming the field, e.g. invalid("seed", "must be an integer")."""
    return Gen3DError(INVALID_INPUT, "'%s' %s." % (field, problem), stage="queued", retryable=False)
