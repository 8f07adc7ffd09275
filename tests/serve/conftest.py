import asyncio
import contextlib
import threading

import pytest

pytest.importorskip("aiohttp", reason="pip install 'edgellm[serve]'")
pytest.importorskip("tritonclient", reason="pip install 'edgellm[serve]'")


@contextlib.contextmanager
def running(models, **cfg):
    """A real server on loopback (ephemeral ports) in a background event loop."""
    from edgellm.serve import Server, ServerConfig

    srv = Server(models, ServerConfig(port=0, grpc_port=0, **cfg))
    loop = asyncio.new_event_loop()
    started, failed = threading.Event(), []

    def run():
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(srv.start())
        except Exception as exc:  # surfaced to the test
            failed.append(exc)
            started.set()
            return
        started.set()
        loop.run_until_complete(srv._stop.wait())
        loop.run_until_complete(srv.shutdown())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(120), "server did not start"
    if failed:
        raise failed[0]
    try:
        yield srv
    finally:
        loop.call_soon_threadsafe(srv.stop)
        t.join(60)
        loop.close()


@pytest.fixture(scope="module")
def served(minilm_artifact):
    from edgellm.serve import ModelConfig

    with running([ModelConfig(minilm_artifact.path)], max_batch_size=8, max_queue_delay_ms=5) as srv:
        yield srv


@pytest.fixture(scope="session")
def run_server():
    """``with run_server([ModelConfig(...)], **config) as srv:`` -- a real server for one test."""
    return running
