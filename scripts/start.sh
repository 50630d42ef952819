#!/usr/bin/env bash
# Install the assistant, build the index if needed, and start it.
source "$(dirname "$0")/_venv.sh"
policy-assistant ingest --if-needed
exec policy-assistant serve "$@"
