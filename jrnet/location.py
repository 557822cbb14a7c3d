"""Where shards live and how their files are read: a local folder, an http(s) prefix, or a `pipe:` command.

`--shards` takes one of
    shards/                                          a local folder (as always)
    https://host/data/shards                         files below a URL prefix
    pipe:aws s3 cp s3://bucket/shards/{path} -       a command that writes one file to stdout; `{path}` is the
    pipe:gsutil cat gs://bucket/shards/{path}        file's path below the shards location, e.g.
                                                     `unc/train-000000.tar`, shell-quoted
Remote files are read with a read timeout (no byte for `data.read_timeout` seconds is a failure, never a hang)
and opened with retries and exponential backoff (`data.retries` attempts, 0.5 s, 1 s, 2 s, ... apart). A file
that is still unavailable after them raises `Unavailable`, naming it. A transfer that ends early (fewer bytes
than announced, or a command that exits non-zero) raises `OSError` naming the file, so a cut connection is never
read as a short shard.

HTTP is read with urllib rather than webdataset's `gopen` (curl): that curl has no read timeout and retries
30 x 2 s, and a truncated body must be an error here.
"""

from __future__ import annotations

import abc
import http.client
import os
import select
import shlex
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
CHUNK = 1 << 16


class Unavailable(OSError):
    """A remote file that could not be opened after every retry (or does not exist)."""


@dataclass(frozen=True)
class Location:
    """A file or folder: `base` is the `--shards` value, `rel` the '/'-separated path below it."""

    base: str
    rel: str = ""

    @classmethod
    def parse(cls, shards: str | Path) -> Location:
        text = str(shards)
        if text.startswith(("s3://", "gs://", "az://")):
            raise ValueError(
                f"--shards {text}: object stores are read through their own command line tools, e.g. "
                f"pipe:aws s3 cp {text.rstrip('/')}/{{path}} -  or  pipe:gsutil cat {text.rstrip('/')}/{{path}}"
            )
        if text.startswith("pipe:") and "{path}" not in text:
            raise ValueError(
                f"--shards {text}: a pipe: command needs {{path}} where the file's path below the shards location "
                "goes, e.g. pipe:aws s3 cp s3://bucket/shards/{path} -"
            )
        return cls(text)

    @property
    def scheme(self) -> str:
        if self.base.startswith(("http://", "https://")):
            return "http"
        return "pipe" if self.base.startswith("pipe:") else "local"

    @property
    def is_local(self) -> bool:
        return self.scheme == "local"

    def __truediv__(self, name: str) -> Location:
        return Location(self.base, f"{self.rel}/{name}".strip("/"))

    @property
    def name(self) -> str:
        return self.rel.rpartition("/")[2]

    @property
    def path(self) -> Path:
        """The local file or folder (local locations only)."""
        assert self.is_local, self
        return Path(self.base) / self.rel if self.rel else Path(self.base)

    def command(self) -> str:
        return self.base.removeprefix("pipe:").replace("{path}", shlex.quote(self.rel))

    def __str__(self) -> str:
        if self.scheme == "http":
            return f"{self.base.rstrip('/')}/{urllib.parse.quote(self.rel)}" if self.rel else self.base
        if self.scheme == "pipe":
            return f"pipe:{self.command()}"
        return str(self.path)


@dataclass(frozen=True)
class Fetch:
    """How remote files are read: the read timeout and the number of attempts to open one."""

    read_timeout: float = 60.0
    attempts: int = 5

    def open(self, where: Location) -> BinaryIO:
        """A readable stream of the file, after retries with backoff; `Unavailable` when it cannot be opened."""
        if where.is_local:
            return open(where.path, "rb")
        return self.retried(where, lambda: self.open_once(where))

    def read_bytes(self, where: Location) -> bytes:
        """A small file (manifest, vocabulary, GloVe matrix), whole: a transfer cut short is retried too."""
        if where.is_local:
            return where.path.read_bytes()
        return self.retried(where, lambda: read_all(self.open_once(where)))

    def open_once(self, where: Location) -> BinaryIO:
        return (open_http if where.scheme == "http" else open_pipe)(where, self.read_timeout)

    def retried(self, where: Location, action):
        """`action()`, tried `attempts` times on OSError with exponential backoff; then `Unavailable`."""
        for attempt in range(self.attempts):
            try:
                return action()
            except Unavailable:
                raise
            except OSError as exn:
                if attempt == self.attempts - 1:
                    raise Unavailable(f"{where}: unavailable after {self.attempts} attempts: {exn}") from exn
                time.sleep(min(30.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    def exists(self, where: Location) -> bool:
        if where.is_local:
            return where.path.is_file()
        try:
            self.read_bytes(where)
        except Unavailable:
            return False
        return True


def read_all(stream: BinaryIO) -> bytes:
    with stream:
        return stream.read()


def open_http(where: Location, timeout: float) -> BinaryIO:
    try:
        response = urllib.request.urlopen(str(where), timeout=timeout)  # noqa: S310 (http(s) only: Location.scheme)
    except urllib.error.HTTPError as exn:
        if exn.code in TRANSIENT_HTTP:
            raise OSError(f"HTTP {exn.code} {exn.reason}") from exn
        raise Unavailable(f"{where}: HTTP {exn.code} {exn.reason}") from exn
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError) as exn:
        raise OSError(str(exn)) from exn
    return CheckedHttp(response, str(where))


class Stream(abc.ABC):
    """A remote file's bytes, closed by `with`, shown as its location in webdataset's and our error messages."""

    name: str

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection or the command (each kind of stream has its own)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return self.name


class CheckedHttp(Stream):
    """A response body that raises, naming the URL, when the connection ends before the announced length."""

    def __init__(self, response, url: str):
        self.response, self.name, self.received = response, url, 0
        length = response.headers.get("Content-Length")
        self.length = int(length) if length is not None else None

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.response.read(size) if size is not None and size >= 0 else self.response.read()
        except (http.client.HTTPException, OSError) as exn:
            raise OSError(f"{self.name}: connection failed after {self.received} bytes: {exn}") from exn
        self.received += len(data)
        if (not data or size is None or size < 0) and self.length is not None and self.received < self.length:
            raise OSError(f"{self.name}: connection closed after {self.received} of {self.length} bytes")
        return data

    def close(self) -> None:
        self.response.close()


def open_pipe(where: Location, timeout: float) -> BinaryIO:
    """Start the command; it counts as opened once it wrote its first bytes (a failed start is retried)."""
    stream = PipeStream(where.command(), str(where), timeout)
    try:
        stream.first = stream.read_chunk()
    except OSError:
        stream.close()
        raise
    return stream


class PipeStream(Stream):
    """A command's stdout with a read timeout; its exit status is checked at the end of the output."""

    def __init__(self, command: str, name: str, timeout: float):
        self.name, self.timeout, self.first = name, timeout, b""
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close()); a full stderr pipe would block
        self.process = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=self.errors)  # noqa: S602

    def read_chunk(self) -> bytes:
        fd = self.process.stdout.fileno()
        if not select.select([fd], [], [], self.timeout)[0]:
            raise OSError(f"{self.name}: no data for {self.timeout:g} s")
        data = os.read(fd, CHUNK)
        if not data:
            self.check_exit()
        return data

    def check_exit(self) -> None:
        try:
            code = self.process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise OSError(f"{self.name}: closed its output but did not exit within {self.timeout:g} s") from None
        if code != 0:
            self.errors.seek(0)
            message = " ".join(self.errors.read().decode(errors="replace").split())[-300:]
            raise OSError(f"{self.name}: exited {code}: {message}")

    def read(self, size: int = -1) -> bytes:
        parts, wanted = [], size if size is not None and size >= 0 else None
        got = 0
        if self.first:
            parts.append(self.first)
            got, self.first = len(self.first), b""
        while wanted is None or got < wanted:
            chunk = self.read_chunk()
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        data = b"".join(parts)
        if wanted is not None and len(data) > wanted:
            data, self.first = data[:wanted], data[wanted:]
        return data

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        self.errors.close()
