"""Benchmark of the web page in headless Chromium (prints figures; not a test).

    .venv/bin/python bench/ui_bench.py

load      page load to interactive (the `tasks-rendered` mark: form built, first task page shown),
          median of 5, cold (browser cache off) and warm (ETag revalidation, 304s), and the bytes
          transferred for a cold load, with 500 finished tasks stored
memory    the page's JS heap and DOM node count with 50 and with 500 tasks listed (after a GC)
live      one throttled download running while 500 tasks are listed: DOM mutations of the task
          list (rows added or removed vs cells changed) and long tasks (> 50 ms) on the main thread

All traffic is to 127.0.0.1; the browser is Debian's chromium, driven by Selenium.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402
from service_bench import Service, fill_store  # noqa: E402

from tests.support.browser import start_chrome  # noqa: E402
from tests.support.mediaserver import MediaServer, generate_media  # noqa: E402

TASKS = 500
LOADS = 5
READY = "return performance.getEntriesByName('tasks-rendered')[0]?.startTime ?? null"
TRANSFER = """
const entries = [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")];
return entries.map((e) => ({name: e.name, transfer: e.transferSize, body: e.decodedBodySize}));
"""
OBSERVE = """
window.benchFigures = {rows: 0, cells: 0, longTasks: 0, longest: 0};
new MutationObserver((records) => {
  for (const record of records) {
    if (record.target.id === "task-list" && record.type === "childList") window.benchFigures.rows += 1;
    else window.benchFigures.cells += 1;
  }
}).observe(document.getElementById("task-list"), {childList: true, subtree: true, characterData: true,
                                                  attributes: true});
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    window.benchFigures.longTasks += 1;
    window.benchFigures.longest = Math.max(window.benchFigures.longest, entry.duration);
  }
}).observe({type: "longtask"});
"""


def ready_ms(driver) -> float:
    return WebDriverWait(driver, 30, poll_frequency=0.02).until(lambda d: d.execute_script(READY))


def load_page(driver, url: str) -> float:
    driver.get("about:blank")
    driver.get(url)
    return ready_ms(driver)


def heap(driver) -> dict:
    driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
    metrics = {m["name"]: m["value"] for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
    return {"heap_kb": metrics["JSHeapUsedSize"] / 1024, "nodes": int(metrics["Nodes"])}


def rows(driver) -> int:
    return driver.execute_script("return document.querySelectorAll('li.task').length")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="vda-ui-bench-"))
    data = work / "data"
    (data / "db").mkdir(parents=True)
    fill_store(data / "db" / "tasks.sqlite3", TASKS)
    media = MediaServer(generate_media(Path(tempfile.gettempdir()) / "vda-bench-media")).start()
    driver = start_chrome(work / "profile")
    try:
        with Service(data, VIDEO_API_RATE_PER_MINUTE="0") as service:
            page = service.base + "/ui/"
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Performance.enable", {})
            print(f"== load: {TASKS} tasks stored, 50 listed, median of {LOADS} ==")
            driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
            cold = [load_page(driver, page) for _ in range(LOADS)]
            entries = driver.execute_script(TRANSFER)
            driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": False})
            load_page(driver, page)  # fills the cache
            warm = [load_page(driver, page) for _ in range(LOADS)]
            print(f"interactive, cold cache: {statistics.median(cold):.0f} ms (all: {[round(v) for v in cold]})")
            print(f"interactive, warm cache: {statistics.median(warm):.0f} ms (all: {[round(v) for v in warm]})")
            own = [e for e in entries if "/ui/" in e["name"]]
            api = [e for e in entries if "/api/" in e["name"]]
            print(
                f"page and assets: {len(own)} files, {sum(e['transfer'] for e in own) / 1024:.1f} KiB transferred "
                f"({sum(e['body'] for e in own) / 1024:.1f} KiB uncompressed)"
            )
            print(
                f"API calls of the load: {', '.join(e['name'].split('/', 3)[3] for e in api)}: "
                f"{sum(e['transfer'] for e in api) / 1024:.1f} KiB"
            )

            print("== memory ==")
            print(f"50 tasks listed:  {heap(driver)}")
            Select(driver.find_element("id", "page-size")).select_by_value(str(TASKS))
            WebDriverWait(driver, 30).until(lambda d: rows(d) == TASKS)
            print(f"{TASKS} tasks listed: {heap(driver)}")

            print(f"== live: one download while {TASKS} tasks are listed ==")
            driver.execute_script(OBSERVE)
            started = time.monotonic()
            driver.find_element("id", "url").send_keys(media.url("/slow/noise.mp4?rate=400000&bench=ui"))
            driver.find_element("id", "extract_audio").click()
            driver.find_element("id", "submit-button").click()
            WebDriverWait(driver, 60, poll_frequency=0.1).until(
                lambda d: d.execute_script("return document.querySelector('li.task')?.dataset.status") == "completed"
            )
            figures = driver.execute_script("return window.benchFigures")
            print(
                f"download to completed: {time.monotonic() - started:.1f} s; list rows added/removed: "
                f"{figures['rows']} mutation records (the new task; a full re-render would be {TASKS}+ per event); "
                f"cell changes: {figures['cells']}"
            )
            print(
                f"long tasks (> 50 ms) on the main thread: {figures['longTasks']}, longest {figures['longest']:.0f} ms"
            )
    finally:
        driver.quit()
        media.stop()


if __name__ == "__main__":
    main()
