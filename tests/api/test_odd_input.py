"""Odd input on every parameter: Unicode digits, huge numbers, deep nesting, bad Range and
Last-Event-ID headers. Each is a clear 4xx JSON error (or, for headers RFC 9110 says to ignore,
the normal answer), never a 500, and nothing is stored."""

import json
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.test_api import assert_json_error
from tests.support.helpers import submit, wait_status
from tests.support.mediaserver import BLOCKED_HOST
from tests.tasks.test_events import read_events

# Each passes str.isdigit() or int() but is no ASCII number, or is one far too long.
UNICODE_DIGITS = ["²", "¹²⁸", "①", "١٢٨", "\uff11\uff12\uff18"]  # the last: full-width 128
ODD_NUMBERS = [*UNICODE_DIGITS, "9" * 5000, "1_28", "+128", "-1", "0x80", "1e3", "12 8", ""]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"[" * 50_000, 400, "invalid_json"),
        (b'{"a":' * 12_000, 400, "invalid_json"),
        # Valid JSON, 5,000 deep where a string belongs: refused at its first bracket.
        (b'{"url": ' + b"[" * 5000 + b"]" * 5000 + b"}", 422, "invalid_url"),
    ],
)
async def test_deeply_nested_bodies_are_4xx(client, body, status, code):
    response = await client.post("/api/process", data=body, headers={"Content-Type": "application/json"})
    assert_json_error(response.status, await response.json(), status, code)
    assert (await (await client.get("/api/tasks")).json())["total"] == 0


@pytest.mark.parametrize("bitrate", ODD_NUMBERS)
async def test_odd_bitrates_are_422(client, bitrate):
    response = await client.post("/api/process", json={"url": "http://127.0.0.1/x", "audio_bitrate": bitrate})
    assert_json_error(response.status, await response.json(), 422, "invalid_option")
    assert (await (await client.get("/api/tasks")).json())["total"] == 0


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("subtitles", "some", "invalid_option"),
        ("subtitles", ["en", 1], "invalid_option"),
        ("subtitles", ["e\u0301n"], "invalid_option"),
        ("subtitles", ["en"] * 21, "invalid_option"),
        ("subtitles", [["en"]], "invalid_option"),
        ("embed_subtitles", "true", "invalid_option"),
        ("thumbnail", 1, "invalid_option"),
        ("embed_metadata", None, "invalid_option"),
        ("embed_chapters", "yes", "invalid_option"),
        ("container", "avi", "invalid_option"),
        ("container", "MKV", "invalid_option"),
        ("reuse", "1", "invalid_option"),
        ("playlist_items", "", "invalid_option"),
        ("playlist_items", "1-", "invalid_option"),
        ("playlist_items", "one", "invalid_option"),
        ("playlist_items", "\u0661-3", "invalid_option"),
        ("playlist_items", "1,,2", "invalid_option"),
        ("playlist_items", 5, "invalid_option"),
        ("playlist_items", "1," * 100 + "1", "invalid_option"),
        ("max_items", 0, "invalid_option"),
        ("max_items", -1, "invalid_option"),
        ("max_items", "5", "invalid_option"),
        ("max_items", 5.5, "invalid_option"),
        ("max_items", True, "invalid_option"),
        ("max_items", 10_001, "invalid_option"),
        ("max_items", 101, "invalid_option"),  # above VIDEO_API_PLAYLIST_MAX_ITEMS (100)
        ("cookies", "", "invalid_cookies"),
        ("cookies", ["a"], "invalid_cookies"),
        ("cookies", "# only a comment\n", "invalid_cookies"),
        ("cookies", "127.0.0.1\tFALSE\t/\tFALSE\t\u00b9\tname\tvalue", "invalid_cookies"),
        ("cookies", "127.0.0.1\tMAYBE\t/\tFALSE\t0\tname\tvalue", "invalid_cookies"),
        ("cookies", "127.0.0.1\tFALSE\t/\tFALSE\t0\tname\tva\x00lue", "invalid_cookies"),
    ],
)
async def test_odd_download_options_are_422_and_store_nothing(make_client, field, value, code):
    client = await make_client(cookie_secret="cookie-secret-for-tests-0123456789")
    response = await client.post("/api/process", json={"url": "http://127.0.0.1/x", field: value})
    assert_json_error(response.status, await response.json(), 422, code)
    assert (await (await client.get("/api/tasks")).json())["total"] == 0


async def test_only_cookies_may_make_a_body_larger_than_64_kib(make_client):
    client = await make_client(cookie_secret="cookie-secret-for-tests-0123456789")
    line = "127.0.0.1\tFALSE\t/\tFALSE\t0\tname\t" + "v" * 1000 + "\n"
    big_cookies = line * 400  # 400 KiB
    response = await client.post("/api/process", json={"url": "http://127.0.0.1:9/x", "cookies": big_cookies})
    assert response.status == 202, await response.text()
    padded = {"url": "http://127.0.0.1:9/y", "cookies": line, "callback_url": "http://127.0.0.1/" + "a" * 70_000}
    response = await client.post("/api/process", json=padded)
    assert_json_error(response.status, await response.json(), 413, "request_entity_too_large")
    response = await client.post("/api/process", json={"url": "http://127.0.0.1:9/z", "cookies": line * 600})
    assert_json_error(response.status, await response.json(), 422, "invalid_cookies")
    assert (await (await client.get("/api/tasks")).json())["total"] == 1


@pytest.mark.parametrize("name", ["limit", "offset", "before"])
@pytest.mark.parametrize("value", ODD_NUMBERS)
async def test_odd_list_parameters_are_422(client, name, value):
    response = await client.get("/api/tasks", params={name: value})
    assert_json_error(response.status, await response.json(), 422, "invalid_parameter")


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/status/"), ("DELETE", "/api/tasks/"), ("GET", "/api/download/")]
)
@pytest.mark.parametrize("suffix", ["\n", "²", "%0a", "%00"])
async def test_ids_with_a_trailing_oddity_are_404(client, method, path, suffix):
    response = await client.request(method, path + "0123456789abcdef0123456789abcdef" + suffix)
    assert response.status == 404, await response.text()


async def test_an_empty_status_filter_is_422_as_the_schema_says(client):
    response = await client.get("/api/tasks?status=")
    assert_json_error(response.status, await response.json(), 422, "invalid_parameter")


@pytest.mark.parametrize("parent_id", ["", "xyz", "0123456789ABCDEF0123456789ABCDEF", "0" * 31 + "²", "0" * 33])
async def test_a_bad_parent_id_filter_is_422(client, parent_id):
    response = await client.get("/api/tasks", params={"parent_id": parent_id})
    body = await response.json()
    assert_json_error(response.status, body, 422, "invalid_parameter")
    assert "parent_id must be a task id" in body["error"]["message"]


@pytest.mark.parametrize("seq", ["²", "①", "9" * 5000, "", "-1", "1-2"])
async def test_a_bad_last_event_id_is_treated_as_absent(client, media_server, seq):
    url = media_server.url(f"/media/sample.webm?leid={len(seq)}{seq[:1]}")
    task_id = await submit(client, url, extract_audio=False)
    await wait_status(client, task_id)
    probe = await client.get(f"/api/tasks/{task_id}/events")
    boot = (await read_events(probe))[0]["id"].split("-")[0]
    response = await client.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": f"{boot}-{seq}"})
    raw = await response.read()
    assert response.status == 200 and b"HTTP/1.1" not in raw and b"internal" not in raw.lower()
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert [event["status"] for event in events] == ["completed"]  # the snapshot, then the end


async def test_keyset_pages_walk_every_task_once_and_offset_still_works(make_client, media_server):
    client = await make_client(max_concurrent=1)
    ids = [
        await submit(client, media_server.url(f"/media/sample.webm?keyset={n}"), extract_audio=False) for n in range(5)
    ]
    for task_id in ids:
        await wait_status(client, task_id)
    seen, link = [], "/api/tasks?limit=2"
    while link:
        page = await (await client.get(link)).json()
        assert page["total"] == 5 and len(page["tasks"]) <= 2
        seen += [task["task_id"] for task in page["tasks"]]
        link = page["next"]
    assert seen == ids[::-1]
    by_offset = await (await client.get("/api/tasks?limit=2&offset=2")).json()
    assert [task["task_id"] for task in by_offset["tasks"]] == ids[::-1][2:4]
    filtered = await (await client.get("/api/tasks?limit=1&status=completed")).json()
    assert "status=completed" in filtered["next"]
    response = await client.get(filtered["next"] + "&offset=1")
    assert_json_error(response.status, await response.json(), 422, "invalid_parameter")


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("bytes=-0", 416),
        ("bytes=999999999-", 416),
        ("bytes=abc", 200),
        ("items=0-1", 200),
        ("bytes=0-1,4-5", 200),
        ("bytes=5-2", 200),
        ("bytes=²-", 200),
        ("bytes=" + "9" * 5000 + "-", 200),
        ("bytes=0-9", 206),
    ],
)
async def test_ranges_unsatisfiable_are_416_json_and_unparseable_are_ignored(client, media_server, header, status):
    done = await wait_status(client, await submit(client, media_server.url("/media/sample.mp4?range=1")))
    whole = await (await client.get(done["files"]["video"])).read()
    response = await client.get(done["files"]["video"], headers={"Range": header})
    assert response.status == status, header
    if status == 416:
        assert_json_error(response.status, await response.json(), 416, "range_not_satisfiable")
        assert response.headers["Content-Range"] == f"bytes */{len(whole)}"
    elif status == 200:
        assert await response.read() == whole
    else:
        assert await response.read() == whole[:10]


# Through a real service process: generated values reach it exactly as a client sends them.
unicode_numbers = st.one_of(
    st.text(st.characters(whitelist_categories=("Nd", "No", "Nl")), min_size=1, max_size=6),
    st.integers(min_value=10**18, max_value=10**400).map(str),
    st.from_regex(r"[0-9]{1,5}[^0-9]", fullmatch=True),
)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from tests.support.helpers import ServiceProcess

    process = ServiceProcess(tmp_path_factory.mktemp("odd") / "data", VIDEO_API_RATE_PER_MINUTE="0").start()
    yield process
    process.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=unicode_numbers, field=st.sampled_from(["limit", "offset", "before", "audio_bitrate", "video_quality"]))
def test_generated_odd_numbers_never_reach_a_500(service, value, field):
    if field in ("audio_bitrate", "video_quality"):
        response = requests.post(
            service.base + "/api/process", timeout=10, json={"url": f"http://{BLOCKED_HOST}/x.mp4", field: value}
        )
    else:
        response = requests.get(service.base + "/api/tasks", params={field: value}, timeout=10)
    assert response.status_code in (200, 422), (field, value, response.text)
    assert set(response.json()) == ({"error"} if response.status_code == 422 else set(response.json()))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=json_values,
    field=st.sampled_from(
        [
            "subtitles",
            "embed_subtitles",
            "thumbnail",
            "embed_metadata",
            "embed_chapters",
            "container",
            "reuse",
            "cookies",
            "playlist_items",
            "max_items",
        ]
    ),
)
def test_generated_download_options_never_reach_a_500(service, value, field):
    response = requests.post(
        service.base + "/api/process", timeout=10, json={"url": f"http://{BLOCKED_HOST}/x.mp4", field: value}
    )
    assert response.status_code in (202, 422), (field, value, response.text)


def test_the_service_logged_no_unhandled_error(service):
    service.log.flush()
    assert "unhandled error" not in Path(service.log.name).read_text()
