"""A local Ray instance that lives exactly as long as the sweep driver that started it.

``ray.init(address="local")`` ties only the processes it starts itself (GCS, raylet) to the driver: a driver
killed without a word leaves the raylet's agents running for about a minute and trials still training beside
the next attempt's. Here the instance (``ray start --head --block``) runs in a process group of its own under
a guard, ``python -m invaders.sweeps.local_ray``, that reads a pipe from the driver: when the driver exits or
dies, the pipe closes and the guard stops every process of the instance, then itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invaders.errors import ResourceError

STOP_GRACE_S = 2.0  # seconds the instance gets to stop on SIGTERM (it keeps nothing) before it is killed
START_TIMEOUT_S = 60.0  # seconds for the head to answer


def free_port(host: str) -> int:
    """A TCP port nothing listens on at ``host`` now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def head_command(node_address: str, port: int, num_cpus: int, object_store_bytes: int) -> list[str]:
    """``ray start`` for a one-node instance on ``node_address`` whose GCS listens on ``port``."""
    return [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--include-dashboard=false",
        f"--node-ip-address={node_address}",
        f"--port={port}",
        f"--ray-client-server-port={free_port(node_address)}",  # not the fixed 10001 another instance may hold
        f"--num-cpus={num_cpus}",
        f"--object-store-memory={object_store_bytes}",
    ]


@contextmanager
def local_instance(node_address: str, num_cpus: int, object_store_bytes: int, log: Path) -> Iterator[str]:
    """Start a guarded instance (its output in ``log``); yields its address for ``ray.init``, stops it after."""
    port = free_port(node_address)
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(log, "wb") as output:
        guard = subprocess.Popen(
            [sys.executable, "-m", __name__, *head_command(node_address, port, num_cpus, object_store_bytes)],
            stdin=subprocess.PIPE,  # the driver's end: closed when the driver exits or dies
            stdout=output,
            stderr=output,
            process_group=0,  # Ctrl-C in the terminal is the driver's to handle
        )
    try:
        _wait_until_listening(guard, node_address, port, log)
        yield f"{node_address}:{port}"
    finally:
        guard.stdin.close()
        guard.wait()


def _wait_until_listening(guard: subprocess.Popen, host: str, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while guard.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    last = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
    raise ResourceError(f"a local Ray instance did not start: {last} (its output: {log})")


def stop_group(instance: subprocess.Popen) -> None:
    """Stop the instance and everything it started, this process last: its process group (the agents a
    stopped raylet leaves for a minute) and its workers, which run in process groups of their own."""
    import psutil  # comes with ray

    try:
        workers = psutil.Process(instance.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM is for the instance
    os.killpg(0, signal.SIGTERM)
    try:
        instance.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    for worker in workers:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            pass
    os.killpg(0, signal.SIGKILL)


def main(command: list[str]) -> None:
    """The guard: run ``command`` (the head) and stop it, with all it started, when the driver's pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    instance = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    sys.stdin.buffer.read()  # returns at the end of the pipe: the driver exited or died
    stop_group(instance)


if __name__ == "__main__":
    main(sys.argv[1:])
