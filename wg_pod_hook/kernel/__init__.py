"""Effects on the kernel, each in one place: netlink (links, addresses,
routes, rules), nftables, cgroups, and the WireGuard backends."""
