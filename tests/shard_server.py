"""A real HTTP server on loopback (Python's http.server in a thread) serving a shards folder, for the tests of
remote shards: it counts the requests per path and can fail the way servers do (a transfer cut in the middle,
then the whole server gone, and maybe back; a transfer that stalls)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from distributed_run import free_port


class ShardServer:
    """`cut_at=n`: the n-th shard (.tar) request gets half its bytes, then the connection and the server go
    down; `back_after` seconds later (None: never) the server listens again on the same port.
    `stall=True`: shard bodies stop after half their bytes and the connection stays open, silent."""

    def __init__(self, folder: Path, cut_at: int | None = None, back_after: float | None = None, stall=False):
        self.folder, self.cut_at, self.back_after, self.stall = folder, cut_at, back_after, stall
        self.port, self.requests, self.lock = free_port(), Counter(), threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None
        self.released = threading.Event()  # ends stalled transfers when the server stops

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def shard_requests(self) -> int:
        return sum(n for path, n in self.requests.items() if path.endswith(".tar"))

    def start(self) -> ShardServer:
        handler = partial(Handler, directory=str(self.folder), server_state=self)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()  # the port refuses connections from now on
            self.httpd = None

    def go_down(self) -> None:
        """Stop (from a thread of its own: shutdown() waits for the serving loop), maybe come back."""

        def down_and_back():
            self.stop()
            if self.back_after is not None:
                time.sleep(self.back_after)
                self.released.clear()
                self.start()

        threading.Thread(target=down_and_back, daemon=True).start()

    def __enter__(self) -> ShardServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, server_state: ShardServer, **kwargs):
        self.state = server_state
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:  # quiet: the tests read the runs' logs, not the server's
        pass

    def do_GET(self) -> None:
        with self.state.lock:
            self.state.requests[self.path] += 1
            self.nth = self.state.shard_requests() if self.path.endswith(".tar") else 0
        super().do_GET()

    def copyfile(self, source, outputfile) -> None:
        cut = self.nth and self.nth == self.state.cut_at
        if not (cut or (self.nth and self.state.stall)):
            return super().copyfile(source, outputfile)
        data = source.read()
        outputfile.write(data[: len(data) // 2])
        outputfile.flush()
        if self.state.stall:
            self.state.released.wait(60)
            return
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
        self.state.go_down()
