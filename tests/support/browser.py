"""Headless Chromium driven by its chromedriver (selenium), for the console's tests.

``chromium_session(folder)`` yields a WebDriver on Debian's ``chromium``
through Debian's ``chromedriver``: no proxy, its own profile, ``HOME`` and
downloads (``folder/downloads``) in ``folder``, so nothing of the user's profile is read or written and no
request leaves the machine. ``BROWSER_MISSING`` is the reason to skip
where either is not installed (``make system-deps`` installs both).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["BROWSER_MISSING", "chromium_session", "log_in", "screenshot_on_failure", "wait_for", "wait_for_text"]


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    absent = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if absent:
        return f"not installed: {', '.join(absent)} (apt-get install chromium chromium-driver)"
    return None


#: why the browser tests cannot run here, or None when they can
BROWSER_MISSING = _missing()


@contextlib.contextmanager
def chromium_session(folder: Path, *, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver, quit on leaving (its chromedriver stopped by selenium, by PID)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    folder.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-proxy-server",
        "--no-first-run",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        f"--user-data-dir={folder / 'profile'}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    # what the page saves (a simulator report) lands in the folder, without asking
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(folder / "downloads"), "download.prompt_for_download": False}
    )
    # chromedriver and the browser get a home of their own and no session bus
    env = {**os.environ, "HOME": str(folder), "DBUS_SESSION_BUS_ADDRESS": "disabled:"}
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(proxy, None)
    service = Service(
        executable_path=str(shutil.which("chromedriver")), env=env, log_output=str(folder / "chromedriver.log")
    )
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def screenshot_on_failure(driver: Any, path: Path) -> Iterator[None]:
    """Save what the browser shows as a PNG at ``path`` when the block fails, then fail as it did."""
    try:
        yield
    except BaseException:
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
        raise


def wait_for(driver: Any, css: str, *, within_s: float = 20.0) -> Any:
    """The first element ``css`` selects once it is shown (the page draws after its API calls answer)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, within_s).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
    )


def wait_for_text(driver: Any, css: str, text: str, *, within_s: float = 20.0) -> Any:
    """The first element ``css`` selects once its text holds ``text`` (a view drawn anew, not the one before)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, within_s).until(
        expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
    )
    return driver.find_element(By.CSS_SELECTOR, css)


def log_in(driver: Any, url: str, token: str) -> None:
    """Open the console at ``url`` and log in with ``token`` through its form."""
    driver.get(f"{url}/console/")
    field = wait_for(driver, "#token")
    field.send_keys(token)
    driver.find_element("css selector", "#login-form button").click()
