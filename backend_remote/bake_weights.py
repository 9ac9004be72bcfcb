"""Download the weights the chosen engines need into one folder, when the worker image is built.

    python -m backend_remote.bake_weights [--engines hunyuan3d-2.1,hunyuan3d-2,hunyuan3d-2mini]
                                          [--weights-dir DIR]

Files land in DIR/<org>/<name>/..., the first place the engines look ($GEN3D_WEIGHTS_DIR, see
backend_local/engines/hunyuan_common.py), so the worker runs with HF_HUB_OFFLINE=1 and a cold start
downloads nothing. Only what the engines declare is fetched (their ModelFiles): the listed files of a
model, or the whole folder of a diffusers pipeline (model_index.json). Also fetched: the painter's
RealESRGAN upscaler and, when rembg is installed, its u2net background-removal model ($U2NET_HOME).
The script ends with the engines' own lookup, so a build that misses a file fails here instead of
on the first job.
"""

import argparse
import os
import sys
import urllib.request

REALESRGAN_URL = "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"
DEFAULT_ENGINES = ("hunyuan3d-2.1",)


def engine_models(name):
    """The ModelFiles an engine needs, as the engine itself declares them."""
    from backend_local.engines import hunyuan2, hunyuan21

    models = {
        "hunyuan3d-2.1": [hunyuan21.SHAPE_MODEL, hunyuan21.PAINT_MODEL, hunyuan21.DINO_MODEL],
        "hunyuan3d-2": [hunyuan2.Hunyuan2Engine.shape_model, hunyuan2.PAINT_MODEL],
        "hunyuan3d-2mini": [hunyuan2.Hunyuan2MiniEngine.shape_model],
    }
    if name not in models:
        raise SystemExit("unknown engine %r; choose from %s" % (name, ", ".join(models)))
    return models[name]


def patterns_for(model, repo_files):
    """allow_patterns for snapshot_download: exactly the files `model` needs."""
    prefix = model.subfolder + "/" if model.subfolder else ""
    patterns = []
    for entry in model.files:
        path = prefix + entry
        if os.path.basename(entry) == "model_index.json":       # a diffusers pipeline: the whole folder
            folder = os.path.dirname(path)
            patterns.append(folder + "/*" if folder else "*")
            continue
        # "a|b": the first alternative the repository has (e.g. safetensors before a .bin copy)
        choices = [prefix + name for name in entry.split("|")]
        present = [choice for choice in choices if choice in repo_files]
        patterns.append(present[0] if present else choices[0])
        if entry.startswith("config") or entry.endswith(".json"):
            patterns.append(prefix + "*.json")                   # processor/tokenizer configs beside it
    return sorted(set(patterns))


def bake_model(model, weights_dir, token=None):
    from huggingface_hub import list_repo_files, snapshot_download

    org, _, name = model.repo_id.partition("/")
    target = os.path.join(weights_dir, org, name)
    patterns = patterns_for(model, set(list_repo_files(model.repo_id, token=token)))
    print("[bake] %s: %s -> %s" % (model.what, ", ".join(patterns), target), flush=True)
    snapshot_download(model.repo_id, allow_patterns=patterns, local_dir=target, token=token)
    if not model.complete_in(target):
        raise SystemExit("%s is incomplete after download (needs %s in %s)" % (model.what, model.describe_files(),
                                                                              target))


def bake_file(url, path):
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        return
    print("[bake] %s -> %s" % (url, path), flush=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".part"
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as handle:
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            handle.write(chunk)
    os.replace(partial, path)


def bake_u2net():
    """rembg downloads its model on first use; do that now, into $U2NET_HOME."""
    try:
        from rembg import new_session
    except ImportError:
        print("[bake] rembg not installed: the engines fall back to Gen3D's own background removal", flush=True)
        return
    new_session("u2net")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m backend_remote.bake_weights", description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(DEFAULT_ENGINES),
                        help="comma-separated engines to bake weights for (default %(default)s)")
    parser.add_argument("--weights-dir", default=os.environ.get("GEN3D_WEIGHTS_DIR", "/weights"))
    args = parser.parse_args(argv)

    from backend_local.engines import hunyuan21
    from backend_local.engines.hunyuan_common import locate

    weights_dir = os.path.abspath(args.weights_dir)
    os.environ["GEN3D_WEIGHTS_DIR"] = weights_dir          # so the final lookup checks this very folder
    token = os.environ.get("HF_TOKEN") or None
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    models = {}
    for engine in engines:
        for model in engine_models(engine):
            models[(model.repo_id, model.subfolder, model.files)] = model
    for model in models.values():
        bake_model(model, weights_dir, token)
    if "hunyuan3d-2.1" in engines:
        bake_file(REALESRGAN_URL, os.path.join(weights_dir, hunyuan21.REALESRGAN_FILE))
    bake_u2net()

    missing = [model.what for model in models.values() if locate(model)[0] is None]
    if missing:
        raise SystemExit("the engines cannot find: %s" % ", ".join(missing))
    print("[bake] done: %d model folder(s) in %s" % (len(models), weights_dir), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
