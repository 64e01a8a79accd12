"""``kaon up``: the whole platform on one port.

- ``/api/v1/…`` the control API (OpenAPI at ``/docs``),
- ``/d/{deployment}/…`` the authenticated, rate-limited, metered inference gateway,
- ``/`` a placeholder console page,
- in the background: the deployment reconciler (replica pools), the usage-event writer and
  ``workers`` job-worker processes (restarted if they die).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from kaon.config import get_settings
from kaon.platform.api.app import create_control_app
from kaon.platform.deployrt import MAX_BODY, DeploymentRuntime
from kaon.platform.gateway import Gateway, GatewayFirst
from kaon.platform.meterlog import MeterWriter
from kaon.procs import die_with_parent, freeze_heap
from kaon.serve import logs


class WorkerProcesses:
    """``count`` job workers as child processes, restarted when one dies."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "kaon.platform.worker"],
                                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)

    async def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.count)]
        self._task = asyncio.create_task(self._watch(), name="kaon-job-workers")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    self.restarts += 1
                    self.procs[i] = self._spawn()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # a running job is stopped and requeued
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()


def create_platform_app(*, workers: int = 1) -> FastAPI:
    logs.redact_keys_in_server_logs()  # a browser's stream URL carries ?api_key=
    runtime = DeploymentRuntime()
    meter = MeterWriter(journal=get_settings().home / "meter-journal")
    job_workers = WorkerProcesses(workers)
    app = create_control_app(max_body=MAX_BODY)
    gateway = Gateway(runtime, meter, limiter=app.state.limiter)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        meter.start()
        await runtime.start()
        if workers:
            await job_workers.start()
        freeze_heap()
        try:
            yield
        finally:
            await job_workers.stop()
            await runtime.stop()
            meter.stop()

    app.router.lifespan_context = lifespan
    app.add_middleware(GatewayFirst, gateway=gateway)  # HTTP inference, ahead of FastAPI
    app.include_router(gateway.router())  # the OpenAPI entry, and WebSocket streams
    app.router.routes.insert(0, app.router.routes.pop())  # its prefix matches nothing else
    app.state.runtime, app.state.meter, app.state.gateway = runtime, meter, gateway

    @app.get("/", include_in_schema=False)
    def console() -> HTMLResponse:
        return HTMLResponse(_CONSOLE.format(pid=escape(str(os.getpid()))), headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                       "frame-ancestors 'none'",
            "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"})

    return app


_CONSOLE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kaon</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem}}
code{{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}}</style></head>
<body><h1>Kaon</h1>
<p>The platform is running (process {pid}). The web console is not built yet; everything it
will do is in the API and the CLI today.</p>
<ul>
<li><a href="/docs">API reference (OpenAPI)</a></li>
<li>Log in from a shell: <code>kaon login --url http://HOST:PORT --key kaon_…</code></li>
<li>Deploy a model: <code>kaon deploy mnist-mlp:1 --name digits</code>, then
<code>POST /d/digits/v1/models/mnist-mlp/predict</code></li>
<li>Usage and invoices: <code>kaon usage</code>, <code>kaon invoices</code></li>
</ul></body></html>
"""
