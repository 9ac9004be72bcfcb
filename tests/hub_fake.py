"""A loopback stand-in for the Hugging Face hub (point HF_ENDPOINT at it), serving tiny repositories
through the same HTTP API huggingface_hub uses: /api/models/<repo>/revision/<rev>,
/api/models/<repo>/tree/<rev>, and HEAD/GET /<repo>/resolve/<rev>/<path> with Range requests.

Faults, per repository: `gated` (401 GatedRepo on the API or only on files), `drop_once` (paths whose
first GET is cut off halfway through), `listed_size` (paths whose listing lies about the size). Every
request is kept in `requests` as (method, path, Range header) so tests can see what was fetched.
"""

import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeRepo:
    def __init__(self, repo_id, files, commit=None, lfs=(), gated=None):
        self.repo_id = repo_id
        self.files = dict(files)                  # path -> bytes
        self.commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
        self.lfs = set(lfs)                       # paths listed as LFS files (with a sha256)
        self.gated = gated                        # None, "api" or "files"
        self.drop_once = set()
        self.listed_size = {}

    def entry(self, path):
        data = self.files[path]
        item = {"type": "file", "path": path, "size": self.listed_size.get(path, len(data)),
                "oid": hashlib.sha1(data).hexdigest()}
        if path in self.lfs:
            item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": item["size"], "pointerSize": 134}
        return item


class FakeHub:
    def __init__(self):
        self.repos = {}
        self.static = {}                          # name -> bytes, served at /static/<name> (plain URL downloads)
        self.requests = []
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def add(self, repo):
        self.repos[repo.repo_id] = repo
        return repo

    def file_gets(self, path):
        return [(method, rng) for method, url, rng in self.requests if method == "GET" and url.endswith("/" + path)]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body=b"", headers=None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, data, status=200):
                self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

            def _error(self, status, code, message):
                self._send(
                    status, json.dumps({"error": message}).encode(), {"X-Error-Code": code,
                                                                      "X-Error-Message": message,
                                                                      "Content-Type": "application/json"})

            def _repo(self, parts):
                """The longest known repo id at the start of `parts` (ids hold a slash)."""
                for size in (2, 1):
                    repo_id = "/".join(parts[:size])
                    if repo_id in hub.repos:
                        return hub.repos[repo_id], parts[size:]
                return None, parts

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                with hub._lock:
                    hub.requests.append((self.command, url.path, self.headers.get("Range")))
                parts = [urllib.parse.unquote(part) for part in url.path.strip("/").split("/")]
                if parts[0] == "static":
                    data = hub.static.get("/".join(parts[1:]))
                    if data is None:
                        return self._send(404, b"not found")
                    start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                    headers = {"Content-Range": "bytes %d-%d/%d" % (start, len(data) - 1, len(data))} if start else {}
                    with hub._lock:
                        hub.bytes_sent += len(data) - start
                    return self._send(206 if start else 200, data[start:], headers)
                if parts[:2] == ["api", "models"]:
                    repo, rest = self._repo(parts[2:])
                    if repo is None:
                        return self._error(401, "RepoNotFound", "Repository not found")
                    if repo.gated == "api":
                        return self._error(401, "GatedRepo", "Access to this model is restricted")
                    if rest[:1] == ["revision"]:
                        return self._json({"id": repo.repo_id, "sha": repo.commit, "private": False,
                                           "siblings": [{"rfilename": path} for path in repo.files]})
                    if rest[:1] == ["tree"]:
                        return self._json([repo.entry(path) for path in sorted(repo.files)])
                    return self._error(404, "EntryNotFound", "no such API route")
                repo, rest = self._repo(parts)
                if repo is None or rest[:1] != ["resolve"]:
                    return self._error(401, "RepoNotFound", "Repository not found")
                if repo.gated:
                    return self._error(401, "GatedRepo", "Access to this model is restricted")
                path = "/".join(rest[2:])
                if path not in repo.files:
                    return self._error(404, "EntryNotFound", "Entry not found")
                self._file(repo, path)

            def _file(self, repo, path):
                data = repo.files[path]
                etag = hashlib.sha256(data).hexdigest() if path in repo.lfs else hashlib.sha1(data).hexdigest()
                headers = {"X-Repo-Commit": repo.commit, "ETag": '"%s"' % etag, "Accept-Ranges": "bytes"}
                if path in repo.lfs:
                    headers.update({"X-Linked-Etag": '"%s"' % etag, "X-Linked-Size": str(len(data))})
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted and self.command == "GET":
                    start = int(wanted.split("=")[1].split("-")[0])
                    status = 206
                    headers["Content-Range"] = "bytes %d-%d/%d" % (start, len(data) - 1, len(data))
                body = data[start:]
                if self.command == "GET" and path in repo.drop_once:
                    repo.drop_once.discard(path)
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    half = body[: len(body) // 2]
                    self.wfile.write(half)
                    self.wfile.flush()
                    with hub._lock:
                        hub.bytes_sent += len(half)
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if self.command == "GET":
                    with hub._lock:
                        hub.bytes_sent += len(body)
                self._send(status, body, headers)

        return Handler


def tiny_repo(repo_id, sizes, lfs_over=1000, seed=0):
    """A FakeRepo of deterministic pseudo-random files {path: size}; files over `lfs_over` bytes are LFS."""
    files = {}
    for index, (path, size) in enumerate(sorted(sizes.items())):
        block = hashlib.sha256(("%s/%d/%d" % (repo_id, seed, index)).encode()).digest()
        files[path] = (block * (size // len(block) + 1))[:size]
    return FakeRepo(repo_id, files, lfs=[path for path, data in files.items() if len(data) > lfs_over])
