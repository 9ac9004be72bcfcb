"""The upstream source at its pinned commit: GitHub's archive tarball, unpacked once into
~/.gen3d/src/<name>-<commit>/, or a checkout the user already has (--source DIR)."""

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request

from shared.errors import ENGINE_UNAVAILABLE, INVALID_INPUT, Gen3DError

from .record import gen3d_home

MARKER = ".gen3d-source.json"     # written last: a folder without it is an unfinished unpack
CHUNK = 1 << 20


def default_dir(source):
    return os.path.join(gen3d_home(), "src", "%s-%s" % (source.name, source.commit[:12]))


def checkout_commit(folder):
    """The commit of a git checkout or of a folder we unpacked; None when unknown."""
    try:
        with open(os.path.join(folder, MARKER)) as handle:
            return json.load(handle).get("commit")
    except (OSError, ValueError):
        pass
    if os.path.isdir(os.path.join(folder, ".git")) and shutil.which("git"):
        proc = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout.strip()
    return None


def use_local(source, folder, reporter):
    """Check a --source folder is a checkout of `source`; a different commit is allowed with a note."""
    folder = os.path.abspath(os.path.expanduser(folder))
    if not os.path.isfile(os.path.join(folder, source.marker)):
        raise Gen3DError(INVALID_INPUT, "%s is not a checkout of %s: %s is missing. Pass --source a folder cloned from "
                         "https://github.com/%s (commit %s), or leave --source out to fetch it."
                         % (folder, source.repo, source.marker, source.repo, source.commit), stage="source",
                         retryable=False)
    commit = checkout_commit(folder)
    if commit and commit != source.commit:
        reporter.note("%s is at commit %s, not the tested %s; using it as it is" % (folder, commit[:12],
                                                                                     source.commit[:12]))
    reporter.progress("source", 1.0, "using the checkout in %s" % folder)
    return folder


def fetch(source, reporter, dest=None, url=None):
    """Download and unpack the archive into `dest` unless it is already there; returns the folder."""
    dest = os.path.abspath(dest or default_dir(source))
    if checkout_commit(dest) == source.commit and os.path.isfile(os.path.join(dest, source.marker)):
        reporter.progress("source", 1.0, "%s %s already in %s" % (source.repo, source.commit[:12], dest))
        return dest
    url = url or source.url
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=parent) as tmp:
        archive = os.path.join(tmp, "source.tar.gz")
        reporter.progress("source", 0.0, "downloading %s" % url)
        _download(url, archive, source)
        reporter.progress("source", 0.7, "unpacking into %s" % dest)
        top = _unpack(archive, os.path.join(tmp, "tree"), source)
        if not os.path.isfile(os.path.join(top, source.marker)):
            raise Gen3DError(ENGINE_UNAVAILABLE, "The archive from %s has no %s; it is not %s at %s."
                             % (url, source.marker, source.repo, source.commit), stage="source", retryable=False)
        with open(os.path.join(top, MARKER), "w") as handle:
            json.dump({"repo": source.repo, "commit": source.commit, "url": url}, handle)
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(top, dest)
    reporter.progress("source", 1.0, "%s %s in %s" % (source.repo, source.commit[:12], dest))
    return dest


def _download(url, path, source):
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as handle:
            shutil.copyfileobj(response, handle, CHUNK)
    except urllib.error.HTTPError as exc:
        raise Gen3DError(ENGINE_UNAVAILABLE, "Could not download the %s source (%s: HTTP %d). Check the address, or "
                         "clone https://github.com/%s, check out %s and pass the folder with --source."
                         % (source.name, url, exc.code, source.repo, source.commit), stage="source", retryable=True)
    except (urllib.error.URLError, OSError) as exc:
        raise Gen3DError(ENGINE_UNAVAILABLE, "Could not download the %s source from %s (%s): this machine seems to be "
                         "offline. Connect and run the install again, or pass an existing checkout with --source."
                         % (source.name, url, getattr(exc, "reason", exc)), stage="source", retryable=True)


def _unpack(archive, into, source):
    """Unpack safely (no absolute paths, links out of the tree or device files); the archive's one top
    folder (<name>-<commit>/) is returned."""
    os.makedirs(into)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, filter="data")
            else:                                            # Python without extraction filters
                for member in tar.getmembers():
                    target = os.path.realpath(os.path.join(into, member.name))
                    if not target.startswith(os.path.realpath(into) + os.sep) or member.isdev():
                        raise tarfile.TarError("unsafe member %s" % member.name)
                tar.extractall(into)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise Gen3DError(ENGINE_UNAVAILABLE, "The %s source archive is damaged (%s); run the install again."
                         % (source.name, exc), stage="source", retryable=True)
    entries = os.listdir(into)
    return os.path.join(into, entries[0]) if len(entries) == 1 and os.path.isdir(os.path.join(into, entries[0])) \
        else into
