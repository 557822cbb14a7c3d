"""The local shard cache (`data.cache_dir`): each remote shard downloaded once, checked, then read from disk.

`<cache_dir>/<dataset>/<shard>.tar` holds a shard only once its sha256 matched the manifest's (written to a
temporary name and renamed: a crash leaves no half file under the real name). A cached file is checked again
every time it is opened (one sequential read from the page cache, see the README): a file that no longer
matches is fetched again. Ranks and loader workers of one node that want the same shard take a lock on
`<shard>.tar.lock`, so it is downloaded once and nobody reads a file while it is written.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
from pathlib import Path
from typing import BinaryIO

from jrnet.fileio import atomic_file, file_sha256
from jrnet.location import CHUNK, Fetch, Location

log = logging.getLogger(__name__)


def cached_path(cache_dir: Path, where: Location) -> Path:
    return cache_dir / where.rel


def open_cached(fetch: Fetch, where: Location, sha256: str, cache_dir: Path) -> BinaryIO:
    """The shard from the cache, downloaded and checked first when it is missing or damaged."""
    target = cached_path(cache_dir, where)
    if target.is_file() and verified(target, sha256):
        return open(target, "rb")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f"{target.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not (target.is_file() and verified(target, sha256)):
            fetch.retried(where, lambda: download(fetch, where, target, sha256))
    return open(target, "rb")


def verified(path: Path, sha256: str) -> bool:
    if file_sha256(path) == sha256:
        return True
    log.warning("cached %s does not match the manifest's sha256: fetching it again", path)
    return False


def download(fetch: Fetch, where: Location, target: Path, sha256: str) -> None:
    """One attempt: the whole file to a temporary name, renamed only when its checksum is the manifest's."""
    digest = hashlib.sha256()
    with fetch.open_once(where) as source, atomic_file(target) as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != sha256:
            raise OSError(f"{where}: sha256 {digest.hexdigest()[:12]}... differs from the manifest's {sha256[:12]}...")
