"""Headless Chromium from Debian's packages, driven by Selenium: nothing is downloaded."""

from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The Debian package of each, for the message when one is missing (.ci/run installs both).
PACKAGES = {CHROMIUM: "chromium", CHROMEDRIVER: "chromium-driver"}
ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1200,900",
)


def start_chrome(profile_dir: Path, download_dir: Path | None = None) -> webdriver.Chrome:
    """profile_dir: an empty folder, so no cache, sessionStorage or token comes from an earlier run."""
    missing = [package for binary, package in PACKAGES.items() if not Path(binary).exists()]
    if missing:
        raise RuntimeError(
            f"the browser tests need Debian package(s) {', '.join(missing)}: apt-get install {' '.join(missing)}"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile_dir}")
    # The console, and the network requests the page makes (tests read their headers).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    if download_dir is not None:
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
        )
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
