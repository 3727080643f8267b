"""Test setup: a real Petri server (``node bin/petri.js serve``) with a throw-away data directory.

``PETRI_TEST_URL`` + ``PETRI_TEST_API_KEY`` point the tests at a server that is already running.
"""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, NamedTuple

import pytest

SDK_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = SDK_DIR.parents[1]
TESTDATA_DIR = SDK_DIR.parent / "testdata"

# The tests import the package from this checkout, whether or not it is pip-installed.
sys.path.insert(0, str(SDK_DIR))


class LiveServer(NamedTuple):
    url: str
    api_key: str

    @property
    def conn(self) -> Dict[str, str]:
        return {"url": self.url, "api_key": self.api_key}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def npm_registry() -> str:
    try:
        return subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def node_image() -> str:
    """The image the server runs Node in (``PETRI_TEST_DEPS_IMAGE`` or the configured default)."""
    if os.environ.get("PETRI_TEST_DEPS_IMAGE"):
        return os.environ["PETRI_TEST_DEPS_IMAGE"]
    code = "import('./dist/src/config.js').then((m) => console.log(m.loadConfig({}).images.node))"
    return subprocess.run(["node", "-e", code], cwd=REPO_DIR, capture_output=True, text=True, check=True).stdout.strip()


def image_built(name: str) -> "tuple[bool, str]":
    """Whether a built-in image is in the Docker engine, asked of Docker (not of the server under test)."""
    code = f"import('./dist/src/images/catalog.js').then((m) => console.log(m.imageRefOf({name!r})))"
    ref = subprocess.run(["node", "-e", code], cwd=REPO_DIR, capture_output=True, text=True, check=True).stdout.strip()
    try:
        ok = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True).returncode == 0
    except OSError:
        ok = False
    return ok, ref


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    if os.environ.get("PETRI_TEST_URL") and os.environ.get("PETRI_TEST_API_KEY"):
        yield LiveServer(os.environ["PETRI_TEST_URL"], os.environ["PETRI_TEST_API_KEY"])
        return
    node = shutil.which("node")
    assert node, "node is needed to start the Petri server"
    bin_path = os.environ.get("PETRI_SERVER_BIN") or str(REPO_DIR / "bin" / "petri.js")
    data_dir = tempfile.mkdtemp(prefix="jhansi-py-")
    port = _free_port()
    api_key = "pk_sdk_" + secrets.token_hex(12)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PETRI_DATA_DIR": data_dir, "PETRI_PORT": str(port), "PETRI_HOST": "127.0.0.1",
           "PETRI_ADMIN_TOKEN": api_key, "PETRI_LOG_LEVEL": "warn"}
    # Dependency installs: the npm registry npm is configured for here, and an image that has the installers.
    env.setdefault("PETRI_NPM_REGISTRY", npm_registry())
    if os.environ.get("PETRI_TEST_DEPS_IMAGE"):
        env["PETRI_IMAGE_NODE"] = env["PETRI_IMAGE_PYTHON"] = os.environ["PETRI_TEST_DEPS_IMAGE"]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([node, bin_path, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError("petri serve exited before it was ready:\n" + log.read().decode(errors="replace"))
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError("petri serve did not answer /healthz within 60 s:\n" + log.read().decode(errors="replace"))
            time.sleep(0.1)
        yield LiveServer(url, api_key)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sb(server: LiveServer):
    from jhansi import Sandbox

    s = Sandbox(language="python", **server.conn)
    try:
        yield s
    finally:
        s.kill()


def write_tree(root: Path, files: Dict[str, "str | bytes"]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
