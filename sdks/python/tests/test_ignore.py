import json

from conftest import TESTDATA_DIR, write_tree

from jhansi import IgnoreMatcher, list_local_files


def test_matcher_agrees_with_the_shared_table():
    # The same table drives the TypeScript SDK's tests, so both matchers agree.
    cases = json.loads((TESTDATA_DIR / "ignore-cases.json").read_text())["cases"]
    for c in cases:
        m = IgnoreMatcher(c["patterns"])
        got = m.ignores_path(c["path"], c.get("dir", False))
        assert got == c["ignored"], f"{c['patterns']} on {c['path']}{'/' if c.get('dir') else ''}"


def test_walk_skips_defaults_honours_petriignore_and_never_descends_into_ignored_dirs(tmp_path):
    write_tree(tmp_path, {
        "main.py": "print(1)\n",
        "lib/util.py": "x = 1\n",
        ".git/config": "[core]\n",
        "node_modules/a/index.js": "",
        "src/__pycache__/m.pyc": "",
        ".venv/bin/python": "",
        "build/out.bin": "0",
        "logs/a.log": "",
        "logs/keep.log": "",
        "secret.env": "K=V",
        "docs/secret.env": "K=V",
        ".petriignore": "# build output\n/build/\n*.log\n!logs/keep.log\nsecret.env\n",
    })
    assert [f.path for f in list_local_files(tmp_path)] == [".petriignore", "lib/util.py", "logs/keep.log", "main.py"]
    every = [f.path for f in list_local_files(tmp_path, default_ignores=False, ignore=["!secret.env"])]
    assert ".git/config" in every and "node_modules/a/index.js" in every and "secret.env" in every
    assert "build/out.bin" not in every
