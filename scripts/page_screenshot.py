r"""Screenshot of the browser page on an export (the README's docs/page.png), in headless Chromium.

  .venv/bin/python scripts/page_screenshot.py --export_dir=runs/demo/export \
      --compare_export_dir=runs/demo/export_baseline --item=vim --out=docs/page.png

Starts `python -m ssl_retrieval.serve` on a free loopback port, opens `/?item=<item>&k=<k>`
(with the compare view when a second export is given), waits for the neighbours and saves the
whole page as a 128-colour PNG. Needs chromium + chromium-driver (scripts/install_browser.sh) and selenium.
"""

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from absl import app, flags

EXPORT_DIR = flags.DEFINE_string("export_dir", None, "The served export.")
COMPARE_EXPORT_DIR = flags.DEFINE_string("compare_export_dir", None, "Optional second export.")
ITEM = flags.DEFINE_string("item", "vim", "Query item id.")
K = flags.DEFINE_integer("k", 10, "Neighbours per list.")
WIDTH = flags.DEFINE_integer("width", 1400, "Browser window width (pixels).")
OUT = flags.DEFINE_string("out", "docs/page.png", "PNG to write.")
flags.mark_flag_as_required("export_dir")


def main(argv):
    del argv
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "ssl_retrieval.serve", f"--export_dir={EXPORT_DIR.value}"]
    if COMPARE_EXPORT_DIR.value:
        command.append(f"--compare_export_dir={COMPARE_EXPORT_DIR.value}")
    server = subprocess.Popen(command + [f"--port={port}", "--poll_seconds=0"])
    base = f"http://127.0.0.1:{port}"
    browser = None
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None:
                    raise SystemExit("the server exited") from None
                time.sleep(0.5)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--hide-scrollbars",
        ):
            options.add_argument(arg)
        options.add_argument(f"--window-size={WIDTH.value},1000")
        browser = webdriver.Chrome(
            options=options, service=Service(executable_path=shutil.which("chromedriver"))
        )
        query = {"item": ITEM.value, "k": K.value}
        if COMPARE_EXPORT_DIR.value:
            query["compare"] = 1
        browser.get(f"{base}/?{urllib.parse.urlencode(query)}")
        wanted = 2 * K.value if COMPARE_EXPORT_DIR.value else K.value
        WebDriverWait(browser, 120).until(
            lambda b: len(b.find_elements(By.CSS_SELECTOR, "#results tbody tr")) >= wanted
        )
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH.value, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        time.sleep(0.5)
        browser.save_screenshot(OUT.value)
        # A 128-colour palette keeps the text sharp at a third of the bytes (for the repository).
        from PIL import Image

        image = Image.open(OUT.value).convert("RGB")
        image.quantize(colors=128, dither=Image.Dither.NONE).save(OUT.value, optimize=True)
        print(f"wrote {OUT.value}")
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    app.run(main)
