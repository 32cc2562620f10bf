"""The web page in headless Chromium against the real service (a subprocess) and the local media server."""

import functools
import json
import signal
import time
from pathlib import Path

import pytest
import requests
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from app.tenants.tenants_file import Role, Tenant, token_digest, write
from tests.support.browser import start_chrome
from tests.support.helpers import REPO, ffprobe
from tests.support.mediaserver import BLOCKED_HOST, HOSTILE_TITLE, PLAYLIST_TITLE

pytestmark = pytest.mark.browser
ARTIFACTS = REPO / ".artifacts" / "ui"
TOKEN = "browser-test-token-0123456789abcdef"
COOKIE_SECRET = "browser-test-cookie-secret-0123456789"
COOKIE_VALUE = "cookie-value-that-must-stay-off-the-page-6c1f"
# Snapshot of one task row, read in one round trip.
ROW_STATE = """
const row = document.querySelector(`li.task[data-task-id="${arguments[0]}"]`);
return row && {status: row.dataset.status, progress: row.querySelector("progress").value,
  stream: row.dataset.stream || "", connects: Number(row.dataset.connects || 0),
  title: row.querySelector(".title").textContent, audio: row.querySelector(".audio").textContent};
"""


@pytest.fixture
def browser(request, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = start_chrome(tmp_path / "profile", downloads)
    driver.downloads = downloads
    yield driver
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{request.node.name}.png"))
    # Refused requests (401, 422, 429) are logged too; an exception in the page's code is not expected.
    uncaught = [entry["message"] for entry in driver.get_log("browser") if "Uncaught" in entry["message"]]
    driver.quit()
    assert not uncaught


def wait(driver, condition, timeout: float = 60.0, message: str = ""):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition, message)


def open_page(driver, service) -> None:
    driver.get(service.base + "/")  # the browser's Accept header: redirected to /ui/
    assert driver.current_url == service.base + "/ui/"
    # Ready: the task list is rendered, or the page asks for a token.
    ready = "return document.documentElement.dataset.ready || !document.getElementById('token-section').hidden"
    wait(driver, lambda d: d.execute_script(ready), 15)


def submit(driver, url: str, extract_audio: bool = True) -> str:
    """Fill in and send the form; returns the id of the task row that appears."""
    before = set(driver.execute_script("return [...document.querySelectorAll('li.task')].map(r => r.dataset.taskId)"))
    field = driver.find_element(By.ID, "url")
    field.clear()
    field.send_keys(url)
    checkbox = driver.find_element(By.ID, "extract_audio")
    if checkbox.is_selected() != extract_audio:
        checkbox.click()
    driver.find_element(By.ID, "submit-button").click()

    def new_row(d):
        ids = d.execute_script("return [...document.querySelectorAll('li.task')].map(r => r.dataset.taskId)")
        return next((task_id for task_id in ids if task_id not in before), None)

    return wait(driver, new_row, 15, "no task row appeared")


def watch(driver, task_id: str, until, timeout: float = 60.0) -> list[dict]:
    """Row states every 50 ms until until(state) holds; returns them all."""
    states = []
    deadline = time.monotonic() + timeout
    while True:
        state = driver.execute_script(ROW_STATE, task_id)
        states.append(state)
        if state and until(state):
            return states
        assert time.monotonic() < deadline, f"row still {state}"
        time.sleep(0.05)


def requests_sent(driver) -> list[tuple[str, dict]]:
    """(url, headers) of the requests the page sent since the last call (Chromium's performance log)."""
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request = message["params"]["request"]
            sent.append((request["url"], {k.lower(): v for k, v in request["headers"].items()}))
    return sent


def unfold_options(driver) -> None:
    """Opens the form's "More options"."""
    if not driver.find_element(By.ID, "more-options").get_attribute("open"):
        driver.find_element(By.CSS_SELECTOR, "#more-options summary").click()


def process_fields(service) -> dict[str, dict]:
    """The schemas of POST /api/process's fields, from the service's OpenAPI document ($ref followed)."""
    document = service.get("/api/openapi.json")

    def resolve(node: dict) -> dict:
        while "$ref" in node:
            node = functools.reduce(lambda parent, key: parent[key], node["$ref"].split("/")[1:], document)
        return node

    body = document["paths"]["/api/process"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {name: resolve(schema) for name, schema in resolve(body)["properties"].items()}


def saved_file(folder: Path, timeout: float = 30.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Chromium writes into a hidden temporary file, then a .crdownload, then renames.
        done = [path for path in folder.iterdir() if not path.name.startswith(".") and path.suffix != ".crdownload"]
        if done:
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"nothing saved in {folder}")


def test_progress_passes_through_intermediate_values_to_completed(browser, service_factory, media_server):
    service = service_factory()
    open_page(browser, service)
    task_id = submit(browser, media_server.url("/slow/noise.mp4?rate=400000&ui=progress"), extract_audio=False)
    states = watch(browser, task_id, lambda s: s["status"] == "completed")
    values = [s["progress"] for s in states if s]
    assert len({v for v in values if 0 < v < 100}) >= 2, values
    assert values == sorted(values) and values[-1] == 100
    assert any(s["stream"] == "live" for s in states if s)
    # The file size comes with the link once it is visible.
    wait(browser, lambda d: "MB)" in d.find_element(By.CSS_SELECTOR, f'[data-task-id="{task_id}"] .video').text, 10)


def test_the_audio_link_saves_the_file(browser, service_factory, media_server):
    service = service_factory()
    open_page(browser, service)
    task_id = submit(browser, media_server.url("/media/sample.mp4?ui=audio"))
    watch(browser, task_id, lambda s: s["status"] == "completed")
    browser.find_element(By.CSS_SELECTOR, f'[data-task-id="{task_id}"] .audio').click()
    path = saved_file(browser.downloads)
    assert path.suffix == ".mp3"
    assert [s["codec_name"] for s in ffprobe(path)["streams"]] == ["mp3"]


def test_cancel_from_the_page_marks_the_task_cancelled(browser, service_factory, media_server):
    service = service_factory()
    open_page(browser, service)
    task_id = submit(browser, media_server.url("/slow/noise.mp4?rate=100000&ui=cancel"))
    watch(browser, task_id, lambda s: s["status"] == "downloading" and s["progress"] > 0)
    browser.find_element(By.CSS_SELECTOR, f'[data-task-id="{task_id}"] .remove').click()
    wait(browser, expected_conditions.alert_is_present(), 5).accept()
    watch(browser, task_id, lambda s: s["status"] == "cancelled", timeout=15)
    assert service.get(f"/api/status/{task_id}")["status"] == "cancelled"
    count = browser.find_element(By.CSS_SELECTOR, "label[for=filter-cancelled] .count")
    wait(browser, lambda d: count.text == "1", 5, "the count of cancelled tasks was not updated")
    browser.find_element(By.CSS_SELECTOR, "label[for=filter-downloading]").click()  # the filter by status
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "li.task") and d.find_element(By.ID, "empty").text, 5)


def test_a_blocked_url_shows_the_apis_422_message_by_the_url_field(browser, service_factory, media_server):
    service = service_factory()
    open_page(browser, service)
    url = f"http://{BLOCKED_HOST}:{media_server.port}/media/sample.mp4"
    browser.find_element(By.ID, "url").send_keys(url)
    browser.find_element(By.ID, "submit-button").click()
    error = wait(browser, lambda d: d.find_element(By.ID, "url-error").text, 10)
    answer = requests.post(service.base + "/api/process", json={"url": url}, timeout=10)
    assert answer.status_code == 422
    assert error == answer.json()["error"]["message"]
    assert browser.find_element(By.ID, "url").get_attribute("aria-invalid") == "true"
    assert service.get("/api/tasks")["total"] == 0


def test_with_tokens_the_page_asks_once_refuses_a_wrong_one_and_streams_with_the_right_one(
    browser, service_factory, media_server
):
    service = service_factory(VIDEO_API_TOKENS=TOKEN)
    open_page(browser, service)
    assert browser.find_element(By.ID, "token-section").is_displayed()
    assert not browser.find_element(By.ID, "submit-section").is_displayed()
    token_field = browser.find_element(By.ID, "token")
    token_field.send_keys("wrong-token-0123456789abcdef\n")
    refused = wait(browser, lambda d: d.find_element(By.ID, "token-error").text.startswith("Token refused"), 10)
    assert refused and browser.find_element(By.ID, "token-section").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0
    token_field.clear()
    token_field.send_keys(TOKEN + "\n")
    wait(browser, lambda d: d.find_element(By.ID, "submit-section").is_displayed(), 10)
    assert not browser.find_element(By.ID, "token-section").is_displayed()
    assert TOKEN not in browser.current_url

    task_id = submit(browser, media_server.url("/slow/noise.mp4?rate=400000&ui=token"))
    states = watch(browser, task_id, lambda s: s["status"] == "completed")
    assert len({s["progress"] for s in states if s and 0 < s["progress"] < 100}) >= 2
    assert any(s["stream"] == "live" for s in states if s)  # the SSE stream opened with the token
    # A reload keeps the token of this tab: no second question.
    browser.refresh()
    wait(browser, lambda d: d.execute_script("return document.documentElement.dataset.ready"), 15)
    assert not browser.find_element(By.ID, "token-section").is_displayed()
    # The download goes through fetch with the header, into a Blob, and is saved.
    audio = browser.find_element(By.CSS_SELECTOR, f'[data-task-id="{task_id}"] .audio')
    wait(browser, lambda d: audio.is_displayed(), 10)
    audio.click()
    path = saved_file(browser.downloads)
    assert [s["codec_name"] for s in ffprobe(path)["streams"]] == ["mp3"]
    assert not [entry for entry in browser.get_log("browser") if TOKEN in entry["message"]]
    sent = requests_sent(browser)
    assert not [url for url, _ in sent if TOKEN in url]
    streams = [headers for url, headers in sent if url.endswith(f"/api/tasks/{task_id}/events")]
    assert streams and all(headers["authorization"] == f"Bearer {TOKEN}" for headers in streams)
    assert not [log for log in service.data_dir.parent.glob("service-*.log") if TOKEN in log.read_text()]


def test_a_hostile_title_renders_as_text(browser, service_factory, media_server):
    service = service_factory()
    open_page(browser, service)
    task_id = submit(browser, media_server.url("/page-hostile.html"), extract_audio=False)
    state = watch(browser, task_id, lambda s: s["status"] == "completed")[-1]
    title = service.get(f"/api/status/{task_id}")["video_info"]["title"]  # yt-dlp may add " (1)"
    assert HOSTILE_TITLE in title and state["title"] == title
    assert browser.execute_script("return document.querySelectorAll('#task-list img').length") == 0
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018


def test_a_cut_event_stream_resumes_and_keeps_the_final_status(browser, service_factory, media_server):
    service = service_factory()
    open_page(browser, service)
    task_id = submit(browser, media_server.url("/slow/noise.mp4?rate=300000&ui=cut"), extract_audio=False)
    watch(browser, task_id, lambda s: s["stream"] == "live" and s["progress"] >= 20)
    # Stopping the service ends every event stream server side; the task waits, queued, for the restart.
    service.stop(signal.SIGTERM)
    watch(browser, task_id, lambda s: s["stream"] == "reconnecting", timeout=10)
    service_factory(PORT=str(service.port))
    states = watch(browser, task_id, lambda s: s["status"] == "completed")
    assert states[-1]["connects"] >= 2, states[-1]
    assert any(s["stream"] == "live" and s["status"] != "completed" for s in states), "no live events after resuming"
    streams = [headers for url, headers in requests_sent(browser) if url.endswith(f"/api/tasks/{task_id}/events")]
    assert "last-event-id" not in streams[0] and all("last-event-id" in headers for headers in streams[1:]), streams


def test_a_rate_limited_submit_shows_the_429_message_and_waits_for_retry_after(browser, service_factory, media_server):
    service = service_factory(VIDEO_API_RATE_PER_MINUTE="1", VIDEO_API_RATE_BURST="1")
    open_page(browser, service)
    submit(browser, media_server.url("/media/sample.webm?ui=rate1"), extract_audio=False)
    field = browser.find_element(By.ID, "url")
    field.send_keys(media_server.url("/media/sample.webm?ui=rate2") + "\n")  # Enter submits, as with the button
    error = wait(browser, lambda d: d.find_element(By.ID, "form-error").text, 10)
    assert error.startswith("too many new tasks from 127.0.0.1; try again in ") and "you can try again in" in error
    assert not browser.find_element(By.ID, "submit-button").is_enabled()


def test_on_a_phone_sized_screen_nothing_scrolls_sideways_and_every_control_has_a_label(
    browser, service_factory, media_server
):
    service = service_factory()
    service.submit(media_server.url("/media/sample.webm?ui=phone"), extract_audio=False)
    browser.set_window_size(390, 844)
    open_page(browser, service)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "li.task .video:not([hidden])"), 30)
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    unlabelled = browser.execute_script("""
        const shown = [...document.querySelectorAll("input, select, button, a")].filter((c) => !c.closest("[hidden]"));
        return shown.filter((control) => {
          const label = control.id && document.querySelector(`label[for="${control.id}"]`);
          return !(label || control.getAttribute("aria-label") || control.textContent.trim());
        }).map((control) => control.outerHTML);
    """)
    assert unlabelled == []


# WCAG contrast ratio of an element's text against the card it sits on.
CONTRAST = """
const rgb = (css) => css.match(/[\\d.]+/g).slice(0, 3).map(Number);
const lum = (css) => {
  const [r, g, b] = rgb(css).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const card = getComputedStyle(document.querySelector("section")).backgroundColor;
return Object.fromEntries(arguments[0].map((selector) => {
  const element = document.querySelector(selector);
  const style = getComputedStyle(element);
  const back = style.backgroundColor.endsWith(", 0)") ? card : style.backgroundColor;
  const [a, b] = [lum(style.color), lum(back)].sort((x, y) => y - x);
  return [selector, Math.round(((a + 0.05) / (b + 0.05)) * 10) / 10];
}));
"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_page_is_readable_in_the_light_and_the_dark_system_theme(browser, service_factory, media_server, scheme):
    service = service_factory()
    service.submit(media_server.url("/media/sample.webm?ui=theme"), extract_audio=False)
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
    )
    open_page(browser, service)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "li.task .video:not([hidden])"), 30)
    selectors = [
        "h1",
        "label",
        "#url",
        ".hint",
        "#submit-button",
        "li.task .title",
        "li.task .status",
        ".meta",
        ".video",
    ]
    ratios = browser.execute_script(CONTRAST, selectors)
    assert all(ratio >= 4.5 for ratio in ratios.values()), ratios  # WCAG AA for normal text
    dark = browser.execute_script("return matchMedia('(prefers-color-scheme: dark)').matches")
    assert dark == (scheme == "dark")


def test_the_event_stream_reader_follows_the_sse_format(browser, service_factory):
    # The page's own parser (stream.js), fed chunks split at awkward places.
    service = service_factory()
    open_page(browser, service)
    chunks = [
        ": comment\r\nretry: 1500\r\nid: b-1\r",
        '\nevent: status\r\ndata: {"a":\r\ndata:1}\r\n\r',
        "\n",
        "data:no space\rid\r\r",
        "data: last\n\ndata: never dispatched",
    ]
    events, retries = browser.execute_async_script(
        """
        const [chunks, done] = arguments;
        import("./stream.js").then(async ({ parse }) => {
          const encoder = new TextEncoder();
          const body = new ReadableStream({
            start(controller) {
              for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
              controller.close();
            },
          });
          const events = [];
          const retries = [];
          for await (const event of parse(body, (ms) => retries.push(ms))) events.push(event);
          done([events, retries]);
        });
        """,
        chunks,
    )
    assert retries == [1500]
    assert events == [
        {"id": "b-1", "event": "status", "data": '{"a":\n1}'},
        {"id": "", "event": "message", "data": "no space"},
        {"id": "", "event": "message", "data": "last"},
    ]


def test_the_download_options_are_offered_with_the_schemas_choices_and_defaults(browser, service_factory):
    service = service_factory()
    fields = process_fields(service)
    open_page(browser, service)
    unfold_options(browser)
    for name in ("embed_subtitles", "thumbnail", "embed_metadata", "embed_chapters", "reuse"):
        assert browser.find_element(By.ID, name).is_selected() == fields[name]["default"], name
        assert browser.find_element(By.ID, f"{name}-hint").text == fields[name]["description"], name
    container = browser.find_element(By.ID, "container")
    options = container.find_elements(By.TAG_NAME, "option")
    assert [option.get_attribute("value") for option in options] == fields["container"]["enum"]
    assert container.get_attribute("value") == fields["container"]["default"]
    subtitles = browser.find_element(By.ID, "subtitles")
    assert subtitles.get_attribute("value") == ""
    cookies = browser.find_element(By.ID, "cookies")
    assert (cookies.get_attribute("type"), cookies.get_attribute("accept")) == ("file", ".txt,text/plain")
    assert browser.find_element(By.ID, "cookies-hint").text == fields["cookies"]["description"]
    max_items = browser.find_element(By.ID, "max_items")
    schema = next(s for s in fields["max_items"]["anyOf"] if "maximum" in s)
    assert (max_items.get_attribute("min"), max_items.get_attribute("max")) == tuple(
        str(schema[key]) for key in ("minimum", "maximum")
    )
    for name in ("playlist_items", "max_items"):
        assert browser.find_element(By.ID, f"{name}-hint").text == fields[name]["description"], name
    for name in ("subtitles", "container", "cookies", "reuse", "playlist_items", "max_items"):
        described = browser.find_element(By.ID, name).get_attribute("aria-describedby").split()
        assert f"{name}-error" in described
        assert browser.find_element(By.ID, f"{name}-error").get_attribute("role") == "alert"
    # Embedding needs subtitles and the video; the container needs the video.
    embed = browser.find_element(By.ID, "embed_subtitles")
    assert container.is_enabled() and not embed.is_enabled()
    subtitles.send_keys("en")
    assert embed.is_enabled()
    browser.find_element(By.ID, "keep_video").click()
    assert not container.is_enabled() and not embed.is_enabled()
    browser.find_element(By.ID, "keep_video").click()
    assert container.is_enabled() and embed.is_enabled()


def test_subtitles_thumbnail_and_a_cookies_file_are_sent_and_the_cookies_never_shown(
    browser, service_factory, media_server, tmp_path
):
    service = service_factory(VIDEO_API_COOKIE_SECRET=COOKIE_SECRET)
    cookies_file = tmp_path / "cookies.txt"
    cookies_file.write_text(f"# Netscape HTTP Cookie File\n.127.0.0.1\tTRUE\t/\tFALSE\t0\tsession\t{COOKIE_VALUE}\n")
    open_page(browser, service)
    unfold_options(browser)
    browser.find_element(By.ID, "subtitles").send_keys("en")
    browser.find_element(By.ID, "thumbnail").click()
    browser.find_element(By.ID, "cookies").send_keys(str(cookies_file))
    task_id = submit(browser, media_server.url("/media/sample.webm?ui=options"), extract_audio=False)
    options = service.get(f"/api/status/{task_id}")["options"]
    assert (options["subtitles"], options["thumbnail"], options["cookies"]) == (["en"], True, True)
    assert (options["embed_metadata"], options["container"]) == (False, "any")  # defaults, not sent
    wait(browser, lambda d: d.find_element(By.ID, "form-status").text == "task queued", 5)
    assert browser.execute_script("return document.getElementById('cookies').files.length") == 0
    assert COOKIE_VALUE not in browser.page_source
    assert browser.find_element(By.ID, "subtitles").get_attribute("value") == "en"  # options stay for the next one


def test_a_bad_cookies_file_shows_the_apis_message_by_the_cookies_field(browser, service_factory, tmp_path):
    service = service_factory(VIDEO_API_COOKIE_SECRET=COOKIE_SECRET)
    cookies_file = tmp_path / "cookies.txt"
    cookies_file.write_text("hello")
    open_page(browser, service)
    browser.find_element(By.ID, "url").send_keys("https://example.com/video")
    unfold_options(browser)
    browser.find_element(By.ID, "cookies").send_keys(str(cookies_file))
    browser.find_element(By.CSS_SELECTOR, "#more-options summary").click()  # folded again: the error unfolds it
    browser.find_element(By.ID, "submit-button").click()
    error = wait(browser, lambda d: d.find_element(By.ID, "cookies-error").text, 10)
    assert browser.switch_to.active_element == browser.find_element(By.ID, "cookies")
    answer = requests.post(
        service.base + "/api/process", json={"url": "https://example.com/video", "cookies": "hello"}, timeout=10
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "invalid_cookies")
    assert error == answer.json()["error"]["message"]
    assert browser.find_element(By.ID, "cookies").get_attribute("aria-invalid") == "true"
    assert browser.find_element(By.ID, "form-error").text == browser.find_element(By.ID, "url-error").text == ""
    assert service.get("/api/tasks")["total"] == 0


def test_reuse_answers_the_finished_task_and_the_page_shows_the_apis_message(browser, service_factory, media_server):
    service = service_factory()
    url = media_server.url("/media/sample.webm?ui=reuse")
    task_id = service.submit(url, extract_audio=False)
    service.wait(task_id, lambda body: body["status"] == "completed")
    open_page(browser, service)
    unfold_options(browser)
    browser.find_element(By.ID, "reuse").click()
    browser.find_element(By.ID, "extract_audio").click()
    browser.find_element(By.ID, "url").send_keys(url + "\n")
    status = wait(browser, lambda d: d.find_element(By.ID, "form-status").text, 10)
    answer = requests.post(
        service.base + "/api/process", json={"url": url, "extract_audio": False, "reuse": True}, timeout=10
    )
    assert (answer.status_code, answer.json()["task_id"]) == (200, task_id)
    assert status == answer.json()["message"]
    assert service.get("/api/tasks")["total"] == 1


def test_a_row_links_the_subtitles_and_the_thumbnail_with_their_sizes(browser, service_factory, media_server):
    service = service_factory()
    task_id = service.submit(media_server.url("/media/page-subtitles.html"), subtitles="all", thumbnail=True)
    open_page(browser, service)
    extras = f'[data-task-id="{task_id}"] .extras a'
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, extras)) == 3, 30, "no subtitle and thumbnail links")
    labels = [link.text for link in browser.find_elements(By.CSS_SELECTOR, extras)]
    assert [label.split(" (")[0] for label in labels] == ["Subtitles de", "Subtitles en", "Thumbnail"], labels
    assert all(label.endswith(" B)") or label.endswith(" KB)") for label in labels), labels
    browser.find_elements(By.CSS_SELECTOR, extras)[1].click()
    assert "Hello" in saved_file(browser.downloads).read_text()


def test_a_playlist_is_one_row_that_opens_onto_its_items_and_cancels_them_all(browser, service_factory, media_server):
    service = service_factory()
    open_page(browser, service)
    unfold_options(browser)
    browser.find_element(By.ID, "playlist_items").send_keys("9-x")
    browser.find_element(By.ID, "url").send_keys(media_server.url("/playlist/3.html"))
    browser.find_element(By.ID, "submit-button").click()
    wait(browser, lambda d: d.find_element(By.ID, "playlist_items-error").text.startswith("playlist_items must"))
    assert browser.find_element(By.ID, "playlist_items").get_attribute("aria-invalid") == "true"
    browser.find_element(By.ID, "playlist_items").clear()
    browser.find_element(By.ID, "playlist_items").send_keys("2-4")
    browser.find_element(By.ID, "max_items").send_keys("2")
    task_id = submit(browser, media_server.url("/playlist/4.html"), extract_audio=False)
    watch(browser, task_id, lambda state: state["status"] == "completed")
    row = browser.find_element(By.CSS_SELECTOR, f'li.task[data-task-id="{task_id}"]')
    assert row.find_element(By.CSS_SELECTOR, ".title").text == PLAYLIST_TITLE
    assert row.find_element(By.CSS_SELECTOR, ".items summary").text == "2 items (of 4 in the playlist)"
    row.find_element(By.CSS_SELECTOR, ".items summary").click()
    wait(browser, lambda d: len(row.find_elements(By.CSS_SELECTOR, "li.item")) == 2)
    items = row.find_elements(By.CSS_SELECTOR, "li.item")
    assert [item.get_attribute("data-status") for item in items] == ["completed", "completed"]
    # Titled as the playlist names them until their download tells (here: the file's name).
    assert [item.find_element(By.CSS_SELECTOR, ".item-title").text for item in items] == ["sample", "sample"]
    items[0].find_element(By.CSS_SELECTOR, "a.video").click()
    assert ffprobe(saved_file(browser.downloads))["streams"]
    # Only the playlist is a row of the list; its items are inside it.
    assert browser.execute_script("return document.querySelectorAll('#task-list > li.task').length") == 1

    # A slow playlist, cancelled from its row while it downloads: every item ends cancelled.
    for name in ("playlist_items", "max_items"):  # the form keeps them: every item this time
        browser.find_element(By.ID, name).clear()
    slow = submit(browser, media_server.url("/playlist/3.html?src=/slow/noise.mp4"), extract_audio=False)
    row = browser.find_element(By.CSS_SELECTOR, f'li.task[data-task-id="{slow}"]')
    wait(browser, lambda d: not row.find_element(By.CSS_SELECTOR, ".items").get_attribute("hidden"))
    row.find_element(By.CSS_SELECTOR, ".items summary").click()
    wait(browser, lambda d: row.find_elements(By.CSS_SELECTOR, 'li.item[data-status="downloading"]'))
    titles = [item.text for item in row.find_elements(By.CSS_SELECTOR, 'li.item[data-status="queued"] .item-title')]
    assert titles and all(title.startswith(f"{PLAYLIST_TITLE} (") for title in titles), titles
    row.find_element(By.CSS_SELECTOR, ".remove").click()
    alert = browser.switch_to.alert
    assert "all its items" in alert.text
    alert.accept()
    watch(browser, slow, lambda state: state["status"] == "cancelled")
    wait(
        browser,
        lambda d: (
            {i.get_attribute("data-status") for i in row.find_elements(By.CSS_SELECTOR, "li.item")} == {"cancelled"}
        ),
    )


def test_the_page_says_who_is_signed_in_shows_an_admin_whose_tasks_and_a_user_only_its_own(
    browser, service_factory, media_server, tmp_path
):
    alice_token, ops_token = "alice-browser-token-0123456789ab", "ops-browser-token-0123456789abcd"
    write(
        tmp_path / "tenants.toml",
        {
            "alice": Tenant("alice", Role.USER, token_digest(alice_token)),
            "ops": Tenant("ops", Role.ADMIN, token_digest(ops_token)),
        },
    )
    service = service_factory(VIDEO_API_TENANTS_FILE=str(tmp_path / "tenants.toml"))
    ops_task = service.http.post(
        service.base + "/api/process",
        json={"url": media_server.url("/media/sample.webm?ui=ops"), "extract_audio": False},
        headers={"Authorization": f"Bearer {ops_token}"},
        timeout=10,
    ).json()["task_id"]

    def sign_in(token: str) -> None:
        open_page(browser, service)
        browser.find_element(By.ID, "token").send_keys(token + "\n")
        wait(browser, lambda d: d.execute_script("return document.documentElement.dataset.ready"), 15)

    sign_in(alice_token)
    assert browser.find_element(By.ID, "who").text == "Signed in as alice (user)"
    alice_task = submit(browser, media_server.url("/media/sample.webm?ui=alice"), extract_audio=False)
    rows = [row.get_attribute("data-task-id") for row in browser.find_elements(By.CSS_SELECTOR, "#task-list > .task")]
    assert rows == [alice_task]
    assert browser.find_element(By.CSS_SELECTOR, f'[data-task-id="{alice_task}"] .owner').text == ""
    browser.find_element(By.ID, "sign-out").click()
    wait(browser, lambda d: d.find_element(By.ID, "token-section").is_displayed(), 15)
    assert browser.execute_script("return sessionStorage.length") == 0

    sign_in(ops_token)
    assert browser.find_element(By.ID, "who").text == "Signed in as ops (admin)"
    owner = f'[data-task-id="{alice_task}"] .owner'
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, owner), 10)
    assert browser.find_element(By.CSS_SELECTOR, owner).text == "by alice"
    assert browser.find_element(By.CSS_SELECTOR, f'[data-task-id="{ops_task}"] .owner').text == ""
