#!/usr/bin/env bash
# Install the assistant with test tools, then lint and run the whole test suite.
source "$(dirname "$0")/_venv.sh" dev
if ! command -v chromium >/dev/null 2>&1; then
  # The end-to-end UI test drives Debian's headless Chromium.
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium"
fi
ruff check src tests ui benchmarks
python -m pytest "$@"
