#!/bin/bash
# Sample a process's resident memory every 5 s until it exits: one line per sample with
# the UTC time, VmRSS (resident now) and VmHWM (peak so far), in GiB, from /proc (Linux).
#   scripts/rsswatch.sh PID OUT_FILE
set -euo pipefail
pid=$1
out=$2
while kill -0 "$pid" 2>/dev/null; do
  awk -v now="$(date -u +%H:%M:%S)" '
    /^VmRSS|^VmHWM/ { gib[$1] = $2 / 1048576 }
    END { printf "%s rss %.2f hwm %.2f\n", now, gib["VmRSS:"], gib["VmHWM:"] }
  ' "/proc/$pid/status" >> "$out" || break
  sleep 5
done
