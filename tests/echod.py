"""TCP and UDP echo for the leak tests (test side only).

``python echod.py serve ADDRESS PORT`` echoes on ADDRESS:PORT over TCP and
UDP; ``python echod.py probe tcp|udp ADDRESS PORT [--dev DEV] [--source ADDR]``
exits 0 when the echo came back within two seconds, 1 otherwise.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading

TIMEOUT = 2.0


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def serve(address: str, port: int) -> None:
    family = _family(address)
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.bind((address, port))
    tcp = socket.socket(family, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((address, port))
    tcp.listen()

    def tcp_loop() -> None:
        while True:
            conn, _ = tcp.accept()
            with conn:
                conn.sendall(conn.recv(4096))

    threading.Thread(target=tcp_loop, daemon=True).start()
    print("ready", flush=True)
    while True:
        data, peer = udp.recvfrom(4096)
        udp.sendto(data, peer)


def probe(proto: str, address: str, port: int, dev: str | None, source: str | None) -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    message = b"wg-pod leak probe"
    with socket.socket(_family(address), kind) as sock:
        sock.settimeout(TIMEOUT)
        try:
            if dev:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
            if source:
                sock.bind((source, 0))
            if proto == "tcp":
                sock.connect((address, port))
                sock.sendall(message)
            else:
                sock.sendto(message, (address, port))
            return sock.recv(4096) == message
        except OSError:
            return False


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve(argv[1], int(argv[2]))
        return 0
    if argv[:1] == ["probe"]:
        dev = argv[argv.index("--dev") + 1] if "--dev" in argv else None
        source = argv[argv.index("--source") + 1] if "--source" in argv else None
        return 0 if probe(argv[1], argv[2], int(argv[3]), dev, source) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
