"""Bench fixture: gives existing threads N stored messages each, directly in the SQLite
file (writing 5,000 messages through the API would take longer than the benchmark).
Usage: fill_threads.py DB N THREAD_ID...  — alternating user/assistant messages of
~200 characters, as a conversation would have."""
import os
import sqlite3
import sys
import time

db, n, ids = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
con = sqlite3.connect(db, timeout=30)
now = int(time.time() * 1000)
text = ("Please summarise the travel policy for flights under six hours and tell me "
        "who approves exceptions; also what the receipts deadline is for expenses. ")
with con:
    for tid in ids:
        rows = []
        for seq in range(1, n + 1):
            role = "user" if seq % 2 else "assistant"
            rows.append((os.urandom(16).hex(), tid, seq, role, f"{seq} {text}", "[]", now))
        con.executemany(
            "INSERT INTO messages (id, thread_id, seq, role, content, citations, created_at)"
            " VALUES (?,?,?,?,?,?,?)", rows)
        con.execute("UPDATE threads SET message_count = ? WHERE id = ?", (n, tid))
con.close()
