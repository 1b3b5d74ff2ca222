#!/usr/bin/env bash
# kv-jepsen's network: every node in a network namespace of its own, the
# clients in one more, all on one bridge in a namespace of its own; the root
# namespace is never touched. Partitions are nftables rules in a node's own
# namespace that drop what it receives from chosen nodes (one way; both ways
# is a rule on each side), so the kernel's own TCP sees the loss.
#   netns.sh up PREFIX NODES     PREFIXbr (bridge), PREFIXc 10.77.0.100 (and
#                                10.77.1.1.. for the proxies), PREFIXn1..
#                                10.77.0.1.., all in 10.77.0.0/16
#   netns.sh nat PREFIX I IP:PORT:PROXYPORT..   node I's connections to
#                                IP:PORT go to 10.77.0.100:PROXYPORT (proxy.c)
#   netns.sh drop PREFIX I [J..] node I drops all it receives from nodes J..
#                                (none: heal node I)
#   netns.sh reset PREFIX NODES  destroys every peer TCP connection (ss -K) in
#                                the nodes' namespaces and the proxies' in
#                                this one, so links start over with no
#                                retransmission backoff (--heal-reset)
#   netns.sh down PREFIX         removes every namespace of PREFIX
#   netns.sh sweep               removes namespaces of dead kv-jepsen runs
#                                (kvj<pid>*) left by a SIGKILLed run
# Needs root, ip (iproute2) and nft (nftables). Exit 77 when missing.
set -euo pipefail
need() {
  if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null || ! command -v nft >/dev/null; then
    echo "SKIP: network namespaces need root, ip and nft" >&2
    exit 77
  fi
}
cmd=$1
shift
case $cmd in
  up)
    need
    p=$1 n=$2
    trap '"$0" down "$p"' ERR
    ip netns add "${p}br"
    ip -n "${p}br" link set lo up
    ip -n "${p}br" link add br0 type bridge
    ip -n "${p}br" link set br0 up
    for x in c $(seq "$n"); do
      if [ "$x" = c ]; then ns=${p}c addr=10.77.0.100; else ns=${p}n$x addr=10.77.0.$x; fi
      ip netns add "$ns"
      ip -n "${p}br" link add "v$x" type veth peer name eth0 netns "$ns"
      ip -n "${p}br" link set "v$x" master br0 up
      ip -n "$ns" addr add "$addr/16" dev eth0
      [ "$x" = c ] || ip -n "${p}c" addr add "10.77.1.$x/16" dev eth0
      ip -n "$ns" link set eth0 up
      ip -n "$ns" link set lo up
    done
    ;;
  nat)
    p=$1 i=$2
    shift 2
    rules="add table ip kvjnat
delete table ip kvjnat
table ip kvjnat {
  chain out {
    type nat hook output priority -100; policy accept;"
    for m in "$@"; do
      IFS=: read -r ip port pport <<<"$m"
      rules="$rules
    ip daddr $ip tcp dport $port dnat to 10.77.0.100:$pport"
    done
    printf '%s\n  }\n}\n' "$rules" | ip netns exec "${p}n$i" nft -f -
    ;;
  drop)
    p=$1 i=$2
    shift 2
    rules="add table inet kvj
delete table inet kvj"
    if [ $# -gt 0 ]; then
      srcs=$(printf '10.77.0.%s, 10.77.1.%s, ' $(for j in "$@"; do echo "$j $j"; done))
      rules="$rules
table inet kvj {
  chain input { type filter hook input priority 0; policy accept; ip saddr { ${srcs%, } } drop; }
}"
    fi
    printf '%s\n' "$rules" | ip netns exec "${p}n$i" nft -f -
    ;;
  reset)
    p=$1 n=$2
    # Peers are 10.77.0.1-7 (and 10.77.1.x through a proxy); a node's link
    # through its proxy goes to 10.77.0.100:30000-30099. Clients' sockets stay.
    peers='( dst 10.77.0.0/29 or dst 10.77.1.0/24 or ( dst 10.77.0.100 and dport >= :30000 and dport < :30100 ) )'
    for x in $(seq "$n"); do
      ip netns exec "${p}n$x" ss -K -t "$peers" >/dev/null 2>&1 || true
    done
    ss -K -t 'src 10.77.1.0/24' >/dev/null 2>&1 || true
    ;;
  down)
    p=$1
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${p}" || true); do
      ip netns del "$ns" 2>/dev/null || true
    done
    ;;
  sweep)
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^kvj[0-9]*[a-z]' || true); do
      pid=${ns#kvj}
      pid=${pid%%[a-z]*}
      [ -d "/proc/$pid" ] || ip netns del "$ns" 2>/dev/null || true
    done
    ;;
  *)
    echo "usage: netns.sh up|drop|down|sweep ..." >&2
    exit 2
    ;;
esac
