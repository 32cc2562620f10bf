"""The web page's server side: / negotiation, security headers, ETags, size budget, shipping."""

import functools
import importlib.util
import re

import pytest

from app.api import webpage
from tests.support import browser
from tests.support.helpers import REPO

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
PAGE_BUDGET_BYTES = 100 * 1024


@pytest.mark.parametrize(
    ("accept", "page"),
    [
        (None, False),
        ("*/*", False),  # curl
        ("application/json", False),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0, */*", False),
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("text/*, application/json;q=0.5", False),  # HTML only through text/*: not named, not a browser
    ],
)
async def test_browsers_are_sent_to_the_page_and_api_clients_keep_the_json(client, accept, page):
    headers = {"Accept": accept} if accept else {}
    response = await client.get("/", headers=headers, allow_redirects=False)
    assert "Accept" in response.headers.getall("Vary")
    if page:
        assert (response.status, response.headers["Location"]) == (303, "/ui/")
    else:
        assert response.status == 200
        assert (await response.json())["service"] == "video-download-api"


async def test_the_page_and_every_asset_carry_the_security_headers_and_an_etag(client):
    assert set(webpage.files()) >= {"index.html", "app.js", "style.css"}
    for name in webpage.files():
        path = webpage.PAGE_PATH if name == "index.html" else webpage.PAGE_PATH + name
        response = await client.get(path)
        assert response.status == 200, name
        body = await response.read()
        assert body == (webpage.STATIC_DIR / name).read_bytes()
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        again = await client.get(path, headers={"If-None-Match": response.headers["ETag"]})
        assert again.status == 304 and await again.read() == b""
        assert again.headers["Content-Security-Policy"] == csp
        changed = await client.get(path, headers={"If-None-Match": '"something-else"'})
        assert changed.status == 200
    assert (await client.get("/ui/app.js")).headers["Content-Type"] == "text/javascript; charset=utf-8"


async def test_the_api_pays_nothing_for_the_page_headers(client):
    response = await client.get("/api/tasks")
    assert "Content-Security-Policy" not in response.headers


def test_the_page_has_no_inline_script_or_style():
    html = (webpage.STATIC_DIR / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts)
    assert not re.search(r"\son\w+=", html) and " style=" not in html and "<style" not in html


def test_the_page_and_its_assets_stay_under_100_kb():
    total = sum(len(body) for body, _, _ in webpage.files().values())
    assert total < PAGE_BUDGET_BYTES, f"{total} bytes"


@pytest.mark.parametrize("path", ["/ui/nothing.js", "/ui/..%2Fweb.py", "/ui/%2e%2e/config.py", "/ui/../web.py"])
async def test_only_the_static_files_are_served(client, path):
    response = await client.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_the_page_itself_needs_no_token_and_ui_without_slash_redirects(make_client):
    client = await make_client(tokens=("page-test-token-0123456789",))
    assert (await client.get("/ui/")).status == 200
    assert (await client.get("/api/openapi.json")).status == 401
    response = await client.get("/ui", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (301, "/ui/")


def test_the_role_bundle_ships_the_static_files_but_no_tests(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "controller_artifacts", REPO / "roles" / "video_api" / "files" / "controller_artifacts.py"
    )
    artifacts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(artifacts)
    files = artifacts.bundle(REPO / "app", tmp_path / "app.tar")["files"]
    assert {f"api/static/{name}" for name in webpage.files()} <= set(files)
    assert "api/webpage.py" in files


def test_without_chromium_the_browser_tests_fail_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(browser, "PACKAGES", {str(tmp_path / "chromium"): "chromium"})
    with pytest.raises(RuntimeError, match=r"need Debian package\(s\) chromium: apt-get install chromium"):
        browser.start_chrome(tmp_path / "profile")


def _resolve(document: dict, node: dict) -> dict:
    while "$ref" in node:
        node = functools.reduce(lambda parent, key: parent[key], node["$ref"].split("/")[1:], document)
    return node


async def test_the_openapi_document_holds_what_the_page_reads(client):
    # app/static/form.js and tasks.js build the form and the list from these parts of the document.
    document = await (await client.get("/api/openapi.json")).json()
    body = document["paths"]["/api/process"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    fields = {name: _resolve(document, schema) for name, schema in _resolve(document, body)["properties"].items()}
    assert isinstance(fields["extract_audio"]["default"], bool) and isinstance(fields["keep_video"]["default"], bool)
    assert {"best", "720"} <= {str(quality) for quality in fields["video_quality"]["enum"]}
    assert fields["video_quality"]["default"] == "best"
    assert (
        "mp3" in fields["audio_format"]["enum"] and fields["audio_format"]["default"] in fields["audio_format"]["enum"]
    )
    bitrate = fields["audio_bitrate"]
    assert (bitrate["minimum"], bitrate["maximum"]) == (32, 512) and bitrate["default"] and bitrate["description"]
    parameters = {p["name"]: _resolve(document, p) for p in document["paths"]["/api/tasks"]["get"]["parameters"]}
    assert "completed" in _resolve(document, parameters["status"]["schema"])["enum"]
    assert _resolve(document, parameters["limit"]["schema"])["maximum"] >= 100
