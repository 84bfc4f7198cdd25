#!/usr/bin/env bash
# Property-based test of a running custody-node against its own OpenAPI document
# (spec/openapi.json, served at /openapi.json), with schemathesis.
#
#   tests/schemathesis/run.sh http://127.0.0.1:7878 [more `schemathesis run` options]
#
# Checks: no 5xx (not_a_server_error), every answer's status, content type, headers
# and body as the document says (status_code_conformance, content_type_conformance,
# response_headers_conformance, response_schema_conformance). The per-operation
# settings are in schemathesis.toml beside this script.
#
# Uses `schemathesis` 4.x from PATH if there is one; otherwise installs the pinned
# version with pip into a venv under $CARGO_TARGET_DIR (or /tmp), once.
#
# Environment: CUSTODY_SCHEMATHESIS_EXAMPLES (default 30 per operation),
# CUSTODY_SCHEMATHESIS_SEED (default 20261123, fixed so that a run is reproducible).
#
# Exit status: schemathesis's own (0 = no failure), or 3 if schemathesis could not
# be installed (no network, no python3).
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 BASE_URL [schemathesis run options]" >&2
    exit 2
fi
base=${1%/}
shift
here=$(cd "$(dirname "$0")" && pwd)
version=4.32.5

find_schemathesis() {
    local st
    for st in "$(command -v schemathesis || true)" "$venv/bin/schemathesis"; do
        if [ -n "$st" ] && [ -x "$st" ] && "$st" --version 2>/dev/null | grep -q 'version 4\.'; then
            echo "$st"
            return 0
        fi
    done
    return 1
}

venv=${CARGO_TARGET_DIR:-/tmp}/schemathesis-venv
if ! st=$(find_schemathesis); then
    mkdir -p "$(dirname "$venv")"
    # Several test processes may get here at once: one installs, the others wait.
    exec 9>"$venv.lock"
    flock 9
    if ! st=$(find_schemathesis); then
        echo "installing schemathesis $version into $venv" >&2
        if ! { python3 -m venv "$venv" &&
            "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"; } >&2; then
            echo "error: could not install schemathesis $version with pip (is PyPI reachable?)" >&2
            exit 3
        fi
        st=$venv/bin/schemathesis
    fi
    flock -u 9
fi

exec "$st" --config-file "$here/schemathesis.toml" run "$base/openapi.json" \
    --url "$base" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "${CUSTODY_SCHEMATHESIS_EXAMPLES:-30}" \
    --seed "${CUSTODY_SCHEMATHESIS_SEED:-20261123}" \
    --workers 1 \
    --request-timeout 10 \
    --no-color \
    "$@"
