#!/usr/bin/env python3
"""Revocation propagation between two cluster nodes: log in on node A, use the token on
node B (so B has the session cached), log out on A, then poll B until it answers 401.
Prints p50/p90/p99/max of the time from A's logout answer to B's first 401.

Usage: bench/revocation.py HOST:PORT_A HOST:PORT_B USER PASSWORD [ROUNDS]
"""
import http.client
import json
import sys
import time


def conn(addr):
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)


def call(c, method, path, token=None, body=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = c.getresponse()
    data = r.read()
    return r.status, data


def main():
    a_addr, b_addr, user, password = sys.argv[1:5]
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 200
    a, b = conn(a_addr), conn(b_addr)
    times = []
    for _ in range(rounds):
        st, data = call(a, "POST", "/auth/login", body={"username": user, "password": password})
        assert st == 200, (st, data)
        token = json.loads(data)["access_token"]
        for _ in range(3):
            st, _ = call(b, "GET", "/auth/me", token)
            assert st == 200, st
        st, _ = call(a, "POST", "/auth/logout", token, body={})
        assert st in (200, 204), st
        t0 = time.perf_counter()
        while True:
            st, _ = call(b, "GET", "/auth/me", token)
            if st == 401:
                break
            assert st == 200, st
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    pick = lambda p: times[min(len(times) - 1, int(round((len(times) - 1) * p)))]
    print(
        f"| revocation A→B ({rounds} logouts) | p50 {pick(0.5):.2f} ms | p90 {pick(0.9):.2f} ms "
        f"| p99 {pick(0.99):.2f} ms | max {times[-1]:.2f} ms |"
    )


if __name__ == "__main__":
    main()
