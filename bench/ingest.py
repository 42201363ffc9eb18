"""Ingestion benchmark (bench/ingest): a 2 MB document of real prose (the sources of
the Python documentation, Debian's python3-doc) embedded by the real all-MiniLM-L6-v2
model in a release build of palisade on the embedded store, while another user chats
(one turn after another, retrieval on, against the mock upstream). Halfway through the
gateway is killed (-9) and restarted; the job resumes.

Prints one table: the document, the embedding rate, the time to `ready` (kill and
restart included), the chunks embedded twice because of the kill, whether every chunk
is stored exactly once, and the chat turn's latency idle and during ingestion (p50, p99
and their ratio). Every process it starts is stopped on exit.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REL = Path("target/release")
MOCK, PORT = 9411, 9412
CORPUS = Path("/usr/share/doc/python3/html/_sources/library")
DOC_BYTES = 2_000_000
procs: list[subprocess.Popen] = []


def http(method, url, body=None, token=None, timeout=60, headers=None):
    req = urllib.request.Request(url, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(req, data, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


def corpus() -> str:
    text = ""
    for f in sorted(CORPUS.glob("*.rst.txt")):
        for para in f.read_text().split("\n\n"):
            if len(text) + len(para) + 2 > DOC_BYTES:
                return text
            if para.strip():
                text += para + "\n\n"
    raise SystemExit("the corpus is smaller than 2 MB")


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="palisade-ingest-"))
    env = {
        **os.environ,
        "PALISADE_LLM__BASE_URL": f"http://127.0.0.1:{MOCK}/v1",
        "PALISADE_LLM__MODEL": "mock-model",
        "PALISADE_EMBEDDINGS__KIND": "local",
        "PALISADE_EMBEDDINGS__MODEL_DIR": str(Path("models/all-MiniLM-L6-v2").resolve()),
        "PALISADE_RAG__INGEST_LEASE": "5s",
        "PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE": "100000000",
        "PALISADE_LOG__LEVEL": "warn",
    }
    cli = [str(REL / "palisade"), "--data-dir", str(data)]

    def serve():
        out = open(data / "out", "w")
        p = subprocess.Popen(cli + ["serve", "--listen", f"127.0.0.1:{PORT}"], env=env,
                             stdout=out, stderr=open(data / "log", "a"))
        procs.append(p)
        for _ in range(3000):
            if "listening" in (data / "out").read_text():
                return p
            time.sleep(0.01)
        raise SystemExit("palisade did not start")

    mock = subprocess.Popen([str(REL / "examples" / "mock_upstream"), f"127.0.0.1:{MOCK}"],
                            env={**os.environ, "MOCK_STRICT": "0", "MOCK_ANSWER_CHARS": "400"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(mock)
    for user, role in [("adam", "admin"), ("alice", "employee")]:
        subprocess.run(cli + ["user", "add", user, "--roles", role, "--tenant", "acme", "--password-stdin"],
                       env=env, input=f"{user}-bench-password\n", text=True, check=True, capture_output=True)
    pal = serve()
    base = f"http://127.0.0.1:{PORT}"

    def login(user):
        return http("POST", f"{base}/auth/login", {"username": user, "password": f"{user}-bench-password"})[2]["access_token"]

    adam, alice = login("adam"), login("alice")
    # Something for retrieval to find, so that every turn embeds its question.
    http("POST", f"{base}/v1/documents", {"title": "Dates", "text": "The datetime module supplies classes for dates and times.",
                                          "acl": {"public": True}}, adam, headers={"prefer": "wait=25"})
    question = {"content": "Which module handles dates?"}
    thread = {"turns": 0}

    def turn(token):
        # A fresh thread every 100 turns keeps the history's size alike in both phases
        # (and under the thread's message limit).
        if thread["turns"] % 100 == 0:
            thread["id"] = http("POST", f"{base}/v1/threads", {"title": "bench"}, token)[2]["id"]
        thread["turns"] += 1
        t = time.perf_counter()
        status, _, _ = http("POST", f"{base}/v1/threads/{thread['id']}/messages", question, token)
        assert status == 200, status
        return time.perf_counter() - t

    idle = [turn(alice) for _ in range(100)]

    text = corpus()
    t0 = time.perf_counter()
    status, headers, body = http("POST", f"{base}/v1/documents",
                                 {"title": "Python library reference", "text": text, "acl": {"public": True}}, adam)
    assert status == 202, (status, body)
    accepted_ms = (time.perf_counter() - t0) * 1000
    location = base + headers["location"]
    doc_id = body["id"]
    busy, killed_at, total = [], None, 0
    state = {}
    while True:
        busy.append(turn(alice))
        _, _, state = http("GET", location, token=adam)
        done, total = state.get("progress", {}).get("done", 0), state.get("progress", {}).get("total", total)
        if state["state"] == "ready":
            break
        if killed_at is None and total and done * 2 >= total:
            killed_at = (done, total)
            pal.send_signal(signal.SIGKILL)
            pal.wait()
            t_kill = time.perf_counter()
            pal = serve()
            restart_s = time.perf_counter() - t_kill
            adam, alice = login("adam"), login("alice")
    ready_s = time.perf_counter() - t0
    chunks = state["chunks"]
    db = sqlite3.connect(data / "palisade.db")
    n, distinct, top = db.execute(
        "SELECT count(*), count(DISTINCT seq), COALESCE(max(seq) + 1, 0) FROM chunks WHERE document_id = ?",
        (doc_id,)).fetchone()
    staged = db.execute("SELECT count(*) FROM ingest_chunks").fetchone()[0]
    once = n == distinct == top == chunks and staged == 0
    log = (data / "log").read_text()
    redone = sum(1 for line in log.splitlines() if "ingestion interrupted" in line)

    rows = [
        ("document", f"{len(text):,} bytes of python3-doc, {chunks:,} chunks"),
        ("accepted (202) after", f"{accepted_ms:.0f} ms"),
        ("ready after", f"{ready_s:.0f} s, killed -9 at {killed_at[0]:,}/{killed_at[1]:,} and restarted ({restart_s:.1f} s)"),
        ("embedding rate", f"{chunks / ready_s:.1f} chunks/s over the whole run"),
        ("every chunk stored exactly once", f"{'yes' if once else 'NO'} ({n:,} rows, {distinct:,} positions, {staged} staged left)"),
        ("chat turn idle, p50 / p99", f"{percentile(idle, 50) * 1000:.1f} / {percentile(idle, 99) * 1000:.1f} ms ({len(idle)} turns)"),
        ("chat turn during ingestion, p50 / p99", f"{percentile(busy, 50) * 1000:.1f} / {percentile(busy, 99) * 1000:.1f} ms ({len(busy)} turns)"),
        ("p99 during / idle", f"{percentile(busy, 99) / percentile(idle, 99):.1f}x"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'ingestion, all-MiniLM-L6-v2, embedded store'.ljust(width)} | |")
    print(f"|{'-' * (width + 2)}|---|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")
    if redone:
        print(f"({redone} interrupted job steps logged)")
    if not once:
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
