"""TCP sink for bench "throughput": for each connection, prints
``<bytes> <seconds from first byte to EOF>``; exits after COUNT connections
or when nothing connects for TIMEOUT seconds.

    python sink.py PORT COUNT TIMEOUT
"""

import socket
import sys
import time

port, count, idle = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
server.bind(("::", port))
server.listen(4)
server.settimeout(idle)
print("listening", flush=True)
buf = bytearray(1 << 20)
for _ in range(count):
    conn, _ = server.accept()
    conn.settimeout(idle)
    total, first = 0, None
    with conn:
        while True:
            n = conn.recv_into(buf)
            if not n:
                break
            if first is None:
                first = time.perf_counter()
            total += n
    end = time.perf_counter()
    print(total, end - (first or end), flush=True)
