#!/bin/sh
# The original tool's procedure for what the hook does, as separate commands
# (the baseline of bench "hook"): wireguard-go in the host namespace, move the
# interface into the container's namespace, address, key and peer, up, default
# route out, one route per allowed prefix, three nft commands (port 80 -> 8080).
#
#   manual.sh PID TMPNAME IFNAME ADDRESSES KEYFILE PEERKEY ALLOWEDIPS ENDPOINT PIDFILE
#
# ADDRESSES and ALLOWEDIPS are comma lists; KEYFILE holds the private key
# (0600); wireguard-go's pid goes to PIDFILE so the caller can stop it.
set -eu
pid=$1 tmp=$2 ifname=$3 addresses=$4 keyfile=$5 peer=$6 allowed=$7 endpoint=$8 pidfile=$9
ns=/proc/$pid/ns/net
in_ns() { nsenter --net="$ns" -- "$@"; }

wireguard-go -f "$tmp" </dev/null >/dev/null 2>&1 &
echo $! >"$pidfile"
i=0
# The socket file appears a moment before it listens: wait for an answer.
while ! wg show "$tmp" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -le 1000 ] || { echo "no UAPI socket for $tmp" >&2; exit 1; }
    sleep 0.005
done

ip link set "$tmp" netns "$pid" name "$ifname"
for address in $(echo "$addresses" | tr , ' '); do
    in_ns ip addr add "$address" dev "$ifname"
done
wg set "$tmp" private-key "$keyfile" peer "$peer" allowed-ips "$allowed" endpoint "$endpoint"
in_ns ip link set "$ifname" up
in_ns ip route del default
for prefix in $(echo "$allowed" | tr , ' '); do
    in_ns ip route add "$prefix" dev "$ifname"
done
in_ns nft add table inet wgpod
in_ns nft add chain inet wgpod prerouting '{ type nat hook prerouting priority dstnat; }'
in_ns nft add rule inet wgpod prerouting iifname "$ifname" tcp dport 80 redirect to :8080
