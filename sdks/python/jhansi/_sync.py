"""Delta sync: hash local files, ask the server what it lacks, send only that.

Mirrors sdks/typescript/src/sync.ts.
"""

import json
import os
import re
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

from ._hash import hash_all
from ._http import ApiClient, Multipart, encode_path
from ._ignore import LocalFile, walk_local
from .exceptions import FileNotFoundException
from .files import BATCH_MAX_BYTES, BATCH_MAX_FILES, append_local_file, upload_timeout
from .models import SyncResult

_UNNAMEABLE = re.compile(r'["\r\n]')

MANIFEST_FIELD_MAX = 60 * 1024
"""The server reads the ``manifest`` field of sync/apply up to 64 KiB; stay under it with room to spare."""


def _manifest_batches(entries: List[Dict[str, Any]], sent_size: Callable[[Dict[str, Any]], Optional[int]]) -> List[List[Dict[str, Any]]]:
    """Splits manifest entries into batches bounded by file count, bytes to send, and manifest size."""
    out: List[List[Dict[str, Any]]] = []
    cur: List[Dict[str, Any]] = []
    files = nbytes = 0
    size_json = 64
    for e in entries:
        sent = sent_size(e)
        size = sent or 0
        entry_json = len(json.dumps(e).encode("utf-8")) + 1
        if cur and (files + (0 if sent is None else 1) > BATCH_MAX_FILES or nbytes + size > BATCH_MAX_BYTES
                    or size_json + entry_json > MANIFEST_FIELD_MAX):
            out.append(cur)
            cur, files, nbytes, size_json = [], 0, 0, 64
        cur.append(e)
        if sent is not None:
            files += 1
        nbytes += size
        size_json += entry_json
    if cur:
        out.append(cur)
    return out


def sync_directory(client: ApiClient, sandbox_id: str, local_dir: str, *, delete_extraneous: bool = True,
                   default_ignores: bool = True, ignore: Optional[Iterable[str]] = None) -> SyncResult:
    started = time.perf_counter()
    base = f"/v1/sandboxes/{encode_path(sandbox_id)}/sync"
    local = walk_local(os.fspath(local_dir), default_ignores, ignore)
    hashes = hash_all(local)
    manifest: List[Dict[str, Any]] = [
        {"path": f.path, "sha256": h, "size": f.size, "mode": f.mode} for f, h in zip(local, hashes)
    ]
    plan = client.json("POST", f"{base}/plan", json={"files": manifest, "delete_extraneous": delete_extraneous})
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
    missing = set(missing_paths)
    full_manifest = json.dumps({"files": manifest, "delete_extraneous": delete_extraneous})

    def apply(manifest_json: str, files: List[LocalFile]) -> None:
        form = Multipart()
        form.field("manifest", manifest_json)
        for f in files:
            append_local_file(form, f.path, f)
        r = client.json("POST", f"{base}/apply", body=form, timeout=upload_timeout(client, len(form)))
        result.bytes_sent += sum(f.size for f in files)
        result.uploaded_paths.extend(f.path for f in files)
        result.reused += r.get("reused", 0)
        result.deleted += r.get("deleted", 0)

    to_send = [by_path[p] for p in missing_paths if p in by_path]
    # A multipart field name cannot carry `"`, CR or LF (they are percent-encoded), so such files
    # go first by PUT; the apply step then finds them unchanged.
    for f in [f for f in to_send if _UNNAMEABLE.search(f.path)]:
        with open(f.abs, "rb") as fh:
            data = fh.read()
        client.json("PUT", f"/v1/sandboxes/{encode_path(sandbox_id)}/files/{encode_path(f.path)}", body=data,
                    timeout=upload_timeout(client, len(data)))
        result.bytes_sent += len(data)
        result.uploaded_paths.append(f.path)
        missing.discard(f.path)
    to_send = [f for f in to_send if not _UNNAMEABLE.search(f.path)]
    if (len(full_manifest.encode("utf-8")) <= MANIFEST_FIELD_MAX and len(to_send) <= BATCH_MAX_FILES
            and sum(f.size for f in to_send) <= BATCH_MAX_BYTES):
        # The usual case: one request carries the whole manifest and the missing files, and the
        # server applies deletions in the same step.
        apply(full_manifest, to_send)
    else:
        # Too big for one request (the server caps parts, and the manifest field at 64 KiB): send
        # the changed entries in batches with partial manifests that delete nothing, then delete.
        changed = [entry_of[p] for p in [*missing_paths, *reusable] if p in entry_of]
        for group in _manifest_batches(changed, lambda e: by_path[e["path"]].size if e["path"] in missing else None):
            apply(json.dumps({"files": group, "delete_extraneous": False}),
                  [by_path[e["path"]] for e in group if e["path"] in missing])
        if to_delete:
            if len(full_manifest.encode("utf-8")) <= MANIFEST_FIELD_MAX:
                apply(full_manifest, [])
            else:
                for p in to_delete:
                    try:
                        client.json("DELETE", f"/v1/sandboxes/{encode_path(sandbox_id)}/files/{encode_path(p)}")
                        result.deleted += 1
                    except FileNotFoundException:
                        pass
    result.uploaded = len(result.uploaded_paths)
    result.duration_ms = (time.perf_counter() - started) * 1000
    return result
