"""A small matcher for gitignore syntax, used by ``sync`` and ``files.upload`` with ``.petriignore``.

Supported: ``#`` comments, ``!`` negation (last matching rule wins), ``*``, ``?``, ``[…]``, ``**``,
a leading or inner ``/`` anchoring the pattern to the root, a trailing ``/`` for directories only,
and ``\\`` escapes. As in git, a file inside an ignored directory cannot be re-included, because the
walker never descends into an ignored directory. Mirrors sdks/typescript/src/internal/ignore.ts.
"""

import os
import re
import stat
from dataclasses import dataclass
from typing import Iterable, List, Optional, Pattern, Sequence, Union

DEFAULT_IGNORES: Sequence[str] = (".git/", "node_modules/", "__pycache__/", ".venv/")
"""Skipped unless a ``.petriignore`` re-includes them with ``!name/``."""

IGNORE_FILE = ".petriignore"

_SPECIAL = re.compile(r"[.*+?^${}()|\[\]\\/]")


def _esc(c: str) -> str:
    return _SPECIAL.sub(lambda m: "\\" + m.group(0), c)


def _glob_to_regex(glob: str) -> str:
    out = ""
    i = 0
    n = len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            if i + 1 < n and glob[i + 1] == "*":
                at_start = i == 0 or glob[i - 1] == "/"
                at_end = i + 2 == n or glob[i + 2] == "/"
                if at_start and at_end:
                    if i + 2 == n:
                        out += ".*"  # trailing /**: everything inside
                        i += 2
                    else:
                        out += "(?:.*/)?"  # **/: zero or more directories
                        i += 3
                    continue
                out += "[^/]*"  # ** inside a name is a plain *
                i += 2
                continue
            out += "[^/]*"
            i += 1
        elif c == "?":
            out += "[^/]"
            i += 1
        elif c == "[":
            close = glob.find("]", i + 2)
            if close == -1:
                out += "\\["
                i += 1
                continue
            body = glob[i + 1:close]
            neg = False
            if body[:1] in ("!", "^"):
                neg = True
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("]", "\\]")
            out += "[" + ("^" if neg else "") + body + "]"
            i = close + 1
        elif c == "\\" and i + 1 < n:
            out += _esc(glob[i + 1])
            i += 2
        else:
            out += _esc(c)
            i += 1
    return out


@dataclass(frozen=True)
class _Rule:
    regex: Pattern[str]
    negate: bool
    dir_only: bool


def _parse_line(raw: str) -> Optional[_Rule]:
    line = raw[:-1] if raw.endswith("\r") else raw
    line = re.sub(r"(?<!\\)\s+$", "", line)
    if line == "" or line.startswith("#"):
        return None
    negate = False
    if line.startswith("!"):
        negate = True
        line = line[1:]
    elif line.startswith("\\!") or line.startswith("\\#"):
        line = line[1:]
    dir_only = False
    if line.endswith("/") and not line.endswith("\\/"):
        dir_only = True
        line = line.rstrip("/")
    if line == "":
        return None
    anchored = "/" in line
    if line.startswith("/"):
        line = line[1:]
    body = _glob_to_regex(line)
    pattern = f"^{body}$" if anchored or line.startswith("**/") else f"^(?:.*/)?{body}$"
    return _Rule(re.compile(pattern, re.DOTALL), negate, dir_only)


class IgnoreMatcher:
    """Gitignore-style rules; the last rule that matches a path decides."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._rules: List[_Rule] = [r for r in (_parse_line(p) for p in patterns) if r is not None]

    @classmethod
    def from_text(cls, text: str, base: Iterable[str] = ()) -> "IgnoreMatcher":
        return cls([*base, *text.split("\n")])

    def ignores(self, rel_path: str, is_dir: bool) -> bool:
        """Whether the rules themselves ignore a ``/``-separated relative path."""
        ignored = False
        for r in self._rules:
            if r.dir_only and not is_dir:
                continue
            if r.regex.match(rel_path):
                ignored = not r.negate
        return ignored

    def ignores_path(self, rel_path: str, is_dir: bool) -> bool:
        """Like ``ignores``, but also True when any parent directory is ignored (git's semantics)."""
        parts = rel_path.split("/")
        for i in range(1, len(parts)):
            if self.ignores("/".join(parts[:i]), True):
                return True
        return self.ignores(rel_path, is_dir)


@dataclass(frozen=True)
class LocalFile:
    path: str
    """Relative to the walked directory, ``/``-separated."""
    abs: str
    size: int
    mode: int
    mtime_ns: int
    ctime_ns: int
    ino: int


def matcher_for(root: str, default_ignores: bool = True, ignore: Optional[Iterable[str]] = None) -> IgnoreMatcher:
    """Defaults, then the directory's ``.petriignore``, then extra patterns."""
    base = list(DEFAULT_IGNORES) if default_ignores else []
    text = ""
    try:
        with open(os.path.join(root, IGNORE_FILE), encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        pass
    return IgnoreMatcher([*base, *text.split("\n"), *(ignore or [])])


def walk_local(root: str, default_ignores: bool = True, ignore: Optional[Iterable[str]] = None) -> List[LocalFile]:
    """The regular files under ``root`` that the rules keep, sorted by path.

    Symlinks are skipped (following them could send files from outside the project); empty
    directories are not represented, as in git.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root} is not a directory")
    matcher = matcher_for(root, default_ignores, ignore)
    out: List[LocalFile] = []

    def visit(dir_abs: str, dir_rel: str) -> None:
        with os.scandir(dir_abs) as it:
            entries = list(it)
        for ent in entries:
            rel = f"{dir_rel}/{ent.name}" if dir_rel else ent.name
            if ent.is_dir(follow_symlinks=False):
                if not matcher.ignores(rel, True):
                    visit(ent.path, rel)
            elif ent.is_file(follow_symlinks=False):
                if matcher.ignores(rel, False):
                    continue
                st = ent.stat(follow_symlinks=False)
                out.append(LocalFile(rel, ent.path, st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_ctime_ns, st.st_ino))

    visit(root, "")
    out.sort(key=lambda f: f.path)
    return out


@dataclass(frozen=True)
class LocalEntry:
    """A local file as ``sync`` and ``files.upload`` would send it."""

    path: str
    """Relative to the directory, ``/``-separated."""
    size: int
    """Bytes."""


def list_local_files(local_dir: Union[str, "os.PathLike[str]"], default_ignores: bool = True,
                     ignore: Optional[Iterable[str]] = None) -> List[LocalEntry]:
    """The files ``sandbox.sync(local_dir)`` and ``files.upload(local_dir)`` would send, after the ignore rules."""
    return [LocalEntry(f.path, f.size) for f in walk_local(os.fspath(local_dir), default_ignores, ignore)]
