"""Download only the weight files an engine declares, into <weights_dir>/<org>/<name>/ (the first
place the engines look), with huggingface_hub.snapshot_download(allow_patterns=..., revision=<commit>).

Before: the repository's file list at the pinned revision (the first install resolves "main" to a
commit and the record keeps it), so the sizes are known: a disk-space check for what is missing, and
no network at all when every file is already there at its size. During: progress from the bytes on
disk (final files and the hub's *.incomplete files), so it reads the same whatever the hub library's
own bars do. After: every file's size against the listing, and sha256 for the large (LFS) files this
run downloaded. A failed file is removed so the next run fetches it again.
"""

import hashlib
import os
import threading
import time
import urllib.error
import urllib.request

from shared.errors import ENGINE_UNAVAILABLE, STORAGE, UNAUTHORIZED, Gen3DError

from . import disk

GB = 1024 ** 3
POLL_S = 0.5
HASH_CHUNK = 8 << 20


def target_dir(weights_dir, repo_id):
    org, _, name = repo_id.partition("/")
    return os.path.join(weights_dir, org, name)


def endpoint():
    """$HF_ENDPOINT read now (the hub library reads it once, at import)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _offline_switch():
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_error(exc, weights):
    """A hub exception as the error the user sees, with what to do."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    repo, page = weights.repo_id, "%s/%s" % (endpoint(), weights.repo_id)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError) or status == 403:
        return Gen3DError(UNAUTHORIZED, "The Hugging Face repository %s is gated (HTTP %s): open %s while logged in, "
                          "accept its terms, then log in here with `hf auth login` (or set HF_TOKEN to a token that "
                          "can read it) and run the install again." % (repo, status, page), stage="weights",
                          retryable=False)
    if isinstance(exc, RevisionNotFoundError):
        return Gen3DError(ENGINE_UNAVAILABLE, "The revision %s of %s does not exist (any more). Update Gen3D, or remove "
                          "this engine's entry from the install record to take the current one." %
                          (weights.revision, repo), stage="weights", retryable=False)
    if isinstance(exc, RepositoryNotFoundError) or status == 401:
        return Gen3DError(UNAUTHORIZED, "The Hugging Face repository %s was refused (HTTP %s: not found, private or "
                          "gated). If it needs an account, accept its terms at %s, log in with `hf auth login` (or set "
                          "HF_TOKEN) and run the install again." % (repo, status, page), stage="weights",
                          retryable=False)
    if isinstance(exc, HfHubHTTPError):
        return Gen3DError(ENGINE_UNAVAILABLE, "The Hugging Face hub answered HTTP %s for %s; try again later (the "
                          "install resumes)." % (status, repo), stage="weights", retryable=True)
    return offline_error(exc, weights)


def offline_error(exc, weights):
    if _offline_switch():
        why = "HF_HUB_OFFLINE is set, so downloads are switched off"
        todo = "unset HF_HUB_OFFLINE and run the install again, or copy the files in yourself (`hf download %s " \
               "--local-dir DIR`) and point --weights-dir at DIR's parent" % weights.repo_id
    else:
        why = "could not reach %s (%s: %s)" % (endpoint(), type(exc).__name__, exc)
        todo = "check the connection (and HF_ENDPOINT or a proxy if you use one) and run the install again; what is " \
               "already downloaded is kept"
    return Gen3DError(ENGINE_UNAVAILABLE, "Cannot download %s: %s. To fix: %s." % (weights.what, why, todo),
                      stage="weights", retryable=True)


def listing(weights, revision):
    """(commit, {path: (size, lfs_sha256 or None)}) of the declared files at `revision`."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    if _offline_switch():
        raise offline_error(None, weights)
    api = HfApi(endpoint=endpoint())
    try:
        commit = api.repo_info(weights.repo_id, revision=revision).sha
        tree = [entry for entry in api.list_repo_tree(weights.repo_id, revision=commit, recursive=True)
                if isinstance(entry, RepoFile)]
    except Exception as exc:          # every hub/network failure becomes a message with what to do
        raise hub_error(exc, weights) from exc
    chosen = filter_repo_objects(tree, allow_patterns=list(weights.allow_patterns), key=lambda entry: entry.path)
    files = {entry.path: (int(entry.size), entry.lfs.sha256 if entry.lfs else None) for entry in chosen}
    if not files:
        raise Gen3DError(ENGINE_UNAVAILABLE, "%s at %s has none of the files Gen3D needs (%s); update Gen3D."
                         % (weights.repo_id, commit[:12], ", ".join(weights.allow_patterns)), stage="weights",
                         retryable=False)
    return commit, files


def present(target, files):
    """Paths of `files` already on disk at their listed size."""
    return {path for path, (size, _sha) in files.items()
            if os.path.isfile(os.path.join(target, path)) and os.path.getsize(os.path.join(target, path)) == size}


def bytes_on_disk(target, files):
    done = 0
    for path, (size, _sha) in files.items():
        full = os.path.join(target, path)
        if os.path.isfile(full):
            done += min(os.path.getsize(full), size)
    partial_root = os.path.join(target, ".cache", "huggingface")
    for folder, _dirs, names in os.walk(partial_root):
        done += sum(os.path.getsize(os.path.join(folder, name)) for name in names if name.endswith(".incomplete")
                    and os.path.isfile(os.path.join(folder, name)))
    return done


class _Watcher(threading.Thread):
    """Reports the bytes on disk while snapshot_download runs."""

    def __init__(self, reporter, target, files, start_bytes, total, what, bar, offset, share):
        super().__init__(daemon=True)
        self.reporter, self.target, self.files = reporter, target, files
        self.start_bytes, self.total, self.what, self.bar = start_bytes, total, what, bar
        self.offset, self.share = offset, share
        self.stopped = threading.Event()
        self._shown = 0

    def tick(self):
        done = min(bytes_on_disk(self.target, self.files), self.total)
        if self.bar is not None:
            self.bar.update(max(0, done - self.start_bytes - self._shown))
            self._shown = max(self._shown, done - self.start_bytes)
        self.reporter.progress("weights", self.offset + self.share * done / max(self.total, 1),
                               "downloading %s: %.2f of %.2f GB" % (self.what, done / GB, self.total / GB))

    def run(self):
        while not self.stopped.wait(POLL_S):
            self.tick()


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remove(target, path):
    for candidate in (os.path.join(target, path),
                      os.path.join(target, ".cache", "huggingface", "download", path + ".metadata")):
        if os.path.isfile(candidate):
            os.remove(candidate)


def verify(target, files, fresh, weights, reporter):
    """Sizes of all files, sha256 of the LFS files downloaded now; a bad file is removed."""
    for index, (path, (size, sha)) in enumerate(sorted(files.items())):
        full = os.path.join(target, path)
        actual = os.path.getsize(full) if os.path.isfile(full) else None
        if actual != size:
            _remove(target, path)
            raise Gen3DError(STORAGE, "%s: %s has %s bytes but the repository lists %d; the file was removed. Run the "
                             "install again to fetch it anew (if this repeats, the download is being cut or altered "
                             "on the way)." % (weights.repo_id, path, "no" if actual is None else actual, size),
                             stage="verify", retryable=True)
        if sha and path in fresh:
            reporter.progress("verify", index / max(len(files), 1), "checking %s" % path)
            if sha256_of(full) != sha:
                _remove(target, path)
                raise Gen3DError(STORAGE, "%s: %s does not match its checksum; the file was removed. Run the install "
                                 "again to fetch it anew." % (weights.repo_id, path), stage="verify", retryable=True)


def fetch(weights, weights_dir, reporter, known=None, offset=0.0, share=1.0, listed=None):
    """Make `weights` complete in <weights_dir>/<org>/<name>. `known` is the install record's
    {"revision", "files"} from an earlier run: when every file is there at its size, nothing is asked of
    the network. `listed` is a listing() already made. Returns {"revision": commit, "files": {path: size},
    "downloaded": bytes}."""
    target = target_dir(weights_dir, weights.repo_id)
    if known and known.get("files"):
        files = {path: (int(size), None) for path, size in known["files"].items()}
        if present(target, files) == set(files):
            reporter.progress("weights", offset + share, "%s: all %d files already here" % (weights.what, len(files)))
            return {"revision": known["revision"], "files": known["files"], "downloaded": 0}
    commit, files = listed or listing(weights, (known or {}).get("revision") or weights.revision)
    have = present(target, files)
    missing = {path: files[path] for path in files if path not in have}
    result = {"revision": commit, "files": {path: size for path, (size, _sha) in files.items()}, "downloaded": 0}
    if not missing:
        reporter.progress("weights", offset + share, "%s: all %d files already here" % (weights.what, len(files)))
        return result
    needed = sum(size for size, _sha in missing.values())
    disk.require_space(target, needed, weights.what)
    total = sum(size for size, _sha in files.values())
    start = bytes_on_disk(target, files)
    bar = reporter.bytes_bar(needed, weights.repo_id)
    watcher = _Watcher(reporter, target, files, start, total, weights.what, bar, offset, share)
    watcher.start()
    _download(weights, target, commit)
    watcher.stopped.set()
    watcher.join()
    watcher.tick()
    reporter.close_bar()
    verify(target, files, set(missing), weights, reporter)
    result["downloaded"] = needed
    return result


def _download(weights, target, commit):
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()            # ours shows the bytes; the hub's bars would interleave with it
    try:
        snapshot_download(weights.repo_id, revision=commit, local_dir=target,
                          allow_patterns=list(weights.allow_patterns), endpoint=endpoint(), max_workers=4)
    except OSError as exc:
        if "Consistency check failed" in str(exc):
            raise Gen3DError(STORAGE, "A file of %s arrived with the wrong size (%s). Run the install again; files "
                             "already complete are kept." % (weights.repo_id, exc), stage="weights",
                             retryable=True) from exc
        if "No space left" in str(exc) or getattr(exc, "errno", None) == 28:
            raise Gen3DError(STORAGE, "The disk filled up while downloading %s into %s. Free some space (or choose "
                             "another --weights-dir) and run the install again." % (weights.repo_id, target),
                             stage="weights", retryable=False) from exc
        raise hub_error(exc, weights) from exc
    except Exception as exc:
        raise hub_error(exc, weights) from exc
    finally:
        if not was_disabled:
            enable_progress_bars()


def fetch_url(item, folder, reporter, offset=0.0, share=1.0):
    """A file from a plain URL, resumed with a Range request from <file>.part across runs, then checked
    by size and sha256. Returns the bytes downloaded now."""
    path = os.path.join(folder, item.filename)
    if os.path.isfile(path) and os.path.getsize(path) == item.size:
        reporter.progress("weights", offset + share, "%s already here" % item.filename)
        return 0
    partial = path + ".part"
    have = os.path.getsize(partial) if os.path.isfile(partial) else 0
    if have > item.size:
        os.remove(partial)
        have = 0
    disk.require_space(folder, item.size - have, item.what)
    os.makedirs(folder, exist_ok=True)
    request = urllib.request.Request(item.url, headers={"Range": "bytes=%d-" % have} if have else {})
    fetched = 0
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            mode = "ab" if have and response.status == 206 else "wb"
            have = have if mode == "ab" else 0
            with open(partial, mode) as handle:
                last = 0.0
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    handle.write(chunk)
                    fetched += len(chunk)
                    if time.monotonic() - last > POLL_S:
                        last = time.monotonic()
                        reporter.progress("weights", offset + share * (have + fetched) / item.size,
                                          "downloading %s: %.0f of %.0f MB" % (item.filename, (have + fetched) / 2**20,
                                                                               item.size / 2**20))
    except urllib.error.HTTPError as exc:
        raise Gen3DError(ENGINE_UNAVAILABLE, "Could not download %s from %s (HTTP %d); run the install again later."
                         % (item.what, item.url, exc.code), stage="weights", retryable=True) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise Gen3DError(ENGINE_UNAVAILABLE, "Could not download %s from %s (%s): check the connection and run the "
                         "install again; the part already downloaded is kept." % (item.what, item.url,
                                                                                  getattr(exc, "reason", exc)),
                         stage="weights", retryable=True) from exc
    size = os.path.getsize(partial)
    if size != item.size or sha256_of(partial) != item.sha256:
        os.remove(partial)
        raise Gen3DError(STORAGE, "%s from %s is not the expected file (%d bytes, expected %d with sha256 %s); it was "
                         "removed. Run the install again." % (item.filename, item.url, size, item.size, item.sha256),
                         stage="verify", retryable=True)
    os.replace(partial, path)
    return fetched
