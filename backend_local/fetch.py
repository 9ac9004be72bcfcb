"""Downloading an `image_url` without letting a request reach the server's own network (SSRF).

Every hop (the first URL and each redirect) is checked the same way: http or https only, the host is
resolved once, every address that is loopback, private, link-local (cloud metadata at
169.254.169.254 included), multicast, reserved or otherwise not globally routable is refused, and the
connection is opened to the address that was checked. The TLS handshake and the Host header still use
the name from the URL, so certificates are verified as usual, but a DNS answer that changes between
the check and the connect (DNS rebinding) cannot move the connection elsewhere.

Tests serve images from 127.0.0.1, so private networks can be opted in explicitly: the
`allow_networks` argument, or GEN3D_ALLOW_PRIVATE_URLS ("1" for all, or comma-separated CIDRs).
Nothing in Gen3D sets either by default.
"""

import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from urllib.parse import urljoin, urlsplit

from shared.errors import CANCELLED, IMAGE_TOO_LARGE, INVALID_INPUT, Gen3DError
from shared.version import __version__

ALLOW_ENV = "GEN3D_ALLOW_PRIVATE_URLS"
REDIRECT_CODES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = (5.0, 20.0)     # seconds: connect, then each read
TOTAL_TIME_LIMIT = 120.0          # a server dripping bytes slowly still ends here
_WATCH_INTERVAL = 0.05            # how often the watchdog looks at the cancel event and the deadline
_CHUNK = 64 * 1024

# NAT64 (RFC 6052) carries an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _short(text, limit=200):
    """Echo at most `limit` characters of a user's input in a message."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _refused(message):
    return Gen3DError(INVALID_INPUT, message, stage="preprocess", retryable=False)


def _unreachable(message, retryable=False):
    return Gen3DError(INVALID_INPUT, message, stage="preprocess", retryable=retryable)


def allowed_networks_from_env():
    """Networks exempted from the private-address rule by GEN3D_ALLOW_PRIVATE_URLS (tests only)."""
    value = os.environ.get(ALLOW_ENV, "").strip()
    if not value or value == "0":
        return ()
    if value.lower() in ("1", "true", "yes", "all"):
        return (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip())


def _embedded_ipv4(ip):
    """IPv4 addresses a tunnelling IPv6 address carries (6to4, Teredo): each must pass too."""
    if ip.version != 6:
        return []
    found = [ip.sixtofour] + list(ip.teredo or ())
    return [addr for addr in found if addr is not None]


def _translated_ipv4(ip):
    """The IPv4 address an IPv4-mapped or NAT64 address stands for (None for other addresses)."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None


def is_public_address(ip):
    """True when `ip` (an ipaddress object) is globally routable and carries no internal address."""
    translated = _translated_ipv4(ip)
    if translated is not None:          # these reach exactly the IPv4 host they carry
        return is_public_address(translated)
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return False
    return all(is_public_address(inner) for inner in _embedded_ipv4(ip))


def _is_allowed(ip, allow_networks):
    if any(ip.version == net.version and ip in net for net in allow_networks):
        return True
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None and any(net.version == 4 and mapped in net for net in allow_networks):
        return True
    return is_public_address(ip)


def _parse(url):
    try:
        parts = urlsplit(url)
        parts.port               # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        raise _refused("The image URL %r is not a valid URL (%s); check the link." % (_short(url), "bad host or port"))
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refused("The image URL must start with http:// or https:// (got %r)." % _short(parts.scheme or url))
    if parts.username or parts.password:
        raise _refused("The image URL must not contain a user name or password; use a public link to the image.")
    host = parts.hostname
    if not host:
        raise _refused("The image URL %r has no host name; check the link." % _short(url))
    port = parts.port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port, path


def resolve_checked(host, port, allow_networks=()):
    """The first address of `host` that may be contacted. Raises INVALID_INPUT when none may."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _unreachable("The image URL's host %r could not be found (%s). Check the link." % (_short(host), exc))
    addresses = []
    for family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if (family, ip) not in addresses:
            addresses.append((family, ip))
    for family, ip in addresses:
        if _is_allowed(ip, allow_networks):
            return family, ip
    shown = ", ".join(str(ip) for _f, ip in addresses)
    where = shown if shown == host.strip("[]") else "%s (%s)" % (host, shown)
    raise _refused("The image URL points to %s, a private, local or reserved network address. Gen3D only "
                   "downloads images from public internet addresses; send the image itself instead." % where)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a fixed, already checked IP; the Host header keeps the URL's name."""

    def __init__(self, host, port, ip, family, connect_timeout, read_timeout):
        super().__init__(host, port, timeout=connect_timeout)
        self._ip, self._family, self._read_timeout = str(ip), family, read_timeout

    def _open_socket(self):
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect((self._ip, self.port))
            sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def connect(self):
        self.sock = self._open_socket()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """As above over TLS: SNI and certificate checks use the URL's host name, not the IP."""

    def connect(self):
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(self._open_socket(), server_hostname=self.host)


def _describe_network_error(exc):
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "it did not answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(exc, ssl.SSLError):
        return "its HTTPS certificate could not be verified (%s)" % (exc.reason or exc)
    return str(exc) or type(exc).__name__


class _Watchdog:
    """Ends a download at its deadline or on cancel, wherever it is blocked: it shuts the current
    connection's socket down, so a read waiting on a server that drips bytes returns at once."""

    def __init__(self, deadline, cancel):
        self.deadline = deadline
        self.cancel = cancel
        self.fired = None                  # "cancel" or "deadline" once it has acted
        self._connection = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="gen3d-fetch-watchdog", daemon=True)
        self._thread.start()

    def watch(self, connection):
        with self._lock:
            self._connection = connection
            if self.fired:
                self._shut(connection)

    def _watch(self):
        while not self._done.wait(_WATCH_INTERVAL):
            reason = "cancel" if self.cancel is not None and self.cancel.is_set() else \
                "deadline" if time.monotonic() > self.deadline else None
            if reason:
                with self._lock:
                    self.fired = reason
                    self._shut(self._connection)
                return

    @staticmethod
    def _shut(connection):
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def check(self, url):
        """Raise CANCELLED or the deadline error when the download must stop now."""
        if self.fired == "cancel" or (self.cancel is not None and self.cancel.is_set()):
            raise Gen3DError(CANCELLED, "The job was cancelled.", stage="preprocess", retryable=False)
        if self.fired == "deadline" or time.monotonic() > self.deadline:
            raise _unreachable("Downloading the image from %s took longer than %.0f s. Use a faster host or send "
                               "the image itself." % (url, TOTAL_TIME_LIMIT), retryable=True)

    def stop(self):
        self._done.set()


def _read_body(response, max_bytes, watchdog, read_timeout, url):
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise Gen3DError(IMAGE_TOO_LARGE, "The image at %s is %.1f MB; the limit is %.0f MB. Use a smaller image."
                         % (url, int(declared) / 2 ** 20, max_bytes / 2 ** 20), stage="preprocess", retryable=False)
    chunks, size = [], 0
    sock = getattr(response.fp, "raw", None)
    sock = getattr(sock, "_sock", None)
    while True:
        watchdog.check(url)
        if sock is not None:     # no single read may outlast the overall deadline
            sock.settimeout(max(0.01, min(read_timeout, watchdog.deadline - time.monotonic())))
        # read1: at most one receive, so a byte-a-second server cannot keep one call busy for a 64 KiB chunk.
        chunk = response.read1(_CHUNK)
        if not chunk:
            watchdog.check(url)        # a shut-down socket reads as the end of the body
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise Gen3DError(IMAGE_TOO_LARGE, "The image at %s is larger than %.0f MB. Use a smaller image."
                             % (url, max_bytes / 2 ** 20), stage="preprocess", retryable=False)
        chunks.append(chunk)


def fetch_image(url, max_bytes, timeout=DEFAULT_TIMEOUT, allow_networks=None, max_redirects=MAX_REDIRECTS,
                cancel=None, total_time=TOTAL_TIME_LIMIT):
    """Download `url` and return its bytes, refusing internal addresses on every hop.

    `timeout` is (connect, read) seconds or one number for both; the whole download, redirects
    included, ends after `total_time` seconds or as soon as the `cancel` event is set, even in the
    middle of a read. `allow_networks` exempts networks from the public-address rule (tests); None
    reads GEN3D_ALLOW_PRIVATE_URLS.
    Raises Gen3DError INVALID_INPUT (refused, unreachable, HTTP error, too slow), IMAGE_TOO_LARGE or
    CANCELLED.
    """
    connect_timeout, read_timeout = timeout if isinstance(timeout, (tuple, list)) else (timeout, timeout)
    if allow_networks is None:
        allow_networks = allowed_networks_from_env()
    allow_networks = tuple(ipaddress.ip_network(net, strict=False) if isinstance(net, str) else net
                           for net in allow_networks)
    watchdog = _Watchdog(time.monotonic() + total_time, cancel)
    try:
        return _fetch(url, max_bytes, connect_timeout, read_timeout, allow_networks, max_redirects, watchdog)
    finally:
        watchdog.stop()


def _fetch(url, max_bytes, connect_timeout, read_timeout, allow_networks, max_redirects, watchdog):
    current = url
    for _hop in range(max_redirects + 1):
        shown = _short(current)
        watchdog.check(shown)
        scheme, host, port, path = _parse(current)
        family, ip = resolve_checked(host, port, allow_networks)
        kind = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        connection = kind(host, port, ip, family, connect_timeout, read_timeout)
        response = None
        try:
            connection.connect()
            watchdog.watch(connection)
            connection.request("GET", path, headers={"User-Agent": "Gen3D/%s" % __version__,
                                                     "Accept": "image/png, image/jpeg, image/webp, */*;q=0.5",
                                                     "Accept-Encoding": "identity"})
            response = connection.getresponse()
            if response.status in REDIRECT_CODES:
                location = response.getheader("Location")
                if not location:
                    raise _unreachable("The image URL %s redirects without saying where to; check the link." % shown)
                current = urljoin(current, location.strip())
                continue
            if response.status != 200:
                raise _unreachable("The image URL %s answered HTTP %d %s. Check that the link opens the image in a "
                                   "browser without logging in." % (shown, response.status,
                                                                    _short(response.reason, 80)),
                                   retryable=response.status >= 500)
            return _read_body(response, max_bytes, watchdog, read_timeout, shown)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            watchdog.check(shown)       # the watchdog closed the socket: say why
            raise _unreachable("Could not download the image from %s: %s. Check that the URL is reachable from the "
                               "internet, or send the image itself." % (shown, _describe_network_error(exc)),
                               retryable=isinstance(exc, (socket.timeout, TimeoutError)))
        finally:
            watchdog.watch(None)
            _Watchdog._shut(connection)     # the response holds the socket open; end the connection itself
            if response is not None:
                response.close()
            connection.close()
    raise _unreachable("The image URL %s redirects more than %d times; link to the image file directly."
                       % (_short(url), max_redirects))
