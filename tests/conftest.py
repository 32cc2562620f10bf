"""Fixtures: a local media server with ffmpeg-generated files, the service under test (in-process
or as a process), and a throwaway PostgreSQL server. Helpers are in helpers.py."""

from pathlib import Path

import pytest

from app.api.application import create_app
from tests.support.helpers import ServiceProcess, make_settings
from tests.support.mediaserver import MediaServer, generate_media
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures, for every test module)

# Tests using these run the real thing end to end (downloads, processes, databases, a browser):
# `-m "not e2e"` is the fast suite.
E2E_FIXTURES = {"media_server", "service_factory", "postgres_server", "postgres_url", "browser", "hosts"}


def pytest_collection_modifyitems(items):
    for item in items:
        if E2E_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def media_server(tmp_path_factory):
    server = MediaServer(generate_media(tmp_path_factory.mktemp("media"))).start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
async def make_client(aiohttp_client, tmp_path):
    """Start the service in-process with Settings overrides; returns its test client."""

    async def start(**overrides):
        settings = make_settings(tmp_path, **overrides)
        client = await aiohttp_client(create_app(settings))
        client.settings = settings
        return client

    return start


@pytest.fixture
async def client(make_client):
    return await make_client()


@pytest.fixture
def service_factory(tmp_path):
    services = []

    def start(
        *args: str, data_dir: Path | None = None, wrap: tuple[str, ...] = (), trust: Path | None = None, **env
    ) -> ServiceProcess:
        """The service as a process; wrap: a command it runs under (e.g. faketime); trust: the CA the
        test client verifies an HTTPS service with."""
        service = ServiceProcess(data_dir or tmp_path / "data", *args, trust=trust, **env)
        service.command = [*wrap, *service.command]
        services.append(service.start())
        return service

    yield start
    for service in services:
        service.kill()
