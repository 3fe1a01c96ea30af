#!/bin/bash
# The data plane against raw UCX: runs transport/transport_bench (two
# processes through UcxTransport, as the workers use it) and Debian's
# ucx_perftest (ucp_am_lat, ucp_am_bw) on the same UCX_TLS, message sizes
# 16 KiB to 4 MiB, and prints a markdown table with the ratios. A strata
# message of SIZE payload bytes carries a 256-byte plan and an 80-byte wire
# header too, so the latency is also compared with ucx_perftest moving that
# many bytes (SIZE + 336: "wire"), which at 8 KiB crosses UCX's shared-memory
# segment (0.6 us at 8192 bytes, 1.9 us at 8528 on the Xeon VM).
#   tools/transport_bench.sh [shm|tcp ...]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ucx_perftest >/dev/null || { echo "ucx_perftest missing: run tools/setup.sh (package ucx-utils)" >&2; exit 1; }
bazel build -c opt //transport:transport_bench 2>/dev/null
bench=${BENCH:-bazel-bin/transport/transport_bench}  # BENCH=path: another build of it
read -ra sizes <<<"${SIZES:-16384 65536 262144 1048576 4194304}"  # SIZES="8192 65536" to choose
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(shm tcp)

perftest() {  # tls test size -> the "Final:" line's fields
  local tls=$1 test=$2 size=$3 port=$((20000 + RANDOM % 20000)) iters
  iters=$(( size >= 1048576 ? 500 : 2000 ))
  UCX_TLS=$tls ucx_perftest -p "$port" >/dev/null 2>&1 &
  local server=$!
  sleep 0.3
  UCX_TLS=$tls ucx_perftest 127.0.0.1 -p "$port" -t "$test" -s "$size" -n "$iters" -w 50 2>/dev/null | grep '^Final:'
  wait "$server" 2>/dev/null || true
}

echo "| transport | size | strata latency (us) | ucx_perftest latency (us) | ratio | perftest at wire size (us) | ratio | strata bandwidth (MB/s) | ucx_perftest bandwidth (MB/s) | ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for mode in "${modes[@]}"; do
  case $mode in
    shm) tls="sm,tcp,self"; peer_errors=false ;;
    tcp) tls="tcp,self"; peer_errors=true ;;
    *) echo "unknown mode $mode (shm or tcp)" >&2; exit 2 ;;
  esac
  ours=$(UCX_TLS=$tls "$bench" --sizes "$(IFS=,; echo "${sizes[*]}")" --peer-errors "$peer_errors")
  for size in "${sizes[@]}"; do
    line=$(grep "\"size\": $size," <<<"$ours")
    lat=$(sed -E 's/.*"lat_us": ([0-9.e+-]+).*/\1/' <<<"$line")
    bw=$(sed -E 's/.*"bw_mbps": ([0-9.e+-]+).*/\1/' <<<"$line")
    # ucp_am_lat: field 4 is the average one-way latency (us).
    plat=$(perftest "$tls" ucp_am_lat "$size" | awk '{print $4}')
    wlat=$(perftest "$tls" ucp_am_lat $((size + 336)) | awk '{print $4}')
    # ucp_am_bw: field 6 is the average bandwidth in MiB/s; convert to MB/s.
    pbw=$(perftest "$tls" ucp_am_bw "$size" | awk '{printf "%.1f", $6 * 1.048576}')
    awk -v m="$mode" -v s="$size" -v l="$lat" -v pl="$plat" -v wl="$wlat" -v b="$bw" -v pb="$pbw" 'BEGIN {
      printf "| %s | %d KiB | %.1f | %.1f | %.2f | %.1f | %.2f | %.0f | %.0f | %.2f |\n", m, s / 1024, l, pl, (pl > 0 ? l / pl : 0), wl, (wl > 0 ? l / wl : 0), b, pb, (pb > 0 ? b / pb : 0) }'
  done
done
