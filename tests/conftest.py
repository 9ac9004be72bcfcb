import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Small jobs keep the suite fast; the contract does not depend on size.
SMALL = {"face_count": 5000, "texture_size": 512}


def data(*parts):
    return os.path.join(DATA, *parts)


def run_cli(*args, timeout=300, **kwargs):
    """Run `python -m backend_local ...` in a subprocess from the repo root."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "backend_local", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def pipeline():
    from backend_local.pipeline import Pipeline
    return Pipeline("cpu")


@pytest.fixture(scope="session")
def sphere_result(tmp_path_factory, pipeline):
    """One real small job on the sphere, shared by the read-only result tests."""
    from shared.request import parse_request
    out = str(tmp_path_factory.mktemp("results") / "sphere")
    events = []
    manifest = pipeline.run(parse_request(dict(SMALL, image_path=data("sphere", "input.png"))), out,
                            on_progress=events.append)
    return out, manifest, events
