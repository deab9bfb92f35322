#!/usr/bin/env python3
"""Cross-client keystroke latency of two terminals attached to one session.

Usage: session-attach.py ROUNDS NAME -- ARGV_A... -- ARGV_B...
Starts both clients on their own PTYs (80x24), waits until both are quiet,
then ROUNDS times: types one letter into client A and times until it shows
in client B's output. Prints "NAME median_ms p90_ms" on the last line.
"""
import os
import pty
import select
import statistics
import sys
import time


def spawn(argv):
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    return pid, fd


def read_some(fd, timeout):
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def drain(fd, quiet=0.3, limit=10.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if not read_some(fd, quiet):
            return


def main():
    rounds, name = int(sys.argv[1]), sys.argv[2]
    rest = sys.argv[3:]
    assert rest[0] == "--"
    split = rest.index("--", 1)
    argv_a, argv_b = rest[1:split], rest[split + 1:]
    (pa, fa), (pb, fb) = spawn(argv_a), spawn(argv_b)
    time.sleep(1.0)
    drain(fa, 1.0)
    drain(fb, 1.0)
    times = []
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in range(rounds):
        c = letters[i % 26].encode()
        drain(fa, 0.05)
        drain(fb, 0.05)
        t0 = time.monotonic()
        os.write(fa, c)
        seen = b""
        while c not in seen:
            got = read_some(fb, 5.0)
            if not got:
                sys.exit(f"{name}: round {i}: {c!r} never showed in client B")
            seen += got
        times.append((time.monotonic() - t0) * 1000)
        if i % 20 == 19:
            os.write(fa, b"\r")
    for pid in (pa, pb):
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except OSError:
            pass
    times.sort()
    p90 = times[int(len(times) * 0.9) - 1]
    print(f"{name} {statistics.median(times):.1f} {p90:.1f}")


if __name__ == "__main__":
    main()
