"""Uvicorn with limits set in the server itself, so a port reached directly (no proxy in front)
cannot be exhausted by clients that never finish a request.

* headers: the h11 parser (not httptools, which has no size limit) with at most MAX_HEADER_BYTES
  buffered for one request head; a larger one is answered 400 and the connection closed.
* header timeout: a connection that has not sent a complete request head HEADER_TIMEOUT_S after it
  opened (or after its previous response) is closed; idle keep-alive connections close after
  KEEP_ALIVE_S.
* connections: at most MAX_CONNECTIONS open at once; one more is closed as soon as it is accepted
  (before it can hold a file descriptor for long), and uvicorn answers 503 past limit_concurrency.
* the open-file limit is raised to its hard maximum so the cap, not the OS, is what refuses.

The GEN3D_HTTP_* variables override the defaults (tests use small values).
"""

import os
import resource

from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_CONNECTIONS = 512


def _setting(name, default, kind=float):
    value = os.environ.get("GEN3D_HTTP_%s" % name)
    return kind(value) if value else default


class GuardedH11Protocol(H11Protocol):
    header_timeout_s = HEADER_TIMEOUT_S
    max_connections = MAX_CONNECTIONS

    def connection_made(self, transport):
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.abort()
            return
        self._arm_header_timer()

    def _arm_header_timer(self):
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout, self.cycle)

    def _header_timeout(self, cycle_when_armed):
        waiting = self.cycle is cycle_when_armed and (self.cycle is None or self.cycle.response_complete)
        if waiting and not self.transport.is_closing():
            self.transport.abort()            # no request head arrived in time (slowloris)

    def on_response_complete(self):
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()

    def connection_lost(self, exc):
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)


def _raise_file_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
        except (ValueError, OSError):
            pass


def serve(app, host, port, log_level="info"):
    import uvicorn

    protocol = type("Gen3DH11Protocol", (GuardedH11Protocol,), {
        "header_timeout_s": _setting("HEADER_TIMEOUT_S", HEADER_TIMEOUT_S),
        "max_connections": _setting("MAX_CONNECTIONS", MAX_CONNECTIONS, int)})
    _raise_file_limit()
    uvicorn.run(app, host=host, port=port, log_level=log_level, http=protocol,
                h11_max_incomplete_event_size=_setting("MAX_HEADER_BYTES", MAX_HEADER_BYTES, int),
                timeout_keep_alive=_setting("KEEP_ALIVE_S", KEEP_ALIVE_S, int),
                limit_concurrency=protocol.max_connections, backlog=256, server_header=False)
