#!/usr/bin/env bash
# Screenshots of the Prometheus web UI graphing the dashboard's key queries, one PNG per
# query, taken with headless Chromium (Debian's `chromium`; installed with apt if missing).
#
#   tools/observability/screenshot.sh PROMETHEUS_URL OUT_DIR [RANGE [RATE_WINDOW]]
#
# PROMETHEUS_URL is a Prometheus that scrapes the stack (e.g. the one tools/tests/prometheus.rs
# starts: run that test with TICKETING_SCREENSHOT_DIR=OUT_DIR and it calls this script while
# its sale's data is fresh). RANGE is the graphs' time range ending now (default 5m). Each
# query is the dashboard's, with RATE_WINDOW (default 1m, four 15 s scrapes) for
# $__rate_interval. Exits non-zero when Chromium is missing and cannot be installed, or when a
# PNG is not written.
set -euo pipefail

url=${1:?usage: screenshot.sh PROMETHEUS_URL OUT_DIR [RANGE]}
out=${2:?usage: screenshot.sh PROMETHEUS_URL OUT_DIR [RANGE]}
range=${3:-5m}
rate=${4:-1m}
url=${url%/}

chromium=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $chromium ]]; then
    echo "chromium not found: apt-get install -y chromium" >&2
    apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null \
        || { echo "cannot install chromium: apt-get install chromium and re-run" >&2; exit 1; }
    chromium=$(command -v chromium)
fi
mkdir -p "$out"

# name|query: the dashboard's key panels.
queries=(
    "rpc-rate|sum by (grpc_service, grpc_method) (rate(grpc_server_handled_total[$rate]))"
    "pay-p99|histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket{grpc_method=\"Pay\"}[$rate])))"
    "queue-length|sum by (event_id) (admission_queue_length)"
    "seats-sold-per-zone|sum by (zone) (rate(seat_lock_sold_seats_total[$rate]))"
    "seats-free-per-zone|max by (zone, state) (inventory_zone_seats)"
)

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
for entry in "${queries[@]}"; do
    name=${entry%%|*}
    query=${entry#*|}
    encoded=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$query")
    page="$url/graph?g0.expr=$encoded&g0.tab=0&g0.stacked=0&g0.range_input=$range"
    rm -f "$out/$name.png"
    # --virtual-time-budget lets the page's scripts fetch and draw the graph before the shot.
    "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
        --window-size=1400,1300 --virtual-time-budget=15000 --screenshot="$out/$name.png" "$page" \
        >/dev/null 2>&1 || true
    if [[ ! -s $out/$name.png ]]; then
        echo "no screenshot written for $name ($page)" >&2
        exit 1
    fi
    echo "$out/$name.png: $query"
done
