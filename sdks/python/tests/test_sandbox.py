import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import SDK_DIR, write_tree

from jhansi import (
    AuthenticationException,
    ConfigurationException,
    ConflictException,
    ConnectionException,
    ExecNotFoundException,
    FileNotFoundException,
    InvalidRequestException,
    PetriException,
    Sandbox,
    SandboxNotFoundException,
    TimeoutException,
)

SEED = textwrap.dedent("""\
    from jhansi import Sandbox
    with Sandbox(language="python") as sb:
        result = sb.exec("print('hello from isolation')")
        print(result.output)
    """)


def test_seed_program_runs_as_written(server, tmp_path):
    (tmp_path / "seed.py").write_text(SEED)
    env = {**os.environ, "PETRI_URL": server.url, "PETRI_API_KEY": server.api_key,
           "PYTHONPATH": str(SDK_DIR) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    before = len(Sandbox.list(**server.conn))
    r = subprocess.run([sys.executable, str(tmp_path / "seed.py")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello from isolation"
    # The with-block killed the sandbox on the way out.
    assert len(Sandbox.list(**server.conn)) == before


def test_missing_configuration_names_both_env_vars(monkeypatch, server):
    monkeypatch.delenv("PETRI_API_KEY", raising=False)
    monkeypatch.delenv("PETRI_URL", raising=False)
    with pytest.raises(ConfigurationException) as ei:
        Sandbox(language="python")
    assert "PETRI_API_KEY" in str(ei.value) and "PETRI_URL" in str(ei.value)
    assert isinstance(ei.value, PetriException)
    with pytest.raises(ConfigurationException, match="PETRI_API_KEY"):
        Sandbox.list(url=server.url)


def test_create_connect_list_kill(server, sb):
    a = Sandbox(language="bash", metadata={"owner": "tests"}, timeout=20, limits={"memory_mb": 256}, **server.conn)
    assert a.id.startswith("sb_")
    assert a.language == "bash"
    assert a.info.limits.timeout_ms == 20_000
    assert a.info.limits.memory_mb == 256
    assert a.info.metadata == {"owner": "tests"}
    assert a.info.created_at is not None
    b = Sandbox.connect(a.id, **server.conn)
    assert b.id == a.id
    assert b.get_info().language == "bash"
    ids = [s.id for s in Sandbox.list(**server.conn)]
    assert a.id in ids and sb.id in ids
    assert len(Sandbox.list(limit=1, **server.conn)) == 1
    assert a.kill() is True
    assert b.kill() is False, "a second kill reports the sandbox was already gone"
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(a.id, **server.conn)


def test_context_manager_kills_even_on_error(server):
    ids = []
    with pytest.raises(RuntimeError, match="boom"):
        with Sandbox(language="python", **server.conn) as s:
            ids.append(s.id)
            raise RuntimeError("boom")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(ids[0], **server.conn)


def test_files_round_trip_with_subdirectories(sb, tmp_path):
    info = sb.files.write("dir/sub/hello.txt", "héllo\n")
    assert info.path == "dir/sub/hello.txt"
    assert info.size == len("héllo\n".encode())
    assert info.sha256 and len(info.sha256) == 64
    assert sb.files.read("dir/sub/hello.txt") == "héllo\n"
    sb.files.write("dir/bin.dat", bytes([0, 1, 2, 255]))
    assert sb.files.read("dir/bin.dat", format="bytes") == bytes([0, 1, 2, 255])
    listed = sb.files.list("dir")
    assert sorted(f.path for f in listed) == ["dir/bin.dat", "dir/sub", "dir/sub/hello.txt"]
    assert next(f for f in listed if f.path == "dir/sub").type == "directory"
    assert sb.files.exists("dir/sub/hello.txt")
    assert not sb.files.exists("dir/nope.txt")
    assert not sb.files.exists("nodir/nope.txt")
    written = sb.files.write_many([("many/a.txt", "a"), ("many/b/c.txt", b"c")])
    assert sorted(f.path for f in written) == ["many/a.txt", "many/b/c.txt"]
    sb.files.download("dir/sub/hello.txt", tmp_path / "out" / "hello.txt")
    assert (tmp_path / "out" / "hello.txt").read_text() == "héllo\n"
    with pytest.raises(ConflictException):
        sb.files.remove("dir")  # a non-empty directory needs recursive
    sb.files.remove("dir", recursive=True)
    sb.files.remove("many", recursive=True)
    assert not sb.files.exists("dir")
    with pytest.raises(FileNotFoundException):
        sb.files.read("dir/sub/hello.txt")
    with pytest.raises(FileNotFoundException):
        sb.files.remove("dir/nothing")
    with pytest.raises(InvalidRequestException):
        sb.files.write("../escape.txt", "x")


def test_upload_local_dir_honours_petriignore(sb, tmp_path):
    write_tree(tmp_path, {
        "app/main.py": "import lib.util\nprint(lib.util.X)\n",
        "app/lib/util.py": "X = 42\n",
        "app/lib/__init__.py": "",
        "app/__pycache__/x.pyc": "junk",
        "app/notes.log": "junk",
        "app/.petriignore": "*.log\n",
    })
    files = sb.files.upload(tmp_path / "app", remote_dir="proj")
    assert sorted(f.path for f in files) == ["proj/.petriignore", "proj/lib/__init__.py", "proj/lib/util.py", "proj/main.py"]
    r = sb.exec("import runpy, sys; sys.path.insert(0, 'proj'); runpy.run_path('proj/main.py')")
    assert r.stdout == "42\n", r.stderr
    sb.files.remove("proj", recursive=True)


def test_exec_output_exit_code_and_errors(sb):
    r = sb.exec("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)")
    assert r.output == "out\n" and r.stdout == "out\n"
    assert r.stderr == "err\n"
    assert r.exit_code == 3
    assert r.status == "completed"
    assert not r.ok
    assert r.id.startswith("ex_")
    assert r.duration_ms > 0


def test_exec_stdin_env_and_timeout(sb):
    r = sb.exec("import os, sys; print(sys.stdin.read().upper(), os.environ['GREETING'])", stdin="abc", env={"GREETING": "hi"})
    assert r.stdout == "ABC hi\n"
    assert r.ok
    slow = sb.exec("import time; time.sleep(30)", timeout=1.5)
    assert slow.timed_out
    assert not slow.ok


def test_run_file_with_args(sb):
    sb.files.write("pkg/main.py", "import sys\nfrom pkg.helper import twice\nprint(twice(sys.argv[1:]))\n")
    sb.files.write("pkg/helper.py", "def twice(xs):\n    return [x * 2 for x in xs]\n")
    sb.files.write("pkg/__init__.py", "")
    r = sb.run("pkg/main.py", args=["a", "b c"])
    assert r.stdout == "['aa', 'b cb c']\n", r.stderr
    assert r.entry == "pkg/main.py"
    with pytest.raises(FileNotFoundException):
        sb.run("pkg/missing.py")
    sb.files.remove("pkg", recursive=True)


def test_run_reports_changed_files(sb):
    r = sb.exec("open('made.txt', 'w').write('x')")
    assert r.files.created == ["made.txt"]
    sb.files.remove("made.txt")


def test_streaming_callbacks_receive_output_before_the_run_ends(sb):
    t0 = time.monotonic()
    seen = []
    r = sb.exec(
        "import sys, time\nprint('first', flush=True)\nprint('warn', file=sys.stderr, flush=True)\ntime.sleep(1)\nprint('second')",
        on_stdout=lambda d: seen.append((time.monotonic() - t0, "out", d)),
        on_stderr=lambda d: seen.append((time.monotonic() - t0, "err", d)),
    )
    end = time.monotonic() - t0
    assert r.stdout == "first\nsecond\n"
    assert r.stderr == "warn\n"
    assert "".join(d for _, s, d in seen if s == "out") == "first\nsecond\n"
    assert "".join(d for _, s, d in seen if s == "err") == "warn\n"
    first_at = next(at for at, _, d in seen if "first" in d)
    assert first_at <= end - 0.7, f"first chunk at {first_at:.2f} s, run ended at {end:.2f} s"


def test_failing_callback_stops_the_run_and_reaches_the_caller(sb):
    def boom(_):
        raise ValueError("callback failed")

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="callback failed"):
        sb.exec("import time\nprint('x', flush=True)\ntime.sleep(20)", on_stdout=boom)
    assert time.monotonic() - t0 < 15


def test_detached_run_wait_fetch_later_and_history(sb):
    h = sb.start("import time\ntime.sleep(1)\nprint('done')")
    assert h.id.startswith("ex_")
    assert h.status().status == "running"
    r = h.wait()
    assert r.status == "completed"
    assert r.stdout == "done\n"
    assert sb.get_exec(h.id).wait().stdout == "done\n"
    history = sb.history()
    mine = next(x for x in history if x.id == h.id)
    assert mine.status == "completed"
    assert mine.entry == "<snippet>"
    assert len(history) >= 2
    with pytest.raises(ExecNotFoundException):
        sb.get_exec("ex_doesnotexist")


def test_start_file_in_background(sb):
    sb.files.write("bg.py", "import sys\nprint('bg', *sys.argv[1:])\n")
    assert sb.start_file("bg.py", args=["x"]).wait().stdout == "bg x\n"
    sb.files.remove("bg.py")


def test_kill_cancels_a_live_run_and_its_process_tree(sb):
    h = sb.start("import subprocess, time\nsubprocess.Popen(['sleep', '60'])\ntime.sleep(60)")
    time.sleep(1)
    t0 = time.monotonic()
    r = h.kill()
    assert r.cancelled
    assert r.status == "cancelled"
    assert time.monotonic() - t0 < 15
    assert h.wait().status == "cancelled"
    assert sb.get_info().status == "ready", "no run is left in flight"


def test_stdin_while_a_run_lives_with_streamed_output(sb):
    chunks = []
    h = sb.start("import sys\nfor line in sys.stdin:\n    print('got', line.strip(), flush=True)\nprint('eof')",
                 stdin_open=True, on_stdout=chunks.append)
    h.send_stdin("one\n")
    h.send_stdin("two\n")
    h.close_stdin()
    r = h.wait()
    assert r.stdout == "got one\ngot two\neof\n"
    assert "".join(chunks) == "got one\ngot two\neof\n"
    with pytest.raises(ConflictException):
        h.send_stdin("late\n")


def test_waiting_past_the_deadline_raises_timeout_and_leaves_the_run(sb):
    h = sb.start("import time\ntime.sleep(3)\nprint('late')")
    with pytest.raises(TimeoutException):
        h.wait(timeout=0.3)
    assert h.wait().stdout == "late\n"


def test_server_codes_map_to_exception_classes(server):
    with pytest.raises(SandboxNotFoundException) as ei:
        Sandbox.connect("sb_doesnotexist", **server.conn)
    assert ei.value.code == "SANDBOX_NOT_FOUND"
    assert ei.value.status == 404
    with pytest.raises(InvalidRequestException) as ei2:
        Sandbox(language="cobol", **server.conn)
    assert ei2.value.code == "UNKNOWN_LANGUAGE"
    with pytest.raises(AuthenticationException):
        Sandbox.list(url=server.url, api_key="pk_wrong")


def test_unreachable_server_raises_connection_exception():
    with pytest.raises(ConnectionException):
        Sandbox.list(url="http://127.0.0.1:9", api_key="k")
