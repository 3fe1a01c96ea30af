#!/bin/bash
# The 2-stage x 2-rank pipeline with each stage in its own network namespace
# (its own veth pair and IP address on a private bridge), so no stage can
# reach another over loopback or shared memory: UCX runs over TCP between
# the addresses 10.213.7.2 (stage 0) and 10.213.7.3 (stage 1); the driver
# (the test, playing the router) is at 10.213.7.1 in the root namespace.
# Skips, saying why, where namespaces cannot be made (not root, no ip).
set -u
DRIVER="$1"
tag="st$$"
br="br${tag}"
ns0="${tag}s0"
ns1="${tag}s1"

skip() { echo "SKIP: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null || skip "the ip command (iproute2) is missing"

cleanup() {
  ip netns del "$ns0" 2>/dev/null
  ip netns del "$ns1" 2>/dev/null
  ip link del "$br" 2>/dev/null
  ip link del "v${tag}0" 2>/dev/null
  ip link del "v${tag}1" 2>/dev/null
}
trap cleanup EXIT

ip link add "$br" type bridge 2>/dev/null || skip "cannot create a bridge here"
ip addr add 10.213.7.1/24 dev "$br" && ip link set "$br" up || skip "cannot configure the bridge"
i=0
for ns in "$ns0" "$ns1"; do
  ip netns add "$ns" || skip "cannot create network namespace $ns"
  ip link add "v${tag}$i" type veth peer name "e${tag}$i" || skip "cannot create veth pairs"
  ip link set "v${tag}$i" master "$br"
  ip link set "v${tag}$i" up
  ip link set "e${tag}$i" netns "$ns"
  ip netns exec "$ns" ip addr add "10.213.7.$((i + 2))/24" dev "e${tag}$i"
  ip netns exec "$ns" ip link set "e${tag}$i" up
  ip netns exec "$ns" ip link set lo up
  i=$((i + 1))
done
echo "stage 0 in $ns0 (10.213.7.2), stage 1 in $ns1 (10.213.7.3), driver 10.213.7.1 on $br"

export STRATA_NETNS_HOSTS=10.213.7.2,10.213.7.3
export STRATA_NETNS_NAMES="$ns0,$ns1"
export STRATA_DRIVER_HOST=10.213.7.1
"$DRIVER" --gtest_filter='*tcp*'
