"""Start `python -m backend_remote serve` for a bench and wait until /health answers."""

import subprocess
import time

import httpx


def launch(cmd, cwd, env, log_path, url, headers, timeout_s, poll_s):
    """Popen of the server (output to log_path), once /health answers 200; SystemExit with the log's
    tail when it exits or does not answer within timeout_s."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", headers=headers, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(poll_s)
    proc.kill()
    with open(log_path) as log:
        raise SystemExit("the server did not start:\n" + log.read()[-3000:])
