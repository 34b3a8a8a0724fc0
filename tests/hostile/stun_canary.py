"""The STUN canary: Binding round trips to a STUN server every :data:`PERIOD` seconds, from
a source address of its own (e.g. 127.0.0.2: all of 127.0.0.0/8 is loopback on Linux), so
that the per-source limits an attack sets off from 127.0.0.1 do not apply to it; in a
process of its own, as :mod:`hostile.canary`.

``python -m hostile.stun_canary HOST PORT SOURCE`` prints ``ready``, then one line per round
trip: ``<time.monotonic()> <seconds, or inf if lost>`` (the format of :mod:`hostile.canary`);
it stops when its standard input closes.
"""

from __future__ import annotations

import select
import socket
import sys
import threading
import time

from rtckit.stun import MessageClass, binding_request, new_transaction_id, parse_message

PERIOD = 0.1
#: A round trip not back within this is lost (printed as inf).
LOST_AFTER = 2.0


def round_trip(sock: socket.socket, server: tuple[str, int]) -> float:
    """One Binding request and its success response over UDP, in seconds (inf: lost)."""
    transaction = new_transaction_id()
    sent = time.perf_counter()
    sock.sendto(binding_request(transaction), server)
    deadline = sent + LOST_AFTER
    while (left := deadline - time.perf_counter()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            break
        data = sock.recv(2048)
        answer = parse_message(data)
        if answer.transaction_id == transaction:
            assert answer.message_class == MessageClass.SUCCESS_RESPONSE, answer
            return time.perf_counter() - sent
    return float("inf")


def main(host: str, port: int, source: str) -> None:
    stop = threading.Event()

    def wait_for_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_stdin, daemon=True).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        print("ready", flush=True)
        while not stop.is_set():
            rtt = round_trip(sock, (host, port))
            print(f"{time.monotonic()} {rtt}", flush=True)
            stop.wait(max(0.0, PERIOD - rtt))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
