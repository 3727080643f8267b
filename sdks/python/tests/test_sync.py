import os

import pytest
from conftest import write_tree

from jhansi import Sandbox


def workspace_paths(s):
    return sorted(f.path for f in s.files.list("", hashes=False) if f.type == "file")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tmp_path_factory.mktemp("sync")


def test_sync_uploads_all_then_only_changes_and_propagates_deletions(sb, project):
    d = project
    write_tree(d, {
        "main.py": "from lib.util import X\nprint(X)\n",
        "lib/__init__.py": "",
        "lib/util.py": "X = 1\n",
        "data/big.bin": bytes([7]) * 200_000,
        "run.sh": "#!/bin/sh\necho ok\n",
        ".git/HEAD": "ref: refs/heads/main\n",
        "node_modules/dep/index.js": "module.exports = 1\n",
        "lib/__pycache__/util.cpython-311.pyc": "junk",
        ".venv/bin/python": "junk",
        "out/result.txt": "ignored by .petriignore\n",
        "notes.tmp": "ignored\n",
        "keep.tmp": "re-included\n",
        ".petriignore": "# local artefacts\n/out/\n*.tmp\n!keep.tmp\n",
    })
    os.chmod(d / "run.sh", 0o755)
    expected = [".petriignore", "data/big.bin", "keep.tmp", "lib/__init__.py", "lib/util.py", "main.py", "run.sh"]
    total = sum((d / p).stat().st_size for p in expected)

    first = sb.sync(d)
    assert first.uploaded + first.reused == len(expected)
    assert first.bytes_sent == total
    assert workspace_paths(sb) == expected
    assert sb.run("main.py").stdout == "1\n"
    assert sb.exec("import os; print(os.access('run.sh', os.X_OK))").stdout == "True\n", "the executable bit travels"

    again = sb.sync(d)
    assert again.bytes_sent == 0, "a no-change sync sends no file bytes"
    assert again.uploaded == 0 and again.deleted == 0
    assert again.unchanged == len(expected)

    (d / "lib" / "util.py").write_text("X = 2\n")
    one = sb.sync(d)
    assert one.uploaded_paths == ["lib/util.py"]
    assert one.bytes_sent == len("X = 2\n")
    assert sb.run("main.py").stdout == "2\n"

    (d / "data" / "big.bin").unlink()
    (d / "data").rmdir()
    (d / "keep.tmp").unlink()
    assert sb.sync(d).deleted == 0, "deleting is off by default"
    gone = sb.sync(d, delete_extraneous=True)
    assert gone.bytes_sent == 0
    assert sorted(gone.deleted_paths) == ["data/big.bin", "keep.tmp"]
    assert gone.deleted == 2
    assert workspace_paths(sb) == [".petriignore", "lib/__init__.py", "lib/util.py", "main.py", "run.sh"]

    # Files a run creates are not in the local directory: a re-sync keeps them unless asked.
    sb.exec("open('made.txt', 'w').write('x')")
    assert sb.sync(d).deleted == 0
    assert "made.txt" in workspace_paths(sb)
    sb.sync(d, delete_extraneous=True)
    assert "made.txt" not in workspace_paths(sb)


def test_sync_into_a_target_folder_knows_files_from_upload(server, tmp_path):
    proj = tmp_path / "proj"
    write_tree(proj, {"main.py": "print('hi')\n", "lib/a.py": "A = 1\n", "lib/b.py": "B = 2\n"})
    with Sandbox(language="python", **server.conn) as other:
        other.files.upload(proj, "app")
        other.files.write("app/output.csv", "x\n")
        (proj / "lib" / "b.py").write_text("B = 3\n")
        r = other.sync(proj, target="app")
        assert r.uploaded_paths == ["lib/b.py"], "only the changed file is sent"
        assert r.unchanged == 2 and r.deleted == 0
        assert other.files.read("app/lib/b.py") == "B = 3\n"
        assert other.files.read("app/output.csv") == "x\n", "a file the project does not have survives"
        assert other.run("app/main.py").stdout == "hi\n"
        d = other.sync(proj, target="app", delete_extraneous=True)
        assert d.deleted_paths == ["output.csv"]


def test_content_already_uploaded_by_the_key_owner_is_reused(server, sb, project):
    with Sandbox(language="python", **server.conn) as other:
        r = other.sync(project)
        assert r.bytes_sent == 0 and r.uploaded == 0
        assert r.reused > 0
        assert workspace_paths(other) == workspace_paths(sb)
        assert other.run("main.py").stdout == "2\n"


def test_more_files_than_one_request_carries_go_in_batches(server, tmp_path):
    n = 10_100  # one request carries at most 10,000 files (BATCH_MAX_FILES × 20)
    write_tree(tmp_path, {f"d{i % 7}/f{i}.txt": f"{i}\n" for i in range(n)})
    with Sandbox(language="bash", **server.conn) as other:
        r = other.sync(tmp_path)
        assert r.uploaded == n
        assert len(workspace_paths(other)) == n
        h0 = _quick_hits(server)
        again = other.sync(tmp_path)
        assert again.bytes_sent == 0 and again.unchanged == n
        assert _quick_hits(server) == h0 + 1, "after a sync in batches, the next one is a quick check (the whole manifest was marked)"


def test_names_with_spaces_quotes_and_non_ascii_letters(server, tmp_path):
    write_tree(tmp_path, {"ünï/é.txt": "é\n", "sp ace/a'b.txt": "ab\n", 'q"uote.txt': "q\n"})
    with Sandbox(language="bash", **server.conn) as other:
        r = other.sync(tmp_path)
        assert r.uploaded + r.reused == 3
        assert workspace_paths(other) == ['q"uote.txt', "sp ace/a'b.txt", "ünï/é.txt"]
        assert other.files.read("ünï/é.txt") == "é\n"
        assert other.sync(tmp_path).bytes_sent == 0


def _quick_hits(server) -> int:
    """The server's count of quick checks that found the workspace up to date (no manifest sent, no walk)."""
    import re
    import urllib.request
    with urllib.request.urlopen(f"{server.url}/metrics") as r:
        m = re.search(r'^petri_sync_plans_total\{kind="quick_hit"\} (\d+)', r.read().decode(), re.M)
    return int(m.group(1)) if m else 0


def test_unchanged_project_is_checked_by_digest_and_sandbox_side_changes_are_put_right(server, tmp_path):
    proj = tmp_path / "proj"
    write_tree(proj, {"main.py": "print('v1')\n", "lib/a.py": "A = 1\n", "ünï/é.txt": "é\n"})
    with Sandbox(language="python", **server.conn) as other:
        other.sync(proj)
        h0 = _quick_hits(server)
        again = other.sync(proj)
        assert (again.uploaded, again.reused, again.unchanged, again.deleted) == (0, 0, 3, 0)
        assert _quick_hits(server) == h0 + 1, "the re-sync was answered by the quick check (the SDK's digest is the server's)"

        other.files.write("main.py", "print('edited')\n")
        r = other.sync(proj)
        assert r.uploaded + r.reused == 1, "a file written in the sandbox is put back"
        assert other.files.read("main.py") == "print('v1')\n"
        assert other.exec("open('lib/a.py', 'w').write('A = 99\\n')").exit_code == 0
        assert other.files.read("lib/a.py") == "A = 99\n"
        r = other.sync(proj)
        assert r.uploaded + r.reused == 1, "a file a run changed is put back"
        assert other.files.read("lib/a.py") == "A = 1\n"
        other.files.remove("lib/a.py")
        r = other.sync(proj)
        assert r.uploaded + r.reused == 1, "a file deleted in the sandbox is put back"
        assert other.files.read("lib/a.py") == "A = 1\n"
        h1 = _quick_hits(server)
        r = other.sync(proj)
        assert (r.uploaded, r.reused, r.unchanged) == (0, 0, 3)
        assert _quick_hits(server) == h1 + 1
