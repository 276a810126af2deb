"""A tiny DNS responder and client for the leak tests (test side only).

``python dnsd.py serve ADDRESS ANSWER`` answers every A query on ADDRESS:53
(UDP and TCP) with ANSWER; ``python dnsd.py query SERVER NAME [--tcp]``
prints the answer's A record or exits 1.  Only what the tests need of RFC 1035.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import sys
import threading


def build_query(name: str) -> tuple[int, bytes]:
    ident = random.randrange(1 << 16)
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return ident, header + qname + struct.pack("!HH", 1, 1)


def answer(query: bytes, address: str) -> bytes:
    ident = query[:2]
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12 : end + 5]
    header = ident + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    return header + question + record


def parse_answer(reply: bytes, ident: int) -> str | None:
    if len(reply) < 12 or struct.unpack("!H", reply[:2])[0] != ident:
        return None
    if struct.unpack("!H", reply[6:8])[0] == 0:
        return None
    return socket.inet_ntoa(reply[-4:])


def serve(address: str, reply_with: str) -> None:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.bind((address, 53))
    tcp = socket.socket(family, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((address, 53))
    tcp.listen()

    def tcp_loop() -> None:
        while True:
            conn, _ = tcp.accept()
            with conn:
                length = struct.unpack("!H", conn.recv(2))[0]
                data = conn.recv(length)
                out = answer(data, reply_with)
                conn.sendall(struct.pack("!H", len(out)) + out)

    threading.Thread(target=tcp_loop, daemon=True).start()
    print("ready", flush=True)
    while True:
        data, peer = udp.recvfrom(4096)
        udp.sendto(answer(data, reply_with), peer)


def query(server: str, name: str, *, tcp: bool = False, timeout: float = 2.0) -> str | None:
    family = socket.AF_INET6 if ipaddress.ip_address(server).version == 6 else socket.AF_INET
    ident, packet = build_query(name)
    with socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            if tcp:
                sock.connect((server, 53))
                sock.sendall(struct.pack("!H", len(packet)) + packet)
                reply = sock.recv(4096)[2:]
            else:
                sock.sendto(packet, (server, 53))
                reply = sock.recv(4096)
        except OSError:
            return None
    return parse_answer(reply, ident)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve(argv[1], argv[2])
        return 0
    if argv[:1] == ["query"]:
        result = query(argv[1], argv[2], tcp="--tcp" in argv)
        if result is None:
            return 1
        print(result)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
