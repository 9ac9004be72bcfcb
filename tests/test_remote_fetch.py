"""SSRF-safe image_url fetching (backend_local/fetch.py) against a loopback image server."""

import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509          # moto[server] depends on cryptography
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from backend_local import fetch
from shared.errors import CANCELLED, IMAGE_TOO_LARGE, INVALID_INPUT, Gen3DError

from test_remote_support import sphere_bytes

pytest_plugins = ["test_remote_support"]

LOOPBACK = ["127.0.0.0/8"]      # the explicit test opt-in; never set by the server


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True),
    ("2606:4700:4700::1111", True),
    ("127.0.0.1", False),
    ("10.1.2.3", False),
    ("172.16.0.1", False),
    ("192.168.1.1", False),
    ("169.254.169.254", False),          # cloud metadata
    ("100.100.100.200", False),          # shared address space (Alibaba metadata)
    ("0.0.0.0", False),
    ("224.0.0.1", False),                # multicast
    ("240.0.0.1", False),                # reserved
    ("255.255.255.255", False),
    ("::1", False),
    ("::", False),
    ("fe80::1", False),                  # link-local
    ("fd00:ec2::254", False),            # AWS metadata over IPv6 (unique local)
    ("ff02::1", False),                  # multicast
    ("::ffff:127.0.0.1", False),         # IPv4-mapped loopback
    ("::ffff:169.254.169.254", False),   # IPv4-mapped metadata
    ("::ffff:8.8.8.8", True),
    ("2002:7f00:1::", False),            # 6to4 wrapping 127.0.0.1
    ("2002:a9fe:a9fe::", False),         # 6to4 wrapping 169.254.169.254
    ("64:ff9b::a9fe:a9fe", False),       # NAT64 wrapping 169.254.169.254
    ("64:ff9b::808:808", True),          # NAT64 wrapping 8.8.8.8
])
def test_address_policy(address, public):
    assert fetch.is_public_address(ipaddress.ip_address(address)) is public


def _refused(url, **kwargs):
    with pytest.raises(Gen3DError) as caught:
        fetch.fetch_image(url, max_bytes=10 ** 7, timeout=(2, 2), **kwargs)
    return caught.value


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433", "0x7f000001"])
def test_loopback_is_refused_by_default(image_site, monkeypatch, host):
    monkeypatch.delenv(fetch.ALLOW_ENV, raising=False)
    error = _refused(image_site.url("/sphere.png", host=host))
    assert error.code == INVALID_INPUT and "private, local or reserved" in error.message
    assert error.stage == "preprocess" and not error.retryable
    assert image_site.requests == []                    # refused before any connection


def test_metadata_address_is_refused_without_connecting(monkeypatch):
    monkeypatch.delenv(fetch.ALLOW_ENV, raising=False)
    started = time.monotonic()
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/",
                "http://[fd00:ec2::254]/latest/meta-data/"):
        error = _refused(url)
        assert error.code == INVALID_INPUT and "private, local or reserved" in error.message
    assert time.monotonic() - started < 1.0            # no connect attempt, so no timeout to wait for


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/", "//example.com/a",
                                 "http://user:pw@example.com/a.png", "http:///a.png"])
def test_only_plain_http_urls(url):
    assert _refused(url).code == INVALID_INPUT


def test_fetch_when_loopback_is_allowed(image_site):
    data = fetch.fetch_image(image_site.url("/sphere.png"), max_bytes=10 ** 7, allow_networks=LOOPBACK)
    assert data == sphere_bytes()
    path, host = image_site.requests[0]
    assert path == "/sphere.png" and host == "127.0.0.1:%d" % image_site.port


def test_env_opt_in(image_site, monkeypatch):
    monkeypatch.setenv(fetch.ALLOW_ENV, "127.0.0.0/8")
    assert fetch.fetch_image(image_site.url("/sphere.png"), max_bytes=10 ** 7) == sphere_bytes()
    monkeypatch.setenv(fetch.ALLOW_ENV, "0")
    assert _refused(image_site.url("/sphere.png")).code == INVALID_INPUT


def test_redirects_are_followed_and_checked_again(image_site):
    good = image_site.url("/redirect?to=/sphere.png")
    assert fetch.fetch_image(good, max_bytes=10 ** 7, allow_networks=LOOPBACK) == sphere_bytes()
    for target in ("http://169.254.169.254/latest/meta-data/iam/", "http://10.0.0.1/", "file:///etc/passwd"):
        error = _refused(image_site.url("/redirect?to=%s" % target), allow_networks=LOOPBACK)
        assert error.code == INVALID_INPUT, target
    assert "redirects more than" in _refused(image_site.url("/loop"), allow_networks=LOOPBACK).message


def test_size_cap(image_site):
    declared = _refused(image_site.url("/declared-huge"), allow_networks=LOOPBACK)
    assert declared.code == IMAGE_TOO_LARGE and "MB" in declared.message
    streamed = _refused(image_site.url("/undeclared-big"), allow_networks=LOOPBACK)
    assert streamed.code == IMAGE_TOO_LARGE
    small_cap = len(sphere_bytes()) - 1
    with pytest.raises(Gen3DError) as caught:
        fetch.fetch_image(image_site.url("/sphere.png"), max_bytes=small_cap, allow_networks=LOOPBACK)
    assert caught.value.code == IMAGE_TOO_LARGE


def test_read_timeout(image_site):
    started = time.monotonic()
    with pytest.raises(Gen3DError) as caught:
        fetch.fetch_image(image_site.url("/slow"), max_bytes=10 ** 7, timeout=(1, 0.5), allow_networks=LOOPBACK)
    assert caught.value.code == INVALID_INPUT and caught.value.retryable
    assert "did not answer in time" in caught.value.message
    assert time.monotonic() - started < 2.5


def _wait_until(condition, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_slow_drip_ends_at_the_deadline(image_site):
    """200 and then a byte every half second: every read succeeds within its timeout, so only the
    overall deadline can end it, and it must do so mid-read, not after a 64 KiB chunk."""
    started = time.monotonic()
    with pytest.raises(Gen3DError) as caught:
        fetch.fetch_image(image_site.url("/drip"), max_bytes=10 ** 7, timeout=(1, 2), allow_networks=LOOPBACK,
                          total_time=1.5)
    elapsed = time.monotonic() - started
    assert caught.value.code == INVALID_INPUT and caught.value.retryable and "took longer" in caught.value.message
    assert 1.4 < elapsed < 2.2, elapsed
    _wait_until(lambda: image_site.drips == 0)          # the connection was closed, not left dripping


def test_cancel_stops_a_download_mid_read(image_site):
    cancel = threading.Event()
    threading.Timer(0.6, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Gen3DError) as caught:
        fetch.fetch_image(image_site.url("/drip"), max_bytes=10 ** 7, timeout=(1, 30), allow_networks=LOOPBACK,
                          cancel=cancel)
    assert caught.value.code == CANCELLED and caught.value.stage == "preprocess"
    assert time.monotonic() - started < 1.2
    _wait_until(lambda: image_site.drips == 0)


@pytest.mark.parametrize("url", ["http://[::1/a.png", "http://[nothex]/a.png", "http://example.com:99999/a.png",
                                 "http://example.com:port/a.png"])
def test_malformed_urls_are_invalid_input(url):
    error = _refused(url)
    assert error.code == INVALID_INPUT and "valid URL" in error.message


def test_messages_do_not_echo_long_urls():
    error = _refused("ftp://example.com/" + "a" * 100000)
    assert error.code == INVALID_INPUT and len(error.message) < 400


def test_unreachable_and_http_errors(image_site):
    error = _refused(image_site.url("/missing.png"), allow_networks=LOOPBACK)
    assert error.code == INVALID_INPUT and "HTTP 404" in error.message
    with socket.socket() as sock:                       # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = _refused("http://127.0.0.1:%d/a.png" % port, allow_networks=LOOPBACK)
    assert error.code == INVALID_INPUT and "refused" in error.message
    assert _refused("http://no-such-host.invalid/a.png").code == INVALID_INPUT


def test_connection_is_pinned_to_the_checked_address(image_site, monkeypatch):
    """DNS rebinding: the name resolves to an allowed address when checked and to the metadata
    address afterwards; the download must still come from the checked address, resolved once."""
    real = socket.getaddrinfo
    answers = []

    def rebinding(host, port, *args, **kwargs):
        if host != "images.example":
            return real(host, port, *args, **kwargs)
        ip = "127.0.0.1" if not answers else "169.254.169.254"
        answers.append(ip)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(fetch.socket, "getaddrinfo", rebinding)
    url = "http://images.example:%d/sphere.png" % image_site.port
    assert fetch.fetch_image(url, max_bytes=10 ** 7, allow_networks=LOOPBACK) == sphere_bytes()
    assert answers == ["127.0.0.1"]
    assert image_site.requests == [("/sphere.png", "images.example:%d" % image_site.port)]


def test_pipeline_fetches_image_urls_through_this_module(image_site, monkeypatch):
    from backend_local.pipeline import load_source
    from shared.request import parse_request

    monkeypatch.setenv(fetch.ALLOW_ENV, "127.0.0.0/8")
    assert load_source(parse_request({"image_url": image_site.url("/sphere.png")}, allow_path=False)) == sphere_bytes()
    monkeypatch.delenv(fetch.ALLOW_ENV)
    with pytest.raises(Gen3DError) as caught:
        load_source(parse_request({"image_url": image_site.url("/sphere.png")}, allow_path=False))
    assert caught.value.code == INVALID_INPUT


@pytest.fixture()
def tls_site(image_site, tmp_path):
    """The image site's handler behind TLS, with a self-signed certificate for images.example.
    Yields (port, certificate file, server names the clients asked for via SNI)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "images.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("images.example")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    names = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_path), str(key_path))
    context.sni_callback = lambda _sock, server_name, _ctx: names.append(server_name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), image_site.httpd.RequestHandlerClass)
    server.site = image_site
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server.server_address[1], str(cert_path), names
    server.shutdown()
    server.server_close()


def test_https_is_pinned_and_verified(tls_site, image_site, monkeypatch):
    port, ca_file, sni_names = tls_site
    real = socket.getaddrinfo
    monkeypatch.setattr(fetch.socket, "getaddrinfo", lambda host, *a, **k: real(
        "127.0.0.1" if host == "images.example" else host, *a, **k))
    url = "https://images.example:%d/sphere.png" % port

    untrusted = _refused(url, allow_networks=LOOPBACK)                 # self-signed: not trusted
    assert untrusted.code == INVALID_INPUT and "certificate could not be verified" in untrusted.message

    trusting = ssl.create_default_context(cafile=ca_file)
    monkeypatch.setattr(fetch.ssl, "create_default_context", lambda: trusting)
    assert fetch.fetch_image(url, max_bytes=10 ** 7, allow_networks=LOOPBACK) == sphere_bytes()
    assert "images.example" in sni_names                                # SNI and the check use the name
    assert image_site.requests[-1] == ("/sphere.png", "images.example:%d" % port)
