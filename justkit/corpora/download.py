"""Resumable HTTP download (Range requests, ``.part`` file, md5 check) and safe tar extraction."""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from justkit.config import from_dict
from justkit.errors import JustkitError

log = logging.getLogger(__name__)

# Errors after which a download is retried from where the .part file ends.
TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)


class DownloadError(JustkitError, RuntimeError):
    """A download or extraction failed; the message names the URL or file and what to do."""


@dataclass
class DownloadConfig:
    """How ``download_file`` talks to the server."""

    chunk_bytes: int = 1 << 20
    timeout_s: float = 60.0
    retries: int = 5           # attempts after an interrupted transfer, each resuming with Range
    retry_wait_s: float = 2.0


def md5sum(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            h.update(block)
    return h.hexdigest()


def parse_md5_table(text: str) -> Dict[str, str]:
    """``md5sum`` output (``<hex>  [*]<path>``) -> {basename: hex}; other lines are ignored."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and len(parts[0]) == 32 and all(c in "0123456789abcdefABCDEF" for c in parts[0]):
            out[os.path.basename(parts[1].lstrip("*").strip())] = parts[0].lower()
    return out


def fetch_text(url: str, timeout_s: float = 30.0) -> str:
    """GET a small text file; raises DownloadError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.read().decode("utf-8")
    except (*TRANSIENT, UnicodeDecodeError) as e:
        raise DownloadError(f"{url}: cannot fetch ({e})") from None


def _total_from_headers(resp, offset: int) -> Optional[int]:
    cr = resp.headers.get("Content-Range")  # "bytes 100-999/1000"
    if cr and "/" in cr and not cr.endswith("/*"):
        return int(cr.rsplit("/", 1)[1])
    cl = resp.headers.get("Content-Length")
    if cl is not None:
        return int(cl) + (offset if resp.status == 206 else 0)
    return None


def download_file(
    url: str,
    dest: str | Path,
    md5: Optional[str] = None,
    config: DownloadConfig | dict | None = None,
    progress: Optional[Callable[[int, Optional[int]], None]] = None,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming with HTTP Range after interruptions.

    The .part file survives a killed process and the next call continues it. When the
    transfer is complete the md5 (if given) is checked and the file renamed to ``dest``;
    a mismatch removes the .part file and raises DownloadError. An existing ``dest`` is
    kept (and checked against ``md5`` when given).
    """
    cfg = config if isinstance(config, DownloadConfig) else from_dict(DownloadConfig, config)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if md5 and md5sum(dest) != md5.lower():
            raise DownloadError(f"{dest}: exists but its md5 is not {md5}; delete it and download again")
        return dest
    part = dest.with_name(dest.name + ".part")
    attempts = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            try:
                resp = urllib.request.urlopen(req, timeout=cfg.timeout_s)
            except urllib.error.HTTPError as e:
                if e.code == 416 and offset:  # nothing after offset: the .part is already complete
                    break
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            with resp:
                if offset and resp.status != 206:
                    log.warning("%s: server ignored the Range request; starting again from byte 0", url)
                    offset = 0
                total = _total_from_headers(resp, offset)
                if offset:
                    log.info("%s: resuming at byte %d of %s", url, offset, total if total is not None else "?")
                with open(part, "ab" if offset else "wb") as f:
                    done = offset
                    while True:
                        block = resp.read(cfg.chunk_bytes)
                        if not block:
                            break
                        f.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            if total is not None and done < total:
                raise http.client.IncompleteRead(b"", total - done)
            break
        except TRANSIENT as e:
            attempts += 1
            if attempts > cfg.retries:
                raise DownloadError(
                    f"{url}: transfer failed after {cfg.retries} retries ({e}); {part} is kept, "
                    "run again to resume") from None
            log.warning("%s: transfer interrupted (%s); retry %d/%d resumes from the .part file",
                        url, e, attempts, cfg.retries)
            time.sleep(cfg.retry_wait_s)
    if md5:
        got = md5sum(part)
        if got != md5.lower():
            part.unlink()
            raise DownloadError(f"{url}: md5 of the download is {got}, expected {md5}; removed {part}, run again")
        log.info("%s: md5 %s verified", dest.name, got)
    os.replace(part, dest)
    return dest


class RefusedMember(DownloadError):
    """An archive member that extraction refuses (a link, a device, a path outside the tree)."""


def extract_tar(archive: str | Path, dest_dir: str | Path, top: str) -> Path:
    """Extract ``archive`` (whose members all lie under ``top/``) to ``dest_dir/top``, atomically.

    Extraction goes to a hidden sibling first and is renamed into place when complete, so
    ``dest_dir/top`` either does not exist or holds the whole archive. Reading the gzip
    stream to its end verifies its CRC and length, so a truncated or corrupt archive
    raises DownloadError. Only regular files and directories under ``top/`` are extracted:
    links of any kind (an MLS release has none), devices and members outside ``top/`` are
    refused before anything is written for them, and tarfile's ``data`` filter checks the
    rest (absolute paths, ``..``). Refusing links outright matters on Pythons whose filter
    can be bypassed by a chain of links (CVE-2025-4517, fixed in 3.11.13 / 3.12.11).
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    final = dest_dir / top
    if final.exists():
        raise DownloadError(f"{final}: already exists; remove it to extract {archive} again")
    tmp = dest_dir / f".{top}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tar:
                name = m.name[2:] if m.name.startswith("./") else m.name
                if name in ("", "."):
                    continue
                if name != top and not name.startswith(top + "/"):
                    raise RefusedMember(f"{archive}: member {m.name!r} is not under {top}/; not an MLS archive?")
                if not (m.isfile() or m.isdir()):
                    kind = "a link" if (m.issym() or m.islnk()) else "not a regular file or directory"
                    raise RefusedMember(f"{archive}: member {m.name!r} is {kind}; refused (an MLS archive holds "
                                        "only files and directories)")
                tar.extract(m, tmp, filter="data")
            # tarfile stops at the end-of-archive blocks; read the compressed stream to its end
            # so that gzip checks its CRC and length trailer too.
            while tar.fileobj.read(1 << 20):
                pass
    except RefusedMember:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except tarfile.FilterError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RefusedMember(f"{archive}: member refused by the extraction filter ({e}); not extracted") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(f"{archive}: corrupt or truncated archive ({e}); delete it and download again") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not (tmp / top).is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(f"{archive}: holds no {top}/ directory")
    os.replace(tmp / top, final)
    shutil.rmtree(tmp, ignore_errors=True)
    return final
