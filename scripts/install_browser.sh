#!/usr/bin/env bash
# Headless Chromium and its driver for the browser test of the page (tests/test_page_browser.py),
# from the Debian archive. `make test` runs this first: when they are missing and we are root with
# apt-get, it installs them; otherwise it says how, and the test skips with the same command.
# It never fails the build: without a browser the other tests still run.
set -u
INSTALL="apt-get install -y chromium chromium-driver"
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no chromium/chromedriver here; the browser test will skip (as root: $INSTALL)"
  exit 0
fi
echo "installing the browser for the page test: $INSTALL"
export DEBIAN_FRONTEND=noninteractive
if ! $INSTALL -qq >/dev/null 2>&1; then
  # A fresh machine may have no package lists yet.
  apt-get update -qq >/dev/null 2>&1 && $INSTALL -qq >/dev/null 2>&1 \
    || echo "warning: '$INSTALL' failed; the browser test will skip"
fi
exit 0
