#!/usr/bin/env python3
"""Sends a node what a confused or hostile peer would, then waits for the
node to close the connection.

  probe.py HOST PORT MODE SEED WAIT_S

MODE: garbage   4096 random bytes (from SEED)
      truncated the first 10 bytes of a frame header ("KVFR", version 1,
                HELLO, half a length), then silence
      badheader a whole 32-byte header ("KVFR", version 1, HELLO, length 100)
                whose checksums are wrong
      idle      nothing at all

Prints "closed after S.SSs" and exits 0 when the node closed within WAIT_S
seconds; exits 1 when it kept the connection open, 2 when it could not
connect.
"""
import random
import socket
import struct
import sys
import time


def payload(mode, seed):
    if mode == "garbage":
        r = random.Random(seed)
        return r.getrandbits(8 * 4096).to_bytes(4096, "little")
    header = b"KVFR" + struct.pack("<BBHI", 1, 1, 0, 100) + struct.pack("<IQQ", 0, 1, 2)
    if mode == "truncated":
        return header[:10]
    if mode == "badheader":
        return header
    if mode == "idle":
        return b""
    raise SystemExit("unknown mode " + mode)


def main():
    host, port, mode, seed, wait_s = sys.argv[1:6]
    wait_s = float(wait_s)
    data = payload(mode, seed)
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
    except OSError as e:
        print(f"cannot connect to {host}:{port}: {e}")
        return 2
    start = time.monotonic()
    try:
        if data:
            s.sendall(data)
        while True:
            left = wait_s - (time.monotonic() - start)
            if left <= 0:
                print(f"still open after {wait_s:.1f}s ({mode})")
                return 1
            s.settimeout(left)
            try:
                if not s.recv(65536):
                    break
            except socket.timeout:
                continue
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    print(f"closed after {time.monotonic() - start:.2f}s ({mode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
