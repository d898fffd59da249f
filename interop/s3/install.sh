#!/usr/bin/env bash
# Installs the S3 server barn-testkit's S3Server runs (moto, from PyPI, as
# requirements.txt pins it) into <workspace>/target/testkit-s3/venv, with
# the network access a fresh machine has (PyPI only) and no stdin.
# barn-testkit runs this, under a file lock, when the venv's stamp is
# missing or older than this script or requirements.txt; CI runs it before
# the tests so no test waits for it. Safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")"

venv="../../target/testkit-s3/venv"
# A venv left half-made by an interrupted run is not to be trusted.
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$venv/bin/python" -m pip install -q --no-deps -r requirements.txt
# --no-deps trusts the pins to be complete; this says if they are not.
"$venv/bin/python" -m pip check
"$venv/bin/python" -c "import moto.server, moto.s3, flask, flask_cors"
date -u +%FT%TZ > "$venv/.barn-installed"
