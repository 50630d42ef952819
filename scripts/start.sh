#!/usr/bin/env bash
# Install the assistant, build the index if needed, and start it.
# An explicit empty extras argument: without it, `source` hands this script's own arguments
# (e.g. --port 8000) to _venv.sh, which would read them as pip extras.
source "$(dirname "$0")/_venv.sh" ""
policy-assistant ingest --if-needed
exec policy-assistant serve "$@"
