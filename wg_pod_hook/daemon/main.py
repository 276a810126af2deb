"""The daemon put together: its loop, the hooks' requests, the watches,
the repairs and the looks, the hooks' notes on its control socket, and its
metrics."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path

from .. import metrics, notify, units
from ..errors import SettingsError, SetupError
from ..kernel import _pyroute2, backends, nft_apply
from ..model.settings import Settings
from ..runtime import Runtime
from . import looks
from .hooks import HookRequests
from .loop import Loop, root_only_socket
from .repairs import Repairs
from .watches import Watch, Watches

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings.in_daemon(True)
        self.runtime = runtime
        self.loop = Loop()
        self.claim = _claim(runtime)
        self.loop.hold(self.claim)
        self.metrics = _serve_metrics(runtime, self.settings)
        self.control = root_only_socket(runtime.daemon_socket, socket.SOCK_DGRAM)
        self.loop.watch(self.control, self._message)
        self.requests = HookRequests(self.loop, runtime, self.settings)
        self.watches = Watches(self.loop, runtime, self.settings, self)
        self.repairs = Repairs(self.loop, runtime, self.settings, self.watches)
        # Each look at a tunnel: its status read once, then each of these.
        self.tasks = [
            looks.health_task(runtime, self.repairs.busy, self.broken),
            looks.endpoints_task(runtime, self.settings),
        ]
        if self.settings.reload_on_change:
            self.tasks.append(looks.sources_task(self.repairs.reload))
        self.loop.every_tick(self.watches.scan)
        self.loop.every_tick(self.look_all)

    def run(self) -> None:
        # For the workers: each would load them anew.
        nft_apply.preload()
        _pyroute2.preload()
        backends.preload()
        self.requests.start()
        log.info("daemon: started (pid %d)", os.getpid())
        units.ready()
        try:
            self.loop.run()
        finally:
            self.close()
            log.info("daemon: stopped; the tunnels stay up")

    def close(self) -> None:
        self.watches.close()
        self.loop.close(self.control)
        Path(self.runtime.daemon_socket).unlink(missing_ok=True)
        self.requests.close()
        self.loop.close(self.claim)

    # -- what the watches ask (watches.Events) ------------------------------

    def busy(self, container_id: str) -> bool:
        return self.repairs.busy(container_id)

    def broken(self, container_id: str) -> None:
        self.repairs.schedule(container_id, 0.0)

    def watched(self, watch: Watch) -> None:
        looks.look(self.runtime, watch, self.tasks)

    def look_all(self) -> None:
        for watch in self.watches.all():
            looks.look(self.runtime, watch, self.tasks)

    # -- the hooks' notes ----------------------------------------------------

    def _message(self) -> None:
        while True:
            try:
                data = self.control.recv(512)
            except BlockingIOError:
                return
            message = notify.parse(data)
            if message is None:
                log.warning("daemon: ignored a malformed message")
                continue
            event, container_id, seconds = message
            if event == "up":
                if seconds is not None and self.metrics is not None:
                    self.metrics.hook_took(seconds)
                self.watches.adopt(container_id)
            else:
                self.watches.drop(container_id)


def _serve_metrics(runtime: Runtime, settings: Settings) -> metrics.Metrics | None:
    if settings.metrics_listen is None:
        return None
    try:
        served = metrics.Metrics(runtime)
    except ImportError:
        raise SettingsError(
            settings.source,
            "metrics_listen",
            "needs prometheus-client (apt install python3-prometheus-client)",
        ) from None
    try:
        served.serve(*settings.metrics_listen)
    except OSError as exc:
        host, port = settings.metrics_listen
        raise SetupError("serve metrics", f"{host}:{port}", str(exc)) from None
    return served


def _claim(runtime: Runtime) -> int:
    """One daemon per state directory (per host, but for a test suite's
    own): it holds a lock on the directory while it runs (released by the
    kernel however it ends)."""
    fd = os.open(runtime.make(runtime.state_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SetupError(
            "start daemon", runtime.state_dir, "another wg-pod daemon is running"
        ) from None
    return fd


def run(runtime: Runtime, settings: Settings) -> None:
    Daemon(settings, runtime).run()
