"""Agent-facing options and results: allow_hosts, secrets, sandbox env, tty, explanations, artifacts."""

import asyncio
import json
import urllib.request

import pytest

from conftest import image_built
from jhansi import AsyncSandbox, InvalidRequestException, Sandbox


def _put_secret(server, name: str, value: str) -> None:
    req = urllib.request.Request(
        f"{server.url}/v1/secrets/{name}", method="PUT", data=json.dumps({"value": value, "kind": "generic"}).encode(),
        headers={"authorization": f"Bearer {server.api_key}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        assert r.status in (200, 201)


def test_sandbox_env_is_layered_and_adds_to_pythonpath(server):
    with Sandbox("python", env={"PYTHONPATH": "/workspace/lib", "COLOUR": "teal"}, **server.conn) as sb:
        assert sb.info.env == {"PYTHONPATH": "/workspace/lib", "COLOUR": "teal"}
        r = sb.exec("import os, sys; print(os.environ['COLOUR'], os.environ['SHAPE']); print([p for p in sys.path if p.startswith('/workspace')])",
                    env={"SHAPE": "round"})
        assert r.stdout == "teal round\n['/workspace/lib', '/workspace']\n", r.stderr


def test_allow_hosts_and_secrets_are_sent_and_reported(server):
    _put_secret(server, "pytoken", "py-s3cr3t-value")
    with Sandbox("python", allow_hosts=["api.example.com"], secrets=["pytoken"], **server.conn) as sb:
        assert sb.info.allow_hosts == ["api.example.com"]
        assert sb.info.secrets == ["pytoken"]
        r = sb.exec("import os; print(os.environ['PETRI_SECRET_PYTOKEN'].startswith('petri-secret:pytoken:'))", allow_hosts=["other.example.com"])
        assert r.stdout == "True\n", r.stderr


def test_explanations_and_error_summary(sb):
    slow = sb.exec("while True: pass", timeout=1.5)
    assert slow.explanation == "killed: exceeded the 1.5 s time limit"
    bad = sb.exec("def f():\n    return 1/0\nf()\n")
    assert bad.explanation == "exited with code 1: ZeroDivisionError: division by zero (<snippet>:2)"
    assert bad.error_summary is not None
    assert (bad.error_summary.type, bad.error_summary.message, bad.error_summary.file, bad.error_summary.line) == ("ZeroDivisionError", "division by zero", "<snippet>", 2)
    fine = sb.exec("print(1)")
    assert fine.explanation is None and fine.error_summary is None


def test_artifacts_come_back_inline(sb):
    r = sb.exec("open('t.csv', 'w').write('a,b\\n1,2\\n'); open('p.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + bytes(8))")
    by_path = {a.path: a for a in r.artifacts}
    assert by_path["t.csv"].mime_type == "text/csv" and by_path["t.csv"].text == "a,b\n1,2\n"
    assert by_path["p.png"].mime_type == "image/png" and by_path["p.png"].data == b"\x89PNG\r\n\x1a\n" + bytes(8)
    sb.files.remove("t.csv")
    sb.files.remove("p.png")


def test_tty_runs_the_program_on_a_terminal(sb):
    plain = sb.exec("import sys; print(sys.stdout.isatty(), sys.stdin.isatty())")
    assert plain.stdout == "False False\n"
    tty = sb.exec("import sys; print(sys.stdout.isatty(), sys.stdin.isatty())", tty=True)
    assert tty.stdout == "True True\n", tty.raw


def test_async_sandbox_takes_the_same_options(server):
    async def main():
        sb = await AsyncSandbox.create("python", env={"A": "1"}, **server.conn)
        try:
            return await sb.exec("import os, sys; print(os.environ['A'], sys.stdout.isatty())", tty=True)
        finally:
            await sb.kill()
    assert asyncio.run(main()).stdout == "1 True\n"


def test_images_and_the_image_option(server, sb):
    images = {i.name: i for i in Sandbox.images(**server.conn)}
    assert "standard" in images and "datascience" in images, list(images)
    assert "python" in images["standard"].default_for
    assert sb.info.image == "standard", "a sandbox that names no image gets its language's default"
    with pytest.raises(InvalidRequestException) as bad:
        Sandbox("python", image="no-such-image", **server.conn)
    assert bad.value.code == "UNKNOWN_IMAGE" and "datascience" in str(bad.value)
    assert {i.name for i in asyncio.run(AsyncSandbox.images(**server.conn))} == set(images)

    built, ref = image_built("datascience")
    if not built:
        pytest.skip(f"SKIP datascience runs: image {ref} is not built here (scripts/setup.sh builds it)")
    ds_info = images["datascience"]
    assert ds_info.built and ds_info.languages["python"].startswith("3.")
    with Sandbox("python", image="datascience", **server.conn) as ds:
        assert ds.info.image == "datascience"
        assert Sandbox.connect(ds.id, **server.conn).info.image == "datascience"
        r = ds.exec("import pandas as pd; print(pd.__version__)", auto_detect_dependencies=False)
        assert r.exit_code == 0, r.stderr
        # Debian versions carry a suffix (2.2.3+dfsg) that pandas itself may not report.
        assert r.stdout.strip().split("+")[0] == ds_info.python_packages["pandas"].split("+")[0]
