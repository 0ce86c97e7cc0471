"""Network guards of the launch scripts (Ray's node-to-node ports have no authentication).

    python launch/cluster_network.py address NAME ADDRESS   # prints loopback | private; exit 2 if public
    python launch/cluster_network.py loopback-only WHY      # exit 2 unless only loopback has an address

``address``: an IP literal that is loopback, or not globally routable (RFC 1918, link-local, shared
address space, IPv6 unique-local); a public address or a host name is refused, naming NAME.
``loopback-only``: this network namespace has no address outside loopback, as under
``unshare --net`` (then a Ray process listening on every interface is reachable from this
namespace only).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

import psutil


def refuse(message: str):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def classify(name: str, address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        refuse(f"{name}={address!r} is not an IP address (give the node's address on the private cluster network)")
    if ip.is_loopback:
        return "loopback"
    if ip.is_global or ip.is_multicast or ip.is_unspecified:
        refuse(f"{name}={address} is a public address: Ray's ports have no authentication, use the node's "
               "address on a private cluster network (10.x, 172.16-31.x, 192.168.x)")
    return "private"


def non_loopback_addresses() -> dict[str, list[str]]:
    found = {}
    for interface, addresses in psutil.net_if_addrs().items():
        ips = [a.address for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6)]
        ips = [ip for ip in ips if not ipaddress.ip_address(ip.split("%")[0]).is_loopback]
        if ips:
            found[interface] = ips
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    address = sub.add_parser("address", help="classify a node address")
    address.add_argument("name")
    address.add_argument("address")
    loopback = sub.add_parser("loopback-only", help="require a namespace with only loopback addresses")
    loopback.add_argument("why")
    args = parser.parse_args(argv)
    if args.command == "address":
        print(classify(args.name, args.address))
        return 0
    others = non_loopback_addresses()
    if others:
        listed = "; ".join(f"{name}: {', '.join(ips)}" for name, ips in sorted(others.items()))
        refuse(f"{args.why}, and this network namespace has addresses outside loopback ({listed}). "
               "Run it in a namespace with only loopback, e.g. `unshare --net` (as root) with `ip link set lo up`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
