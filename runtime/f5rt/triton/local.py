"""Run a real `tritonserver` from the `nvidia-pytriton` wheel, without a container.

The wheel (x86_64 and aarch64, glibc >= 2.35) carries Triton's server binary, its Python backend
(`libtriton_python.so` + `triton_python_backend_utils.py`) and one backend stub per Python version
(3.8 - 3.13) under `pytriton/tritonserver/`, and the server's shared libraries under
`nvidia_pytriton.libs/`. PyTriton itself launches it by copying `backends/` to a work folder,
adding the stub built for the running interpreter as `backends/python/triton_python_backend_stub`,
and starting the binary with `--backend-directory` there, `LD_LIBRARY_PATH` naming the libs folder,
and the Python environment's `bin/` first on `PATH`: the stub embeds libpython and finds its
`sys.prefix` (hence f5rt and numpy) by looking up `python3` on `PATH`. This module does the same
for a plain model repository, so tests, the load test and a developer get the production server.

Production serving uses NVIDIA's Triton container or the JetPack release instead (README "Scaling
out"); nothing here is needed there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from f5rt.errors import BackendUnavailable


@dataclass(frozen=True)
class TritonInstall:
    """The pieces of Triton inside an installed nvidia-pytriton wheel."""

    binary: Path
    libs: Path
    backends: Path
    stub: Path

    @classmethod
    def from_pytriton(cls, python: tuple[int, int] | None = None) -> TritonInstall:
        """Locate the wheel's server and the stub for `python` (default: this interpreter)."""
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise BackendUnavailable(
                "nvidia-pytriton is not installed: pip install 'nvidia-pytriton' (needs numpy < 2)"
            )
        pkg = Path(next(iter(spec.submodule_search_locations)))
        dist = pkg / "tritonserver"
        major, minor = python or sys.version_info[:2]
        stubs = dist / "python_backend_stubs"
        stub = stubs / f"{major}.{minor}" / "triton_python_backend_stub"
        binary = dist / "bin" / "tritonserver"
        if not binary.is_file():
            raise BackendUnavailable(f"{binary} is missing: the nvidia-pytriton install is incomplete")
        if not stub.is_file():
            have = sorted(p.name for p in stubs.iterdir()) if stubs.is_dir() else []
            raise BackendUnavailable(
                f"nvidia-pytriton has no Python backend stub for Python {major}.{minor} (has {have}); "
                "use one of those Python versions for the server's environment"
            )
        libs = pkg.parent / "nvidia_pytriton.libs"  # wheel install; an editable one keeps them in the package
        if not libs.is_dir():
            libs = dist / "external_libs"
        return cls(binary=binary, libs=libs, backends=dist / "backends", stub=stub)

    def backend_directory(self, workdir: Path) -> Path:
        """`<workdir>/backends`: the wheel's backends plus the stub of this Python, as PyTriton lays them."""
        target = workdir / "backends"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(self.backends, target, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(self.stub, target / "python" / "triton_python_backend_stub")
        return target

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.libs), env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.prefix) / "bin"), env.get("PATH", "")) if p)
        return env


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports that were free a moment ago (bound together so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]


class LocalTritonServer:
    """`tritonserver --model-repository REPO` on loopback ports, as a context manager.

    Entering starts the server and waits until /v2/health/ready answers 200 (every model loaded and
    warmed up); a server that exits or stays unready past `start_timeout` raises with its log tail.
    Leaving stops it (SIGTERM, then SIGKILL after `stop_timeout`). The log is `workdir/tritonserver.log`.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        workdir: str | os.PathLike[str],
        *,
        start_timeout: float = 180.0,
        stop_timeout: float = 30.0,
        extra_args: tuple[str, ...] = (),
        install: TritonInstall | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.workdir = Path(workdir)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = extra_args
        self.install = install or TritonInstall.from_pytriton()
        self.host = "127.0.0.1"
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3, self.host)
        self.log_path = self.workdir / "tritonserver.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self, backend_directory: Path) -> list[str]:
        return [
            str(self.install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_directory}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={int(self.stop_timeout)}",
            *self.extra_args,
        ]

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> LocalTritonServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = self.command(self.install.backend_directory(self.workdir))
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.install.environment(), start_new_session=True
            )
        deadline = time.monotonic() + self.start_timeout
        while not self._ready():
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with {self._proc.returncode} before it was ready:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tritonserver not ready after {self.start_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    def stop(self) -> int | None:
        """Stop the server (and its stub processes, which share its session); returns its exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout + 5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LocalTritonServer", "TritonInstall", "free_ports"]
