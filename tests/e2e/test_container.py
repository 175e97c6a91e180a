"""The CPU container image, built from the Dockerfile by scripts/build_image.sh (a base from
Debian's packages, then podman) and started as TGI's `docker run` line starts TGI's: port 80
mapped, a /data volume holding the model, TGI's flags. It answers /generate and
/generate_stream, comes up without any network too, and SIGTERM drains it to exit status 0.
Skipped where podman, runc or mmdebstrap are missing (CI does not install them: the build
takes minutes)."""

import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from sluice.weights.sources import resolve_model
from tests.e2e.server import free_port, stream_events

TOOLS = ("podman", "runc", "mmdebstrap")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
IMAGE = "localhost/sluice-test:cpu"
TGI_FLAGS = (
    *("--max-input-length", "512", "--max-total-tokens", "1024"),
    *("--max-batch-prefill-tokens", "1024", "--num-shard", "1"),
)
IMAGE_USER_ID = 1000

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)}"),
    pytest.mark.skipif(os.geteuid() != 0, reason="podman runs rootful here"),
]


@pytest.mark.timeout(1800)
def test_the_cpu_image_serves_like_tgi_and_drains_on_sigterm(tmp_path: Path) -> None:
    started = time.monotonic()
    subprocess.run(
        ["scripts/build_image.sh"], env={**os.environ, "IMAGE": IMAGE}, check=True, timeout=1500
    )
    build_s = time.monotonic() - started
    size = _podman("image", "inspect", "--format", "{{.Size}}", IMAGE)
    print(f"image {IMAGE}: {int(size) / 1e6:.0f} MB, built in {build_s:.0f} s")

    data = tmp_path / "data"  # the default model already converted, as a later run finds it
    model = resolve_model().path
    shutil.copytree(model, data / "sluice" / "models" / model.name)
    subprocess.run(["chown", "-R", f"{IMAGE_USER_ID}:{IMAGE_USER_ID}", str(data)], check=True)

    port = free_port()
    name = f"sluice-test-{port}"
    # As scripts/build_image.sh runs it: limits some sandboxes let a container set.
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    limits = ("--ulimit", f"nofile={files}:{files}", "--ulimit", "nproc=32768:32768")
    run = ["podman", "run", "--runtime", "runc", "--detach", "--name", name, *limits]
    launched = time.monotonic()
    try:  # a run that fails may still leave its container
        _podman(*run[1:], "-p", f"127.0.0.1:{port}:80", "-v", f"{data}:/data", IMAGE, *TGI_FLAGS)
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, name)
        print(f"healthy {time.monotonic() - launched:.0f} s after `podman run`")
        body = {"inputs": "What is a sluice?", "parameters": {"max_new_tokens": 12}}
        answer = httpx.post(f"{url}/generate", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        with httpx.Client() as client:
            events = stream_events(client, url, body)
        assert events[-1]["generated_text"] == answer.json()["generated_text"]

        _check_serves_without_network(data, limits)

        _podman("stop", "--time", "60", name)  # SIGTERM, then SIGKILL after 60 s
        assert _podman("inspect", "--format", "{{.State.ExitCode}}", name) == "0"
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
        assert "loaded the C++ kernels prebuilt for" in logs.stderr + logs.stdout
    finally:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True)


def _check_serves_without_network(data: Path, limits: tuple[str, ...]) -> None:
    """Once the model is in /data, the image needs no network: it comes up healthy in a
    container that has none (asked from inside, since no port can be mapped)."""
    name = f"sluice-offline-{free_port()}"
    run = ("run", "--runtime", "runc", "--detach", "--network", "none", "--name", name)
    probe = "import urllib.request as r; print(r.urlopen('http://127.0.0.1/health').status)"
    try:
        _podman(*run, *limits, "-v", f"{data}:/data", IMAGE, *TGI_FLAGS)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            answer = subprocess.run(
                ["podman", "exec", name, "python3", "-c", probe], capture_output=True, text=True
            )
            if answer.stdout.strip() == "200":
                return
            time.sleep(1)
        raise TimeoutError("the container without network never became healthy")
    finally:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True)


def _podman(*args: str) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _wait_healthy(url: str, name: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        state = _podman("inspect", "--format", "{{.State.Status}}", name)
        if state != "running":
            logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
            raise AssertionError(f"the container is {state}: {logs.stderr[-2000:]}")
        time.sleep(1)
    raise TimeoutError("the container never became healthy")
