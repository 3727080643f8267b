"""Delta sync: hash local files, ask the server what it lacks, send only that.

Mirrors sdks/typescript/src/sync.ts.
"""

import hashlib
import io
import json
import os
import tarfile
import time
from typing import Any, Dict, Iterable, List, Optional

from ._hash import hash_all
from .exceptions import InvalidRequestException
from ._http import ApiClient, Multipart, encode_path
from ._ignore import LocalFile, walk_local
from .files import BATCH_MAX_BYTES, BATCH_MAX_FILES, append_local_file, batches, upload_timeout
from .models import SyncResult

TAR_MAX_FILE = 8 * 1024 * 1024
"""Files up to this size travel inside a tar part; bigger ones as their own part, streamed from disk."""


def manifest_digest(files: List[Dict[str, Any]]) -> str:
    """The digest the server compares with what the last sync left (``manifest_sha256``): sha256
    over ``path \\n sha256 \\n size \\n mode \\n`` per entry, in the order sent. Same in the TypeScript SDK."""
    h = hashlib.sha256()
    h.update("".join(f"{m['path']}\n{m['sha256']}\n{m['size']}\n{m['mode']}\n" for m in files).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _tar_of(files: List[LocalFile]) -> bytes:
    """A tar archive of small files, in memory (each at most TAR_MAX_FILE, a batch at most BATCH_MAX_BYTES)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for f in files:
            with open(f.abs, "rb") as fh:
                data = fh.read()
            # The file may have changed since it was hashed: the server then refuses the batch (sha256).
            info = tarfile.TarInfo(f.path)
            info.size = len(data)
            info.mode = f.mode & 0o777
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sync_directory(client: ApiClient, sandbox_id: str, local_dir: str, *, delete_extraneous: bool = False,
                   target: str = "", default_ignores: bool = True, ignore: Optional[Iterable[str]] = None) -> SyncResult:
    """Delta sync: hash local files, ask the server what it lacks (``sync/plan``), send only that
    (``sync/apply``): small files packed into one tar part, big ones streamed as their own parts.
    Deletions (only with ``delete_extraneous``) are applied by the last request."""
    started = time.perf_counter()
    base = f"/v1/sandboxes/{encode_path(sandbox_id)}/sync"
    local = walk_local(os.fspath(local_dir), default_ignores, ignore)
    hashes = hash_all(local)
    manifest: List[Dict[str, Any]] = [
        {"path": f.path, "sha256": h, "size": f.size, "mode": f.mode} for f, h in zip(local, hashes)
    ]
    target = "/".join(p for p in target.split("/") if p)
    where: Dict[str, Any] = {"target": target} if target else {}
    # The quick check: if nothing changed the workspace since it last took this very manifest,
    # the server says so without the manifest (7 MB for 50,000 files) or a walk of its own.
    quick: Dict[str, Any] = {}
    try:
        quick = client.json("POST", f"{base}/plan", json={"manifest_sha256": manifest_digest(manifest), "delete_extraneous": delete_extraneous, **where})
    except InvalidRequestException:
        pass  # a server from before the quick check refuses the field: the full plan works with any
    if quick.get("up_to_date") is True:
        return SyncResult(uploaded=0, reused=0, deleted=0, unchanged=len(manifest), bytes_sent=0,
                          duration_ms=(time.perf_counter() - started) * 1000, reused_paths=[], deleted_paths=[])
    # The server may have to read every file whose hash it does not know yet (files written outside
    # Petri, or its first plan of a workspace): the deadline grows with the manifest, 1 ms a file.
    plan_timeout = client.request_timeout + len(manifest) / 1000
    plan = client.json("POST", f"{base}/plan", json={"files": manifest, "delete_extraneous": delete_extraneous, **where}, timeout=plan_timeout)
    missing_paths: List[str] = plan.get("missing", [])
    reusable: List[str] = plan.get("reusable", [])
    to_delete: List[str] = plan.get("delete", [])
    unchanged = plan.get("unchanged")
    result = SyncResult(
        uploaded=0, reused=0, deleted=0,
        unchanged=len(unchanged) if unchanged is not None else len(manifest) - len(missing_paths) - len(reusable),
        bytes_sent=0, duration_ms=0.0, reused_paths=list(reusable), deleted_paths=list(to_delete),
    )
    if not missing_paths and not reusable and not to_delete:
        result.duration_ms = (time.perf_counter() - started) * 1000
        return result

    by_path = {f.path: f for f in local}
    entry_of = {m["path"]: m for m in manifest}

    def apply(entries: List[Dict[str, Any]], files: List[LocalFile], delete: bool) -> None:
        form = Multipart()
        form.field("manifest", json.dumps({"files": entries, "delete_extraneous": delete, "archive": "tar", **where}))
        small = [f for f in files if f.size <= TAR_MAX_FILE]
        if small:
            form.file("tar", "files.tar", _tar_of(small))
        for f in files:
            if f.size > TAR_MAX_FILE:
                form.field("path", f.path)
                append_local_file(form, "file", f)
        r = client.json("POST", f"{base}/apply", body=form, timeout=upload_timeout(client, len(form)))
        result.bytes_sent += sum(f.size for f in files)
        result.uploaded_paths.extend(f.path for f in files)
        result.reused += r.get("reused", 0)
        result.deleted += r.get("deleted", 0)

    to_send = [by_path[p] for p in missing_paths if p in by_path]
    groups = batches(to_send, [f.size for f in to_send], BATCH_MAX_FILES * 20, BATCH_MAX_BYTES)
    if len(groups) <= 1:
        # The usual case: one request carries the whole manifest and every missing file.
        apply(manifest, groups[0] if groups else [], delete_extraneous)
    else:
        # Each batch names only its own files (and the first one the reusable ones); the last
        # request repeats the whole manifest, now all unchanged, to apply deletions.
        for i, group in enumerate(groups):
            entries = [entry_of[f.path] for f in group] + ([entry_of[p] for p in reusable if p in entry_of] if i == 0 else [])
            apply(entries, group, False)
        if to_delete:
            apply(manifest, [], delete_extraneous)
        else:
            # Each batch left the server a mark of its own part only: one plan of the whole manifest
            # (all unchanged now) marks it, so the next sync of an unchanged tree is one quick check.
            client.json("POST", f"{base}/plan", json={"files": manifest, "delete_extraneous": delete_extraneous, **where}, timeout=plan_timeout)
    result.uploaded = len(result.uploaded_paths)
    result.duration_ms = (time.perf_counter() - started) * 1000
    return result
