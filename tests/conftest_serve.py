"""Fixtures for the service tests: a tiny real index (tiny CLIP, bundled demo diffusion model) and a
helper that starts the real model worker and app over it. Import what you need into a test module."""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from conftest_index import build, tiny_clip_dir, write_images  # noqa: F401

# The service's rerank settings, and the same as `discff search` flags (kept tiny: 1 step x 1 level).
ENGINE_FLAGS = ("--steps", "1", "--levels", "1.0", "--device", "cpu")


def engine_config():
    from discff_cli.engine.config import EngineConfig

    return EngineConfig(steps=1, levels=(1.0,), device="cpu")


@pytest.fixture(scope="module")
def served_index(tmp_path_factory, tiny_clip_dir) -> Path:
    """Sixteen images, one of them a symlink to a file outside the indexed folder, indexed with --model demo."""
    root = tmp_path_factory.mktemp("serve")
    images = root / "images"
    write_images(images, 15, seed=11)
    outside = root / "outside"
    write_images(outside, 1, seed=12, prefix="secret")
    os.symlink(next(outside.rglob("secret000.jpg")), images / "link-to-outside.jpg")
    result, summary = build(images, root / "idx", tiny_clip_dir, "--model", "demo")
    assert result.exit_code == 0 and summary["indexed"] == 16, result.output
    return root / "idx"


@pytest.fixture(scope="module")
def service(served_index):
    """(worker, TestClient) of a service over `served_index`, shared by one test module."""
    from fastapi.testclient import TestClient

    worker, app = start_service(served_index)
    yield worker, TestClient(app)
    worker.stop()


@pytest.fixture(scope="module")
def client(service):
    return service[1]


def start_service(index_dir: Path, **settings):
    """(worker, app) over `index_dir` with the real TimedSearcher; `max_queue` goes to the worker."""
    from discff_cli.service.app import ServeSettings, create_app
    from discff_cli.service.queries import TimedSearcher
    from discff_cli.service.worker import ModelWorker

    config = engine_config()
    worker = ModelWorker(lambda: TimedSearcher(str(index_dir), None, None, None, config),
                         max_queue=settings.pop("max_queue", 8))
    worker.start()
    return worker, create_app(worker, ServeSettings(str(index_dir), **settings))


@contextmanager
def live_server(app) -> Iterator[int]:
    """Run `app` on uvicorn at 127.0.0.1 on a free port in a thread; yields the port."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
