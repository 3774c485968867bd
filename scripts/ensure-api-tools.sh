#!/usr/bin/env bash
# A Python virtual environment at .venv-api/ (git-ignored) with the REST contract
# tools of scripts/api-contract/requirements.txt (openapi-spec-validator,
# schemathesis), installed from PyPI when missing or when the pins changed.
# Prints the environment's bin directory.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-api
req=scripts/api-contract/requirements.txt
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
  echo "[ensure-api-tools] installing $(grep -v '^#' "$req" | tr '\n' ' ') into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$PWD/$venv/bin"
