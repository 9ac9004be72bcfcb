"""`python -m backend_local install`: every step through its real code path, no network. The hub is
tests/hub_fake.py on loopback (HF_ENDPOINT), pip installs a wheel built here into a scratch folder,
and the extension step compiles tiny real C++ extensions against the installed torch."""

import base64
import csv
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import zipfile
from types import SimpleNamespace

import pytest

from backend_local.install import build_step, disk, pip_step, record, runner, source_step, spec, weights_step
from backend_local.install.progress import Reporter
from shared.errors import ENGINE_UNAVAILABLE, INVALID_INPUT, STORAGE, UNAUTHORIZED, Gen3DError
from tests.hub_fake import FakeHub, tiny_repo

torch = pytest.importorskip("torch")

WEIGHTS = spec.Weights("acme/Tiny3D", ("shape/config.yaml", "shape/model.bin", "paint/*"), "Tiny3D")
SIZES = {"shape/config.yaml": 120, "shape/model.bin": 300_000, "paint/model_index.json": 80,
         "paint/unet/weights.bin": 50_000, "other/unused.bin": 90_000, "README.md": 40}
WANTED = sorted(path for path in SIZES if not path.startswith(("other/", "README")))


def quiet():
    out = io.StringIO()
    return Reporter(json_lines=True, out=out), out


def events(out):
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))    # no token of the developer's is sent
        monkeypatch.delenv("HF_TOKEN", raising=False)
        fake.add(tiny_repo(WEIGHTS.repo_id, SIZES))
        yield fake


def closed_port_url():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return "http://127.0.0.1:%d" % port


# ---------------------------------------------------------------------------------------------------
# weights


def test_full_download_fetches_only_the_declared_files_with_progress(hub, tmp_path):
    reporter, out = quiet()
    result = weights_step.fetch(WEIGHTS, str(tmp_path / "w"), reporter)
    target = tmp_path / "w" / "acme" / "Tiny3D"
    repo = hub.repos[WEIGHTS.repo_id]
    for path in WANTED:
        assert (target / path).read_bytes() == repo.files[path]
    assert not (target / "other" / "unused.bin").exists() and not (target / "README.md").exists()
    assert hub.file_gets("other/unused.bin") == [] and hub.file_gets("README.md") == []
    assert result["revision"] == repo.commit
    assert result["files"] == {path: SIZES[path] for path in WANTED}
    assert result["downloaded"] == sum(SIZES[path] for path in WANTED)
    fractions = [event["fraction"] for event in events(out) if event["stage"] == "weights"]
    start, share = reporter.stage_span("weights")
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(start + share, abs=1e-3)
    assert "downloading Tiny3D" in [e for e in events(out) if e["stage"] == "weights"][-1]["message"]


def test_second_run_downloads_nothing_and_asks_nothing_with_a_record(hub, tmp_path):
    first = weights_step.fetch(WEIGHTS, str(tmp_path), quiet()[0])
    asked = len(hub.requests)
    again = weights_step.fetch(WEIGHTS, str(tmp_path), quiet()[0], known=first)
    assert again["downloaded"] == 0 and len(hub.requests) == asked           # not even a listing
    lost_record = weights_step.fetch(WEIGHTS, str(tmp_path), quiet()[0])
    assert lost_record["downloaded"] == 0
    assert [r for r in hub.requests[asked:] if "/resolve/" in r[1]] == []     # listed, no file fetched


def test_resume_after_a_dropped_connection(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # The hub writes what it received in chunks of DOWNLOAD_CHUNK_SIZE (10 MB); smaller ones let a tiny file
    # be cut off after some bytes were kept, as a large one is.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16384, raising=False)
    repo = hub.repos[WEIGHTS.repo_id]
    repo.drop_once.add("shape/model.bin")
    weights_step.fetch(WEIGHTS, str(tmp_path), quiet()[0])
    data = repo.files["shape/model.bin"]
    assert (tmp_path / "acme" / "Tiny3D" / "shape" / "model.bin").read_bytes() == data
    gets = hub.file_gets("shape/model.bin")
    assert len(gets) == 2 and gets[0][1] is None
    resumed_at = int(gets[1][1].split("=")[1].rstrip("-"))                  # continued, not restarted
    assert 0 < resumed_at <= len(data) // 2
    assert hub.bytes_sent == sum(SIZES[path] for path in WANTED) + len(data) // 2 - resumed_at


@pytest.mark.parametrize("where", ["api", "files"])
def test_gated_repository_is_unauthorized_with_what_to_do(hub, tmp_path, where):
    hub.repos[WEIGHTS.repo_id].gated = where
    with pytest.raises(Gen3DError) as caught:
        weights_step.fetch(WEIGHTS, str(tmp_path), quiet()[0])
    assert caught.value.code == UNAUTHORIZED and not caught.value.retryable
    assert "hf auth login" in caught.value.message and WEIGHTS.repo_id in caught.value.message
    assert "huggingface-cli" not in caught.value.message


def test_wrong_size_is_a_storage_error_and_the_file_is_removed(hub, tmp_path):
    hub.repos[WEIGHTS.repo_id].listed_size["shape/model.bin"] = SIZES["shape/model.bin"] + 17
    with pytest.raises(Gen3DError) as caught:
        weights_step.fetch(WEIGHTS, str(tmp_path), quiet()[0])
    assert caught.value.code == STORAGE and caught.value.retryable
    assert "shape/model.bin" in caught.value.message and str(SIZES["shape/model.bin"] + 17) in caught.value.message
    assert not (tmp_path / "acme" / "Tiny3D" / "shape" / "model.bin").exists()


def test_corrupted_lfs_file_fails_its_checksum(hub, tmp_path, monkeypatch):
    real = weights_step.sha256_of
    monkeypatch.setattr(weights_step, "sha256_of", lambda path: "0" * 64 if path.endswith("model.bin") else real(path))
    with pytest.raises(Gen3DError) as caught:
        weights_step.fetch(WEIGHTS, str(tmp_path), quiet()[0])
    assert caught.value.code == STORAGE and "checksum" in caught.value.message


def test_offline_is_a_clear_retryable_error(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    with pytest.raises(Gen3DError) as caught:
        weights_step.fetch(WEIGHTS, str(tmp_path), quiet()[0])
    assert caught.value.code == ENGINE_UNAVAILABLE and caught.value.retryable
    assert "could not reach" in caught.value.message and "run the install again" in caught.value.message


def test_offline_switch_is_named_and_complete_weights_need_no_network(hub, tmp_path, monkeypatch):
    first = weights_step.fetch(WEIGHTS, str(tmp_path / "a"), quiet()[0])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights_step.fetch(WEIGHTS, str(tmp_path / "a"), quiet()[0], known=first)["downloaded"] == 0
    with pytest.raises(Gen3DError) as caught:
        weights_step.fetch(WEIGHTS, str(tmp_path / "b"), quiet()[0])
    assert "HF_HUB_OFFLINE" in caught.value.message and "hf download" in caught.value.message


def test_no_space_fails_before_any_file_is_fetched(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(disk, "free_bytes", lambda path: 10 * 2**20)
    with pytest.raises(Gen3DError) as caught:
        weights_step.fetch(WEIGHTS, str(tmp_path), quiet()[0])
    assert caught.value.code == STORAGE and "--weights-dir" in caught.value.message
    assert [r for r in hub.requests if "/resolve/" in r[1]] == []


def test_url_file_resumes_from_its_part_and_checks_sha256(hub, tmp_path):
    data = os.urandom(200_000)
    hub.static["up.pth"] = data
    item = spec.UrlFile(hub.url + "/static/up.pth", "up.pth", len(data), hashlib.sha256(data).hexdigest(), "upscaler")
    (tmp_path / "up.pth.part").write_bytes(data[:70_000])
    assert weights_step.fetch_url(item, str(tmp_path), quiet()[0]) == len(data) - 70_000
    assert (tmp_path / "up.pth").read_bytes() == data and not (tmp_path / "up.pth.part").exists()
    assert hub.requests[-1][2] == "bytes=70000-"
    assert weights_step.fetch_url(item, str(tmp_path), quiet()[0]) == 0
    bad = spec.UrlFile(item.url, "bad.pth", len(data), "f" * 64, "upscaler")
    with pytest.raises(Gen3DError) as caught:
        weights_step.fetch_url(bad, str(tmp_path), quiet()[0])
    assert caught.value.code == STORAGE and not (tmp_path / "bad.pth").exists()


# ---------------------------------------------------------------------------------------------------
# pip


def make_wheel(folder, name, version, requires=()):
    """A minimal pure-Python wheel: one module, METADATA, WHEEL and RECORD."""
    dist = "%s-%s" % (name, version)
    files = {"%s.py" % name: "VALUE = %r\n" % version,
             "%s.dist-info/METADATA" % dist: "Metadata-Version: 2.1\nName: %s\nVersion: %s\n%s" % (
                 name, version, "".join("Requires-Dist: %s\n" % req for req in requires)),
             "%s.dist-info/WHEEL" % dist: "Wheel-Version: 1.0\nGenerator: gen3d-test\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n"}
    rows = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        rows.append([path, "sha256=" + digest, str(len(text.encode()))])
    rows.append(["%s.dist-info/RECORD" % dist, "", ""])
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    files["%s.dist-info/RECORD" % dist] = buffer.getvalue()
    path = os.path.join(folder, "%s-py3-none-any.whl" % dist)
    with zipfile.ZipFile(path, "w") as archive:
        for name_in, text in files.items():
            archive.writestr(name_in, text)
    return path


def test_pip_step_installs_a_local_wheel_once(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    make_wheel(str(wheels), "gen3dtiny", "0.1")
    engine = spec.EngineSpec("tiny", packages=("gen3dtiny==0.1",))
    args = ("--no-index", "--find-links", str(wheels), "--target", str(target))
    log = io.StringIO()
    commands = pip_step.install_packages(engine, quiet()[0], cuda=False, extra_args=args, search_path=[str(target)],
                                         log=log)
    assert (target / "gen3dtiny.py").read_text() == "VALUE = '0.1'\n"
    assert len(commands) == 1 and "--constraint" in commands[0]
    assert pip_step.install_packages(engine, quiet()[0], cuda=False, extra_args=args,
                                     search_path=[str(target)]) == []            # satisfied: pip not run again


def test_pip_step_keeps_torch_and_says_what_failed(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(str(wheels), "gen3dneedsoldtorch", "0.1", requires=("torch<1",))
    engine = spec.EngineSpec("tiny", packages=("gen3dneedsoldtorch==0.1",))
    before = pip_step.installed_version("torch")
    with pytest.raises(Gen3DError) as caught:
        pip_step.install_packages(engine, quiet()[0], cuda=False, log=io.StringIO(),
                                  extra_args=("--no-index", "--find-links", str(wheels), "--target",
                                              str(tmp_path / "site")), search_path=[str(tmp_path / "site")])
    assert caught.value.code == ENGINE_UNAVAILABLE and "torch" in caught.value.message
    assert pip_step.installed_version("torch") == before
    assert pip_step.torch_constraint() == "torch==%s" % before


def test_onnxruntime_is_never_installed_beside_the_other_variant(monkeypatch):
    monkeypatch.setattr(pip_step, "installed_version", lambda name, path=None: "1.0" if name == "onnxruntime" else None)
    assert pip_step.onnxruntime_requirement(cuda=True) is None
    monkeypatch.setattr(pip_step, "installed_version", lambda name, path=None: None)
    assert pip_step.onnxruntime_requirement(cuda=True) == "onnxruntime-gpu"
    assert pip_step.onnxruntime_requirement(cuda=False) == "onnxruntime"


# ---------------------------------------------------------------------------------------------------
# native extensions

# Built by torch.utils.cpp_extension (torch's include paths, ABI flags, linked to its c10), as custom_rasterizer
# is; it uses c10 and pybind11 only, because <torch/extension.h> alone takes minutes to compile on a small CI box.
TINY_TORCH_CPP = """
#include <pybind11/pybind11.h>
#include <c10/util/StringUtil.h>
std::string joined(int a, int b) { return c10::str(a, "+", b, "=", a + b); }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("joined", &joined); }
"""
TINY_SETUP = """
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension
setup(name="gen3d_tiny_ext", version="0.1", ext_modules=[CppExtension("gen3d_tiny_ext", ["tiny.cpp"])],
      cmdclass={"build_ext": BuildExtension})
"""
TINY_PYBIND_CPP = """
#include <pybind11/pybind11.h>
int add(int a, int b) { return a + b; }
PYBIND11_MODULE(gen3d_tiny_pybind, m) { m.def("add", &add); }
"""


def test_setup_extension_builds_against_the_installed_torch(tmp_path):
    source = tmp_path / "src"
    (source / "ext").mkdir(parents=True)
    (source / "ext" / "setup.py").write_text(TINY_SETUP)
    (source / "ext" / "tiny.cpp").write_text(TINY_TORCH_CPP)
    ext = spec.Extension("tiny", "setup", "ext", "gen3d_tiny_ext")
    target = tmp_path / "site"
    assert build_step.build_setup(ext, str(source), quiet()[0], target=str(target), log=io.StringIO()) is True
    env = dict(os.environ, PYTHONPATH=str(target))
    proc = subprocess.run([sys.executable, "-c", "import torch, gen3d_tiny_ext as m; print(m.joined(2, 40))"],
                          capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == "2+40=42", proc.stderr
    assert build_step.build_setup(ext, str(source), quiet()[0], target=str(target)) is False   # already built


def test_pybind_extension_is_named_with_this_pythons_suffix(tmp_path):
    import sysconfig

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "gen3d_tiny_pybind.cpp").write_text(TINY_PYBIND_CPP)
    ext = spec.Extension("tiny", "pybind", "gen3d_tiny_pybind.cpp", "gen3d_tiny_pybind", dest="out")
    output = build_step.build_pybind(ext, str(tmp_path / "src"), quiet()[0], log=io.StringIO())
    assert output == str(tmp_path / "src" / "out" / ("gen3d_tiny_pybind" + sysconfig.get_config_var("EXT_SUFFIX")))
    proc = subprocess.run([sys.executable, "-c", "import gen3d_tiny_pybind as m; print(m.add(2, 40))"],
                          capture_output=True, text=True, cwd=os.path.dirname(output))
    assert proc.stdout.strip() == "42", proc.stderr
    mtime = os.path.getmtime(output)
    assert build_step.build_pybind(ext, str(tmp_path / "src"), quiet()[0]) == output
    assert os.path.getmtime(output) == mtime                                   # not rebuilt


@pytest.mark.skipif(torch.version.cuda is not None, reason="checks the message on a CPU-only torch")
def test_cuda_extension_on_a_cpu_torch_says_what_to_do(tmp_path):
    (tmp_path / "ext").mkdir()
    ext = spec.Extension("custom_rasterizer", "setup", "ext", "gen3d_no_such_module", cuda=True)
    with pytest.raises(Gen3DError) as caught:
        build_step.build_setup(ext, str(tmp_path), quiet()[0])
    assert caught.value.code == ENGINE_UNAVAILABLE and "CPU-only" in caught.value.message
    assert "hunyuan3d-2mini" in caught.value.message


# ---------------------------------------------------------------------------------------------------
# source


def tarball(top, files):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo("%s/%s" % (top, path))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_source_archive_is_fetched_once_and_a_local_checkout_is_checked(hub, tmp_path):
    source = spec.Source("acme/Tiny3D", "a" * 40, "paint/pipeline.py")
    hub.static["tiny.tar.gz"] = tarball("Tiny3D-" + "a" * 40, {"paint/pipeline.py": "X = 1\n", "README": "hi"})
    dest = tmp_path / "src"
    url = hub.url + "/static/tiny.tar.gz"
    assert source_step.fetch(source, quiet()[0], dest=str(dest), url=url) == str(dest)
    assert (dest / "paint" / "pipeline.py").read_text() == "X = 1\n"
    assert source_step.checkout_commit(str(dest)) == "a" * 40
    asked = len(hub.requests)
    source_step.fetch(source, quiet()[0], dest=str(dest), url=url)
    assert len(hub.requests) == asked
    assert source_step.use_local(source, str(dest), quiet()[0]) == str(dest)
    with pytest.raises(Gen3DError) as caught:
        source_step.use_local(source, str(tmp_path), quiet()[0])
    assert caught.value.code == INVALID_INPUT and "paint/pipeline.py" in caught.value.message
    with pytest.raises(Gen3DError) as caught:
        source_step.fetch(source, quiet()[0], dest=str(tmp_path / "other"), url=closed_port_url() + "/x.tar.gz")
    assert caught.value.code == ENGINE_UNAVAILABLE and "--source" in caught.value.message


def test_pinned_sources_are_github_archives_of_the_reviewed_commits():
    assert spec.ENGINES["hunyuan3d-2.1"].source.url == ("https://github.com/Tencent-Hunyuan/Hunyuan3D-2.1/archive/"
                                                        "5e3ec6def57591d22ff44722cfe9bea1266084b0.tar.gz")
    assert spec.ENGINES["hunyuan3d-2"].source.commit == "9bcf3028145311cbea5c127aed19717833b3a35f"


# ---------------------------------------------------------------------------------------------------
# the spec against the engines, the record, the whole command


def test_spec_downloads_every_file_the_engines_look_for():
    from fnmatch import fnmatch

    from backend_local.engines import hunyuan2, hunyuan21

    engines = {"hunyuan3d-2.1": [hunyuan21.SHAPE_MODEL, hunyuan21.PAINT_MODEL, hunyuan21.DINO_MODEL],
               "hunyuan3d-2": [hunyuan2.Hunyuan2Engine.shape_model, hunyuan2.PAINT_MODEL],
               "hunyuan3d-2mini": [hunyuan2.Hunyuan2MiniEngine.shape_model],
               "hunyuan3d-2mv": hunyuan2.Hunyuan2MVEngine.model_files()}
    for name, models in engines.items():
        patterns = {w.repo_id: w.allow_patterns for w in spec.ENGINES[name].weights}
        for model in models:
            for entry in model.files:
                choices = ["/".join(filter(None, [model.subfolder, option])) for option in entry.split("|")]
                assert any(fnmatch(choice, pattern) for choice in choices for pattern in patterns[model.repo_id]), \
                    (name, model.repo_id, entry)
    assert "pytorch-lightning==2.6.6" in spec.ENGINES["hunyuan3d-2.1"].packages
    assert spec.ENGINES["hunyuan3d-2.1"].files[0].filename == hunyuan21.REALESRGAN_FILE


def test_record_gives_the_engines_their_defaults(tmp_path, monkeypatch):
    path = str(tmp_path / "install.json")
    record.update_engine("hunyuan3d-2.1", {"weights_dir": "/w", "source": "/src/h21"}, path)
    env = {}
    assert record.apply_to_environment(env, path) == {"weights_dir": "/w", "hunyuan21_repo": "/src/h21"}
    assert env == {record.WEIGHTS_ENV: "/w", record.REPO21_ENV: "/src/h21"}
    env = {record.WEIGHTS_ENV: "/mine"}
    record.apply_to_environment(env, path)
    assert env[record.WEIGHTS_ENV] == "/mine"                                    # the user's setting wins
    assert json.load(open(path))["engines"]["hunyuan3d-2.1"]["installed_at"].endswith("Z")


def test_install_command_end_to_end_json_progress_and_idempotent(hub, tmp_path, monkeypatch, capsys):
    """2mini's real flow with the packages already installed (numpy stands in for its list): weights from the
    fake hub, the record, then `engines` in a fresh interpreter finds the weights through the record."""
    from backend_local.install import cli as install_cli

    files = {"hunyuan3d-dit-v2-mini/config.yaml": 200, "hunyuan3d-dit-v2-mini/model.fp16.safetensors": 40_000,
             "hunyuan3d-dit-v2-mini/model.ckpt": 90_000}
    hub.add(tiny_repo("tencent/Hunyuan3D-2mini", files))
    real = spec.ENGINES["hunyuan3d-2mini"]
    monkeypatch.setitem(runner.ENGINES, "hunyuan3d-2mini", spec.EngineSpec(real.name, packages=("numpy",),
                                                                            weights=real.weights))
    monkeypatch.setenv("GEN3D_HOME", str(tmp_path / "home"))
    for key in (record.RECORD_ENV, record.WEIGHTS_ENV, record.REPO21_ENV, "HY3DGEN_MODELS"):
        monkeypatch.delenv(key, raising=False)
    args = SimpleNamespace(engine="hunyuan3d-2mini", weights_dir=None, source=None, json_progress=True)

    install_cli.main(args)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    progress = [line for line in lines if line["event"] == "progress"]
    assert progress and all(0.0 <= line["fraction"] <= 1.0 for line in progress)
    assert [line["fraction"] for line in progress] == sorted(line["fraction"] for line in progress)
    done = lines[-1]
    assert done["event"] == "done" and done["engine"] == "hunyuan3d-2mini"
    row = next(r for r in done["engines"] if r["name"] == "hunyuan3d-2mini")
    assert row["reason"] == done["reason"]
    assert "weights not found" not in row["reason"]           # found through the record's weights folder
    weights_dir = tmp_path / "home" / "weights" / "tencent" / "Hunyuan3D-2mini"
    assert (weights_dir / "hunyuan3d-dit-v2-mini" / "model.fp16.safetensors").stat().st_size == 40_000
    assert not (weights_dir / "hunyuan3d-dit-v2-mini" / "model.ckpt").exists()
    saved = json.load(open(tmp_path / "home" / "install.json"))
    assert saved["weights_dir"] == str(tmp_path / "home" / "weights")
    assert saved["engines"]["hunyuan3d-2mini"]["weights"]["tencent/Hunyuan3D-2mini"]["revision"] == \
        hub.repos["tencent/Hunyuan3D-2mini"].commit

    asked = len(hub.requests)
    install_cli.main(args)
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert again[-1]["event"] == "done" and len(hub.requests) == asked       # second run: no network at all


def test_install_command_failure_is_one_error_line(hub, tmp_path, monkeypatch, capsys):
    from backend_local.install import cli as install_cli

    monkeypatch.setenv("GEN3D_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(record.RECORD_ENV, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    real = spec.ENGINES["hunyuan3d-2mini"]
    monkeypatch.setitem(runner.ENGINES, "hunyuan3d-2mini", spec.EngineSpec(real.name, packages=("numpy",),
                                                                            weights=real.weights))
    code = install_cli.main(SimpleNamespace(engine="hunyuan3d-2mini", weights_dir=None, source=None,
                                            json_progress=True))
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 2 and last["event"] == "error" and last["code"] == ENGINE_UNAVAILABLE
    assert last["retryable"] is True and "could not reach" in last["message"]


def test_unavailable_engines_point_to_the_install_command(tmp_path, monkeypatch):
    from backend_local.engines.registry import EngineRegistry

    for key in ("GEN3D_WEIGHTS_DIR", "GEN3D_HUNYUAN21_REPO", "HY3DGEN_MODELS", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HY3DGEN_MODELS", str(tmp_path / "empty-hy3dgen"))
    rows = {row["name"]: row for row in EngineRegistry().describe()}
    for name in ("hunyuan3d-2.1", "hunyuan3d-2", "hunyuan3d-2mini", "hunyuan3d-2mv"):
        reason = rows[name]["reason"]
        assert not rows[name]["available"]
        assert "python -m backend_local install %s" % name in reason, reason
        assert "huggingface-cli" not in reason and "pip install -e" not in reason and "setup.py install" not in reason


def test_source_goes_where_the_engine_looks_and_foreign_files_are_not_overwritten(tmp_path, monkeypatch):
    checkout = tmp_path / "configured"
    (checkout / "paint").mkdir(parents=True)
    (checkout / "paint" / "pipeline.py").write_text("X = 1\n")
    source = spec.Source("acme/Tiny3D", "b" * 40, "paint/pipeline.py")
    monkeypatch.setitem(runner.ENGINES, "hunyuan3d-2mini", spec.EngineSpec("hunyuan3d-2mini", packages=("numpy",),
                                                                            source=source, source_env="GEN3D_TEST_REPO"))
    monkeypatch.setenv("GEN3D_TEST_REPO", str(checkout))
    monkeypatch.setenv("GEN3D_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(record.RECORD_ENV, raising=False)
    _row, _rows, entry = runner.install("hunyuan3d-2mini", quiet()[0])
    assert entry["source"] == str(checkout)
    assert record.engine_entry("hunyuan3d-2mini")["source"] == str(checkout)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(Gen3DError) as caught:
        source_step.fetch(source, quiet()[0], dest=str(foreign), url=closed_port_url() + "/x.tar.gz")
    assert caught.value.code == INVALID_INPUT and (foreign / "notes.txt").read_text() == "mine"
