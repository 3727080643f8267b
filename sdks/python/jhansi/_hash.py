"""sha256 of local files, remembered by (size, mtime, ctime, inode) so a re-sync reads nothing.

As in git's index, an entry is trusted only if the file had not been modified within the clock's
granularity of being hashed ("racily clean" files are hashed again).
"""

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

from ._ignore import LocalFile

_cache: Dict[str, Tuple[int, int, int, int, int, str]] = {}
_lock = threading.Lock()


def _racy_window_ns(mtime_ns: int) -> int:
    # Filesystems with whole-second timestamps need a wider window than nanosecond ones.
    return 2_000_000_000 if mtime_ns % 1_000_000_000 == 0 else 50_000_000


def _cached(f: LocalFile) -> Optional[str]:
    """The remembered sha256 of an unchanged file, or None."""
    c = _cache.get(f.abs)  # a dict read is atomic under the GIL: no lock per file (50,000 in a re-sync)
    if c is not None:
        size, mtime, ctime, ino, hashed_at, digest = c
        if (size, mtime, ctime, ino) == (f.size, f.mtime_ns, f.ctime_ns, f.ino) and f.mtime_ns < hashed_at - _racy_window_ns(f.mtime_ns):
            return digest
    return None


def sha256_of(f: LocalFile) -> str:
    digest = _cached(f)
    if digest is not None:
        return digest
    hashed_at = time.time_ns()
    h = hashlib.sha256()
    with open(f.abs, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    digest = h.hexdigest()
    with _lock:
        _cache[f.abs] = (f.size, f.mtime_ns, f.ctime_ns, f.ino, hashed_at, digest)
    return digest


def hash_all(files: List[LocalFile]) -> List[str]:
    """Hashes many files (hashlib releases the GIL on large buffers), keeping their order.

    Remembered ones are looked up first, in this thread: a thread-pool task per unchanged file
    costs more than the lookup (a re-sync of 50,000 unchanged files)."""
    out: List[Optional[str]] = [_cached(f) for f in files]
    todo = [i for i, d in enumerate(out) if d is None]
    if len(todo) < 8:
        for i in todo:
            out[i] = sha256_of(files[i])
    else:
        with ThreadPoolExecutor(max_workers=8) as pool:
            for i, d in zip(todo, pool.map(lambda i: sha256_of(files[i]), todo)):
                out[i] = d
    return out  # type: ignore[return-value]  # every entry is filled above
