#!/usr/bin/env bash
# Regenerate the README's UI screenshots (docs/screenshots/*.png): runs the browser test
# (coupa_d365_pipeline_tests/e2e/test_ui_browser.py: sandboxes, `dagster dev`, headless Chromium),
# which copies every page it checks to UI_SCREENSHOT_DIR. Needs the system Chromium
# (`apt-get install -y chromium`); `pngquant` (`apt-get install -y pngquant`), when present, makes
# the PNGs about 2.5 times smaller.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/screenshots
UI_SCREENSHOT_DIR="$out" scripts/test.sh -p no:cacheprovider -p no:randomly -q coupa_d365_pipeline_tests/e2e/test_ui_browser.py
if command -v pngquant >/dev/null 2>&1; then
  pngquant --force --strip --ext .png 256 "$out"/*.png
else
  echo "pngquant not found: $out/*.png left as Chromium wrote them (apt-get install -y pngquant)" >&2
fi
ls -l "$out"
