"""Bearer API keys for the self-hosted server, checked in constant time."""

import hashlib
import hmac
import os
import stat
import sys

from shared.errors import INVALID_INPUT, Gen3DError


def load_api_keys(path):
    """Keys from `path`: one per line; blank lines and lines starting with # are ignored."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            keys = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise Gen3DError(INVALID_INPUT, "Cannot read the API key file %s (%s)." % (path, exc.strerror or exc))
    if not keys:
        raise Gen3DError(INVALID_INPUT, "The API key file %s holds no key; put one long random key per line "
                         "(e.g. from `python -c \"import secrets; print(secrets.token_urlsafe(32))\"`)." % path)
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        print("[gen3d] warning: %s is readable by other users; chmod 600 it" % path, file=sys.stderr, flush=True)
    return ApiKeys(keys)


def _digest(text):
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class ApiKeys:
    def __init__(self, keys):
        # Comparing fixed-length digests keeps the time independent of how much of a key matches and
        # of the key's length.
        self._digests = [_digest(key) for key in keys]

    def authorized(self, header):
        """True for an `Authorization: Bearer <key>` header carrying one of the keys."""
        return self.owner(header) is not None

    def owner(self, header):
        """A short, non-secret name for the key in `header` (for per-key quotas), or None."""
        scheme, _, token = (header or "").strip().partition(" ")
        offered = _digest(token.strip())
        found = None
        for digest in self._digests:          # no early exit: every key is compared every time
            if hmac.compare_digest(offered, digest):
                found = digest
        if found is None or scheme.lower() != "bearer":
            return None
        return hashlib.sha256(b"gen3d-owner" + found).hexdigest()[:16]
