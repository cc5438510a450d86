"""A Mosquitto broker run as a child process on a free loopback port.

Used by the demo (when the user gives no ``--broker``) and by the test suite (when
``LOCKERFLEET_TEST_MQTT_URL`` is not set). The configuration is generated into a private
directory; the broker listens on 127.0.0.1 only. :meth:`MosquittoProcess.stop` and
:meth:`MosquittoProcess.start` can be called again to simulate an outage on the same port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from protocol.urls import BrokerAddress


class BrokerUnavailable(RuntimeError):
    """Mosquitto could not be found or did not start."""


def find_mosquitto() -> str | None:
    """Return the path of the ``mosquitto`` binary, or ``None``."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in (
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/opt/homebrew/sbin/mosquitto",
    ):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Return True once ``host:port`` accepts a TCP connection, False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


class MosquittoProcess:
    """One Mosquitto child process with a generated configuration."""

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_config: str = "",
        binary: str | None = None,
        workdir: Path | None = None,
    ) -> None:
        found = binary or find_mosquitto()
        if found is None:
            raise BrokerUnavailable(
                "the mosquitto binary is not installed (Debian/Ubuntu: apt install mosquitto; "
                "macOS: brew install mosquitto)"
            )
        self.binary = found
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="lockerfleet-mosquitto-"))
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.port)

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def write_config(self) -> None:
        """(Re)write the configuration file from the current settings."""
        default_auth = "" if "allow_anonymous" in self.extra_config else "allow_anonymous true\n"
        self.config_path.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{default_auth}"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            "set_tcp_nodelay true\n"
            "log_dest none\n"
            f"{self.extra_config}"
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections.

        Raises :class:`BrokerUnavailable` if it exits or does not listen within ``timeout``.
        """
        if self.process is not None and self.process.poll() is None:
            return
        self.write_config()
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary, generated config
            [self.binary, "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.workdir / "mosquitto.log").read_text(errors="replace")[-500:]
                raise BrokerUnavailable(f"mosquitto exited with {self.process.returncode}: {tail}")
            if wait_for_port("127.0.0.1", self.port, 0.1):
                return
        self.stop()
        raise BrokerUnavailable(f"mosquitto did not listen on 127.0.0.1:{self.port}")

    def reload(self) -> None:
        """Rewrite the configuration and ask the broker to re-read it (SIGHUP)."""
        self.write_config()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(1)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def close(self) -> None:
        """Stop the broker and remove its private directory."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
