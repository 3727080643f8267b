import asyncio
import time

import pytest

from jhansi import AsyncSandbox, SandboxNotFoundException


def test_async_sandbox_end_to_end(server, tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "main.py").write_text("import sys\nprint('main', *sys.argv[1:])\n")

    async def main():
        async with AsyncSandbox(language="python", **server.conn) as sb:
            assert sb.id.startswith("sb_")
            r = await sb.exec("print('hello from isolation')")
            assert r.output == "hello from isolation\n"

            # Callbacks, plain or async, run on the event loop while the run lives.
            loop = asyncio.get_running_loop()
            seen = []

            async def on_out(data):
                assert asyncio.get_running_loop() is loop
                seen.append((time.monotonic(), data))

            t0 = time.monotonic()
            r = await sb.exec("import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')", on_stdout=on_out)
            assert "".join(d for _, d in seen) == "a\nb\n"
            assert seen[0][0] - t0 < time.monotonic() - t0 - 0.7

            await sb.files.write("x/y.txt", "z")
            assert await sb.files.read("x/y.txt") == "z"
            assert "x/y.txt" in [f.path for f in await sb.files.list()]
            s = await sb.sync(tmp_path / "proj")
            assert s.uploaded == 1 and s.deleted == 0  # extraneous files are kept unless asked
            s = await sb.sync(tmp_path / "proj", delete_extraneous=True)
            assert s.unchanged == 1 and s.deleted == 1  # x/y.txt is not in the local directory
            assert (await sb.run("main.py", args=["1"])).stdout == "main 1\n"

            h = await sb.start("import time\ntime.sleep(30)")
            killed = await h.kill()
            assert killed.cancelled
            assert len(await sb.history()) >= 4
            other = await AsyncSandbox.connect(sb.id, **server.conn)
            assert other.id == sb.id
            ids = [i.id for i in await AsyncSandbox.list(**server.conn)]
            assert sb.id in ids
            sid = sb.id
        with pytest.raises(SandboxNotFoundException):
            await AsyncSandbox.connect(sid, **server.conn)

    asyncio.run(main())


def test_async_create_then_kill(server):
    async def main():
        sb = await AsyncSandbox.create("bash", **server.conn)
        assert (await sb.exec("echo $((6*7))")).stdout == "42\n"
        assert await sb.kill() is True
        assert await sb.kill() is False

    asyncio.run(main())
