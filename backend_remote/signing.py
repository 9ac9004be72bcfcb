"""Signed, expiring URLs for result files the self-hosted server serves from its own disk.

A URL carries `expires` (unix seconds) and `sig` = HMAC-SHA256(secret, "<path>\n<expires>"), so it
works without the API key (the add-on and a browser can download it) but only for that one file and
only until it expires. The secret is kept in the server's data folder so URLs survive a restart.
"""

import hashlib
import hmac
import os
import secrets
import time

SECRET_BYTES = 32


def load_or_create_secret(path):
    """The signing secret stored at `path`, created (readable by the owner only) on first use."""
    try:
        with open(path, "rb") as handle:
            secret = handle.read()
        if len(secret) >= SECRET_BYTES:
            return secret
    except FileNotFoundError:
        pass
    secret = secrets.token_bytes(SECRET_BYTES)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
    os.replace(tmp, path)
    return secret


class UrlSigner:
    def __init__(self, secret):
        self._secret = secret

    def _signature(self, path, expires):
        message = ("%s\n%d" % (path, expires)).encode("utf-8")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, path, ttl_s, now=None):
        """Query parameters that make `path` downloadable for `ttl_s` seconds."""
        expires = int((now if now is not None else time.time()) + ttl_s)
        return {"expires": str(expires), "sig": self._signature(path, expires)}

    def verify(self, path, expires, sig, now=None):
        """True when `sig` was made by this signer for `path` and `expires` has not passed."""
        try:
            expires = int(expires)
        except (TypeError, ValueError):
            return False
        expected = self._signature(path, expires)
        valid = hmac.compare_digest(expected.encode("ascii"), str(sig or "").encode("utf-8", "replace"))
        return valid and expires >= (now if now is not None else time.time())
