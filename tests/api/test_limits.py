"""Rate limit on task creation (token bucket, trusted proxies) and CORS."""

import ipaddress

import pytest

from app.api.networks import client_address
from app.api.ratelimit import RateLimiter
from app.settings import ConfigError, load_settings

TOKEN = "t0ken-for-tests-0123456789abcdef"
APP_ORIGIN = "https://app.example.com"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_bucket_allows_the_burst_then_refills_at_the_rate():
    clock = Clock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(4)] == [0, 0, 0, 10]
    assert limiter.acquire("b") == 0  # every client has its own bucket
    clock.now += 5
    assert limiter.acquire("a") == 5
    clock.now += 5
    assert limiter.acquire("a") == 0
    clock.now += 3600
    assert [limiter.acquire("a") for _ in range(4)] == [0, 0, 0, 10]  # never more than the burst


def test_the_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy():
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    assert client_address("192.0.2.9", ["198.51.100.1"], ()) == "192.0.2.9"
    assert client_address("192.0.2.9", ["198.51.100.1"], trusted) == "192.0.2.9"
    assert client_address("10.1.1.1", [], trusted) == "10.1.1.1"
    assert client_address("10.1.1.1", ["198.51.100.1"], trusted) == "198.51.100.1"
    # The client may forge entries on the left; the right-most untrusted one is what our proxy saw.
    assert client_address("10.1.1.1", ["203.0.113.7, 198.51.100.1, 10.2.2.2"], trusted) == "198.51.100.1"
    assert client_address("10.1.1.1", ["203.0.113.7", "198.51.100.1"], trusted) == "198.51.100.1"
    assert client_address("10.1.1.1", ["not-an-ip, 10.2.2.2"], trusted) == "10.2.2.2"


def test_limit_and_cors_settings():
    settings = load_settings(
        {
            "VIDEO_API_RATE_PER_MINUTE": "12",
            "VIDEO_API_RATE_BURST": "4",
            "VIDEO_API_TRUSTED_PROXIES": "10.0.0.0/8, fd00::/8",
            "VIDEO_API_CORS_ORIGINS": "https://App.Example.com, http://localhost:3000",
        }
    )
    assert (settings.rate_per_minute, settings.rate_burst) == (12.0, 4)
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "fd00::/8"]
    assert settings.cors_origins == ("https://app.example.com", "http://localhost:3000")
    defaults = load_settings({})
    assert (defaults.rate_per_minute, defaults.rate_burst, defaults.cors_origins) == (60.0, 20, ())
    for value in ("app.example.com", "https://app.example.com/path", "ftp://x"):
        with pytest.raises(ConfigError, match=r"VIDEO_API_CORS_ORIGINS: .* is not an origin"):
            load_settings({"VIDEO_API_CORS_ORIGINS": value})


async def test_task_creation_past_the_burst_answers_429_with_retry_after(make_client, media_server):
    client = await make_client(rate_per_minute=6, rate_burst=2)
    for n in range(2):
        response = await client.post(
            "/api/process", json={"url": media_server.url(f"/media/sample.webm?r={n}"), "extract_audio": False}
        )
        assert response.status == 202
    response = await client.post("/api/process", json={"url": media_server.url("/media/sample.webm?r=3")})
    assert response.status == 429
    assert response.headers["Retry-After"] == "10"
    assert (await response.json())["error"]["code"] == "rate_limited"
    # X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
    spoofed = await client.post(
        "/api/process",
        json={"url": media_server.url("/media/sample.webm?r=4")},
        headers={"X-Forwarded-For": "198.51.100.1"},
    )
    assert spoofed.status == 429
    # Reading is not limited.
    assert (await client.get("/api/tasks")).status == 200
    listing = await (await client.get("/api/tasks")).json()
    assert listing["total"] == 2


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(make_client, media_server):
    client = await make_client(rate_per_minute=1, rate_burst=1, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    url = media_server.url("/media/sample.webm")

    async def post(forwarded_for):
        return (
            await client.post(
                "/api/process", json={"url": url, "extract_audio": False}, headers={"X-Forwarded-For": forwarded_for}
            )
        ).status

    assert await post("198.51.100.1") == 202
    assert await post("198.51.100.1") == 429
    assert await post("198.51.100.2") == 202


async def test_cors_is_off_by_default(make_client):
    client = await make_client()
    response = await client.get("/api/health", headers={"Origin": APP_ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = await client.options(
        "/api/process", headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 405
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_cors_answers_listed_origins_only(make_client):
    client = await make_client(cors_origins=(APP_ORIGIN,), tokens=(TOKEN,))
    preflight = await client.options(
        "/api/process",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status == 204  # a preflight carries no token and needs none
    assert preflight.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    assert preflight.headers["Vary"] == "Origin"
    other = await client.options(
        "/api/process", headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}
    )
    # Not answered as a preflight: it goes the normal way (here: no token) and grants nothing.
    assert other.status == 401 and "Access-Control-Allow-Origin" not in other.headers
    refused = await client.get("/api/tasks", headers={"Origin": APP_ORIGIN})
    assert refused.status == 401  # the browser can read the error, and still needs a token
    assert refused.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    answered = await client.get("/api/tasks", headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {TOKEN}"})
    assert answered.status == 200
    assert answered.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Retry-After" in answered.headers["Access-Control-Expose-Headers"]


async def test_a_wildcard_origin_never_comes_with_credentials(make_client):
    client = await make_client(cors_origins=("*",))
    response = await client.get("/api/health", headers={"Origin": "https://anywhere.example.org"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Vary" not in response.headers
