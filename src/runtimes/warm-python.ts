/**
 * The warm Python bootstrap: the program of a pre-started unit whose runs start `python3`. It is
 * started with `python3 -c BOOT PRELOAD TRIGGERS FIRST_USE FREEZE PAD` (so the interpreter
 * initialises exactly as a cold `python3 -c` does), imports the image's heavy modules with the
 * image's own paths only and the working directory at /, then what they import lazily on first use
 * (only when the whole preload loaded), freezes what it holds for the garbage collector (FREEZE;
 * with a preload only over the whole stack), then blocks on stdin for the hand-over message
 * (warm.ts). It then
 * either runs the program in this same, fresh process, with what a cold start would have set up
 * (argv, orig_argv, path, environment, cwd, __main__, tracebacks, exit status), or, when that
 * cannot be guaranteed, execs the run's argv exactly as the plain launcher does (the cold path).
 *
 * While it starts it writes `\0petri-warm:importing\n` (when it has modules to import) and
 * `\0petri-warm:ready\n` (waiting for the hand-over) to stdout; before running in-process, one
 * status line, `\0petri-warm:1\n` (ran warm) or `\0petri-warm:0 REASON\n` (went cold). The
 * runtime reads all of them off stdout (warm.ts StatusFrame) before the run's output.
 * Nothing the program can observe of the bootstrap remains but what docs/warm.md lists.
 */
import { HANDOVER_MODE } from "../tracing/program.js";

const BOOT = String.raw`
def _petri_warm():
    import sys, os
    g = sys.modules["__main__"].__dict__
    g.pop("_petri_warm", None)
    preload = [m for m in sys.argv[1].split(",") if m]
    triggers = {m for m in sys.argv[2].split(",") if m} | {m.split(".")[0] for m in preload}
    first_use = [m for m in sys.argv[3].split(",") if m]
    freeze = sys.argv[4] == "freeze"
    stack = list(preload)
    unit_pp = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
    image_path = [p for p in sys.path[1:] if p not in unit_pp]
    taint = None

    def mpl_configs(env, cwd):
        out = [os.path.join(cwd, "matplotlibrc")]
        if env.get("MATPLOTLIBRC"):
            out += [env["MATPLOTLIBRC"], os.path.join(env["MATPLOTLIBRC"], "matplotlibrc")]
        cfg = env.get("MPLCONFIGDIR") or os.path.join(env.get("HOME", "/"), ".config", "matplotlib")
        out.append(os.path.join(cfg, "matplotlibrc"))
        return [p for p in out if os.path.exists(p)]

    finder = sys.modules["_frozen_importlib_external"].PathFinder
    preload = [m for m in preload if finder.find_spec(m.split(".")[0], image_path) is not None]
    present = list(preload)
    if preload:
        # The host reads this (and "ready" below) while the unit waits: a run arriving before
        # "ready" knows the unit is importing, and may start cold instead of waiting (warm.ts).
        os.write(1, b"\0petri-warm:importing\n")
        saved, cwd0 = sys.path[:], os.getcwd()
        sys.path[:] = image_path
        os.chdir("/")
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for m in preload:
                try:
                    __import__(m)
                except ImportError:
                    pass
                except Exception as e:
                    taint = "importing %s failed: %r" % (m, e)
                    break
            # What the stack imports at first use (df.plot, savefig): only over the whole stack,
            # so a partial one is never left half-imported by a module that needs the rest.
            if taint is None and all(m in sys.modules for m in stack):
                for m in first_use:
                    try:
                        __import__(m)
                    except Exception as e:
                        taint = "importing %s failed: %r" % (m, e)
                        break
        if caught:
            taint = taint or "importing the image's modules warned: %s" % caught[0].message
        os.chdir(cwd0)
        sys.path[:] = saved
        preload = [m for m in preload if m in sys.modules]
        if "petri_display" in sys.modules:
            # Petri's figure backend reads the per-run PETRI_DISPLAY_DIR when imported.
            taint = taint or "the preload imported petri_display"
        if "matplotlib" in sys.modules and mpl_configs(os.environ, cwd0):
            taint = taint or "a matplotlibrc existed while matplotlib was imported"

    if freeze and taint is None and (not present or all(m in sys.modules for m in stack + first_use)):
        # Out of the collector's sight: the run's collections and the interpreter's exit no longer
        # walk what the unit holds (the data stack's ~89,000 objects; without a stack, the
        # interpreter's own: ~1.5 ms a run). A documented difference: docs/warm.md, "The frozen
        # stack". Collected first, so no garbage of the start is kept for good. Never over a
        # partial stack (an image with part of it, or modules that failed to import).
        import gc
        gc.collect()
        gc.freeze()
        gc_frozen = True
    else:
        gc_frozen = False
    os.write(1, b"\0petri-warm:ready\n")

    def read_exact(n):
        b = b""
        while len(b) < n:
            c = os.read(0, n - len(b))
            if not c:
                os._exit(125)
            b += c
        return b

    n = int(read_exact(9)[:8], 16)
    f = [x.decode("utf-8", "surrogateescape") for x in read_exact(n).split(b"\0")]
    mode, cwd = f[0], f[1]
    i = 2
    argv = f[i + 1:i + 1 + int(f[i])]
    i += 1 + int(f[i])
    env = dict(kv.split("=", 1) for kv in f[i + 1:i + 1 + int(f[i])])
    i += 1 + int(f[i])
    unset = f[i + 1:i + 1 + int(f[i])]
    full = {k: v for k, v in os.environ.items() if k not in unset}
    full.update(env)
    # A runtime's own PWD (bwrap sets it to where it started us) names the run's directory.
    if "PWD" in full and "PWD" not in env:
        full["PWD"] = cwd

    def cold(reason):
        if mode == "run":
            os.write(1, ("\0petri-warm:0 %s\n" % reason.replace("\n", " ")).encode("utf-8", "replace"))
        try:
            os.chdir(cwd)
            # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive exec (see launcher.ts).
            import _signal
            _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
            _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
            os.execvpe(argv[0], argv, full)
        except OSError as e:
            os.write(2, ("petri: cannot execute %s: %s\n" % (argv[0], e.strerror)).encode())
            os._exit(127)

    if mode != "run":
        cold("")
    if taint:
        cold(taint)
    # /proc/self/cmdline must show the run's command line: it is rewritten in place, in the
    # room the unit's own (longer) command line left. Where that cannot be done, the run goes cold.
    cmd = b"".join(a.encode("utf-8", "surrogateescape") + b"\0" for a in argv)
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            cur = fh.read()
        with open("/proc/self/stat", "rb") as fh:
            st = fh.read().rsplit(b")", 1)[1].split()
        start, end = int(st[45]), int(st[46])
        if len(cmd) > len(cur):
            cold("the command line is longer than the pre-started one")
        if start and end - start == len(cur):
            fd = os.open("/proc/self/mem", os.O_WRONLY)
            try:
                os.pwrite(fd, cmd.ljust(len(cur), b"\0"), start)
            finally:
                os.close(fd)
        else:
            # gVisor does not say where the arguments are: they are the top of the stack.
            import ctypes
            with open("/proc/self/maps") as fh:
                top = [l.split()[0] for l in fh if l.rstrip().endswith("[stack]")][0]
            lo, hi = (int(x, 16) for x in top.split("-"))
            lo = max(lo, hi - (1 << 20))
            at = ctypes.string_at(lo, hi - lo).rfind(cur)
            if at < 0:
                cold("cannot find the command line")
            ctypes.memmove(lo + at, cmd.ljust(len(cur), b"\0"), len(cur))
        with open("/proc/self/cmdline", "rb") as fh:
            if fh.read().rstrip(b"\0") != cmd.rstrip(b"\0"):
                cold("cannot set /proc/self/cmdline")
    except (OSError, ValueError, IndexError) as e:
        cold("cannot set /proc/self/cmdline: %s" % e)
    # The hand-over mark for the host audit tracer (src/tracing/program.ts): a call the kernel
    # refuses at once (EINVAL), by which the tracer knows this process is the run's program from
    # here on, and that it is this interpreter. Everything above was Petri's and is not recorded.
    os.access(sys.executable, ${HANDOVER_MODE})
    snippet = argv[1] == "-c"
    try:
        os.chdir(cwd)
        if snippet:
            source, filename, args = argv[2], "<string>", ["-c"] + argv[3:]
            path0 = ""
        else:
            filename = os.path.abspath(argv[1])
            with open(filename, "rb") as fh:
                source = fh.read()
            args = argv[1:]
            path0 = os.path.dirname(os.path.realpath(argv[1]))
    except OSError as e:
        # Whatever went wrong, the cold start reports it in its own words.
        cold("cannot read the program: %s" % e)
    if preload:
        import re
        text = source if isinstance(source, str) else source.decode("utf-8", "replace")
        used = set()
        for m in re.finditer(r"^[ \t]*(?:from[ \t]+([\w.]+)|import[ \t]+([^\n#;]+))", text, re.M):
            for part in (m.group(1) or m.group(2)).split(","):
                used.add(part.strip().split(" ")[0].split(".")[0])
        if not used & triggers:
            cold("the program imports none of the pre-imported modules")
        if "matplotlib" in sys.modules and mpl_configs(full, cwd):
            cold("a matplotlibrc exists")
    run_pp = [p for p in full.get("PYTHONPATH", "").split(":") if p]
    # A module already imported must be the one this run would import: no entry the run puts
    # before the image's may hold a module of that name, unless it was loaded from there and
    # that entry cannot change (read-only).
    frozen = ("built-in", "frozen")
    for entry in [path0] + run_pp:
        d = entry or cwd
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        except OSError as e:
            cold("cannot list %s: %s" % (d, e.strerror))
        writable = os.access(d, os.W_OK)
        for name in names:
            top = name.split(".")[0]
            mod = sys.modules.get(top)
            if not top or mod is None:
                continue
            spec = getattr(mod, "__spec__", None)
            if spec is not None and spec.origin in frozen:
                continue
            file = getattr(mod, "__file__", None)
            if file is not None:
                home = os.path.dirname(os.path.dirname(file)) if hasattr(mod, "__path__") else os.path.dirname(file)
                homes = [home]
            else:
                homes = [os.path.dirname(p) for p in getattr(mod, "__path__", [])]
            if writable or os.path.normpath(d) not in [os.path.normpath(h) for h in homes]:
                cold("%s in %s would shadow the pre-imported module" % (name, d))
    for k in unset:
        os.environ.pop(k, None)
    os.environ.update(env)
    if "PWD" in os.environ and "PWD" not in env:
        os.environ["PWD"] = cwd
    path = []
    for p in run_pp + image_path:
        if p not in path:
            path.append(p)
    sys.path[:] = [path0] + path
    for p in set(run_pp) | {path0, cwd, "/"}:
        sys.path_importer_cache.pop(p, None)
    sys.argv = args
    sys.orig_argv = list(argv)
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except BaseException as e:
        code, err = None, e
    lc = sys.modules.get("linecache")
    if lc is not None and hasattr(lc, "_register_code"):
        # What a cold start registers: the -c source only (the bootstrap's own is dropped).
        lc._interactive_cache.clear()
        if code is not None and snippet:
            lc._register_code(code, source, "<string>")
    if gc_frozen:
        # The program's namespace must be the collector's, as on a cold start: at exit, Python's
        # first collection finalises the cycles its globals hold while print still works. The
        # __main__ of the interpreter's start is frozen, so the program gets a new one, made now,
        # with the same entries in the same order (ModuleType's five, then the rest).
        main = type(sys)("__main__")
        main.__dict__.update(g)
        g = main.__dict__
        sys.modules["__main__"] = main
    if not snippet:
        g["__loader__"] = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", filename)
        g["__file__"] = filename
        g["__cached__"] = None
    os.write(1, b"\0petri-warm:1\n")
    try:
        if code is None:
            raise err
        del source, f, env, full
        exec(code, g)
    except SystemExit:
        raise
    except BaseException as e:
        # As an uncaught exception of a cold start: the traceback begins at the program's frame.
        tb = e.__traceback__
        e.__traceback__ = tb.tb_next if tb is not None and code is not None else None
        sys.last_exc, sys.last_type, sys.last_value, sys.last_traceback = e, type(e), e, e.__traceback__
        sys.excepthook(type(e), e, e.__traceback__)
        if isinstance(e, KeyboardInterrupt):
            # A cold interpreter ends by SIGINT after finalising: threads, atexit, flush, signal.
            th = sys.modules.get("threading")
            if th is not None:
                th._shutdown()
            import atexit, _signal
            atexit._run_exitfuncs()
            for s in (sys.stdout, sys.stderr):
                try:
                    s.flush()
                except Exception:
                    pass
            _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
            os.kill(os.getpid(), _signal.SIGINT)
        raise SystemExit(1)
_petri_warm()
`;

export const PY_BOOT = BOOT.trim() + "\n";
