"""The page in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium.

A server on loopback serves two tiny exports (`--compare_export_dir`); the test types a prefix,
picks an item with the keyboard, checks the neighbour list against the Python API, follows a
neighbour, opens the compare view, submits the new-item form and takes a screenshot. `make test`
installs the browser when it can (scripts/install_browser.sh); elsewhere the test skips and says
how to install it.
"""

import importlib.util
import os
import shutil

import pytest

from ssl_retrieval import testing
from ssl_retrieval.serving import api

INSTALL = (
    "apt-get install -y chromium chromium-driver (as root; `make test` runs "
    "scripts/install_browser.sh, which does it) and pip install -e '.[test]' (selenium)"
)
RECORD = {"brand": "brand3", "category": "cat1", "tags": ["tag3_1", "tag3_2"], "price": 9.5}
WAIT_SECONDS = 60


def browser_paths():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [
        name
        for name, found in (
            ("chromium", chromium),
            ("chromedriver", driver),
            ("selenium", importlib.util.find_spec("selenium")),
        )
        if not found
    ]
    if missing:
        pytest.skip(f"browser test needs {', '.join(missing)}: {INSTALL}")
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    """(chromium, chromedriver) paths, or a skip naming the install command (before any export)."""
    return browser_paths()


@pytest.fixture(scope="module")
def server(browser, two_exports):
    compare = f"--compare_export_dir={two_exports['compare']}"
    with testing.running_server(two_exports["served"], compare) as base:
        yield base


@pytest.fixture(scope="module")
def driver(browser):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations land here
    browser = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        yield browser
    finally:
        browser.quit()


def rows(browser, model="served"):
    from selenium.webdriver.common.by import By

    found = browser.find_elements(By.CSS_SELECTOR, f'section[data-model="{model}"] tbody tr')
    return [
        (r.get_attribute("data-id"), float(r.get_attribute("data-score")), r.get_attribute("class"))
        for r in found
    ]


def wait_for_query(browser, title):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda b: b.find_element(By.ID, "query-title").text == title and len(rows(b)) > 0
    )


def assert_same(listed, expected):
    assert [i for i, _, _ in listed] == [n.id for n in expected]
    for (_, got, _), want in zip(listed, expected, strict=True):
        assert got == pytest.approx(want.score, abs=1e-6)


@pytest.mark.slow
def test_page_in_a_real_browser(server, driver, two_exports, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    served = api.load(two_exports["served"])
    compare = api.load(two_exports["compare"])
    wait = WebDriverWait(driver, WAIT_SECONDS)

    # What is served, and prefix completion picked with the keyboard alone.
    driver.get(server + "/")
    wait.until(lambda b: "version 30" in b.find_element(By.ID, "served").text)
    assert "240 items" in driver.find_element(By.ID, "served").text
    box = driver.find_element(By.ID, "item")
    box.send_keys("item0001")
    wait.until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#completions li[role=option]")) == 10
    )
    completions = driver.find_elements(By.CSS_SELECTOR, "#completions li[role=option]")
    assert [li.text for li in completions] == [f"item0001{i}" for i in range(10)]
    box.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ENTER)
    wait_for_query(driver, "item00011")
    assert driver.current_url.endswith("/?item=item00011&k=10")
    listed = rows(driver)
    assert_same(listed, served.similar(["item00011"], k=10)[0])
    assert driver.find_elements(By.CSS_SELECTOR, 'section[data-model="served"] .pop')
    assert "category:" in driver.find_element(By.CSS_SELECTOR, "#results tbody").text

    # Clicking a neighbour makes it the query; Enter on a link does the same; Back returns.
    third = listed[2][0]
    driver.find_element(By.CSS_SELECTOR, f'#results a[data-id="{third}"]').click()
    wait_for_query(driver, third)
    assert driver.current_url.endswith(f"/?item={third}&k=10")
    assert driver.switch_to.active_element.get_attribute("id") == "query-title"
    assert_same(rows(driver), served.similar([third], k=10)[0])
    first = rows(driver)[0][0]
    driver.find_element(By.CSS_SELECTOR, f'#results a[data-id="{first}"]').send_keys(Keys.ENTER)
    wait_for_query(driver, first)
    driver.back()
    wait_for_query(driver, third)

    # Bad input: the API's message, not a blank page.
    driver.get(server + "/?item=nope&k=5")
    wait.until(lambda b: b.find_element(By.ID, "error").text)
    assert driver.find_element(By.ID, "error").text == "unknown item id(s): 'nope'"
    assert rows(driver) == []

    # Ids no URL path carries as they are (issue 35, item 9): a browser rewrites "." and "..",
    # and the server refuses a request head over 16 KiB. The page sends them in a body.
    for odd in (".", "..", "x" * 20_000):
        driver.get(server + "/")
        wait.until(lambda b: "version 30" in b.find_element(By.ID, "served").text)
        driver.execute_script("document.getElementById('item').value = arguments[0]", odd)
        driver.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
        wait.until(lambda b: b.find_element(By.ID, "error").text)
        assert driver.find_element(By.ID, "error").text == (
            f"unknown item id(s): {api.short_repr(odd)}"
        )
    assert "item=" not in driver.current_url  # the long id is kept in the history state

    # Compare: two exports side by side, the overlap marked.
    driver.get(server + "/?item=item00011&k=10")
    wait_for_query(driver, "item00011")
    driver.find_element(By.ID, "compare").send_keys(Keys.SPACE)
    wait.until(lambda b: len(rows(b, "compare")) == 10)
    assert "compare=1" in driver.current_url
    left, right = rows(driver, "served"), rows(driver, "compare")
    assert_same(left, served.similar(["item00011"], k=10)[0])
    assert_same(right, compare.similar(["item00011"], k=10)[0])
    both = {i for i, _, _ in left} & {i for i, _, _ in right}
    assert {i for i, _, c in left if "both" in c} == both
    assert {i for i, _, c in right if "both" in c} == both

    # A new item from the schema's form (cold start).
    driver.find_element(By.CSS_SELECTOR, "#new-item summary").click()
    driver.find_element(By.ID, "f-brand").send_keys(RECORD["brand"])
    driver.find_element(By.ID, "f-category").send_keys(RECORD["category"])
    driver.find_element(By.ID, "f-tags").send_keys("tag3_1, tag3_2")
    driver.find_element(By.ID, "f-price").send_keys("9.5")
    driver.find_element(By.CSS_SELECTOR, "#features-form button[type=submit]").click()
    wait_for_query(driver, "A new item")
    assert_same(rows(driver), served.similar_by_features([RECORD], k=10)[0])
    assert len(rows(driver, "compare")) == 10

    # The Content-Security-Policy blocked nothing the page needs.
    blocked = [
        e["message"] for e in driver.get_log("browser") if "Content Security" in e["message"]
    ]
    assert blocked == []

    screenshot = tmp_path / "page.png"
    assert driver.save_screenshot(str(screenshot))
    assert os.path.getsize(screenshot) > 10_000
