"""Dependencies through the SDK: result fields, typed errors, install() against the real npm registry."""

import subprocess

import pytest

from jhansi import DependencyException, Sandbox

from conftest import node_image


def _image_has_npm() -> bool:
    try:
        subprocess.run(["docker", "run", "--rm", "--network", "none", node_image(), "sh", "-c", "command -v npm"],
                       check=True, capture_output=True, timeout=60)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


HAS_NPM = _image_has_npm()
if not HAS_NPM:
    print(f"SKIP real npm installs: image {node_image()} has no npm")


def test_run_reports_detection_and_it_can_be_turned_off(server):
    with Sandbox("python", **server.conn) as sb:
        r = sb.exec("try:\n    import petri_sdk_no_such_module\nexcept ImportError:\n    print('missing')")
        assert r.stdout == "missing\n"
        assert r.dependencies is not None
        assert r.dependencies.ecosystem == "python"
        assert r.dependencies.detected == ["petri_sdk_no_such_module"]
        assert [s["name"] for s in r.dependencies.skipped] == ["petri-sdk-no-such-module"]
        assert r.dependencies.install_ms == 0
        assert sb.exec("import os", auto_detect_dependencies=False).dependencies is None


def test_urls_paths_and_options_raise_dependency_exception_before_anything_runs(server):
    with Sandbox("python", **server.conn) as sb:
        with pytest.raises(DependencyException) as e:
            sb.exec("print(1)", dependencies={"python": ["--index-url=http://127.0.0.9/simple"]})
        assert e.value.code == "DEPENDENCY_INVALID" and e.value.status == 400
        with pytest.raises(DependencyException):
            sb.install(python=["git+https://127.0.0.9/x/y"])
        with pytest.raises(DependencyException):
            Sandbox("python", dependencies={"python": ["../x"]}, **server.conn)
        assert sb.history() == []


@pytest.mark.skipif(not HAS_NPM, reason="the node image has no npm")
def test_install_and_dependencies_on_create_from_the_real_npm_registry(server):
    with Sandbox("node", **server.conn) as sb:
        rep = sb.install(node=["dayjs@1"])
        assert rep.status in ("installed", "reused")
        assert any(p["name"] == "dayjs" and p["hash"].startswith("sha512-") for p in rep.packages)
        r = sb.exec('console.log(require("dayjs")(0).year() >= 1969)', auto_detect_dependencies=False)
        assert r.stdout == "true\n", r.stderr
        assert r.dependencies.status == "reused" and r.dependencies.environment == rep.environment
        with pytest.raises(DependencyException) as e:
            sb.install({"node": ["petri-sdk-no-such-package-7d2e"]})
        assert e.value.code == "DEPENDENCY_NOT_FOUND"
    with Sandbox("node", dependencies={"node": ["dayjs@1"]}, auto_detect_dependencies=False, **server.conn) as sb2:
        r2 = sb2.exec('console.log(typeof require("dayjs"))')
        assert r2.stdout == "function\n", r2.stderr
        assert r2.dependencies.environment == rep.environment
