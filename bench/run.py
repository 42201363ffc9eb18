#!/usr/bin/env python3
"""palisade beside the alternatives, under one load: the driver behind `bench/run`.

Starts, on 127.0.0.1 only: the mock upstream (a fixed 400-character answer), the bare
pass-through proxy (parse, check a bearer string, forward, stream back: the physical
limit), palisade on the embedded store and on the cluster store (a fresh PostgreSQL
database and Redis key prefix, removed at the end), and the LiteLLM proxy (one worker,
a master key, no database) in front of the same mock. Drives each with wrk at
concurrency 1 and 32 and prints one table: requests/s, p50/p99, time to first byte, CPU
time per request, the ratio to the pass-through; then start-up time and peak RSS per
system. The tables go into BENCHMARKS.md (between the bench/run markers) with the
machine, date and versions. Every process it starts is stopped by PID (its process
group) on exit, also on Ctrl-C.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REL = ROOT / "target" / "release"
DUR = int(os.environ.get("BENCH_SECONDS", "5"))
VENV = Path(os.environ.get("BENCH_VENV", ROOT / "target" / "bench-venv"))
PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
MOCK, PASS, EMB, CLU, LITE = 9100, 9200, 9300, 9301, 9400
PASS_TOKEN = "bench-pass-token"
LITE_KEY = "sk-bench-master-key"
PASSWORD = "bench-password-123"
QUESTION = "What does the travel policy say about approvals for international flights?"

procs: list[tuple[str, subprocess.Popen]] = []
cleanups: list = []


def stop_all() -> None:
    for _, p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    for _, p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for f in reversed(cleanups):
        try:
            f()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            print(f"cleanup: {e}", file=sys.stderr)


atexit.register(stop_all)
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def start(name: str, cmd: list[str], env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "w") if log else subprocess.DEVNULL
    p = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    procs.append((name, p))
    return p


def http(method: str, url: str, body: dict | None = None, token: str | None = None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(url: str, since: float, timeout: float = 120) -> float:
    """Seconds from `since` until `url` answers at all (any HTTP status)."""
    while time.time() - since < timeout:
        try:
            http("GET", url, timeout=1)
            return time.time() - since
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.01)
    raise SystemExit(f"{url} did not come up in {timeout}s")


def group_pids(leader: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == leader:  # pgid
                    pids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def cpu_seconds(leader: int) -> float:
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in group_pids(leader):
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total / tck


def rss_now(leader: int) -> str:
    anon = file = 0
    for pid in group_pids(leader):
        try:
            t = Path(f"/proc/{pid}/status").read_text()
            anon += int(re.search(r"RssAnon:\s+(\d+)", t).group(1))
            file += int(re.search(r"RssFile:\s+(\d+)", t).group(1))
        except (OSError, AttributeError):
            pass
    return f"{anon / 1024:.1f} + {file / 1024:.1f} MiB"


def peak_rss_mib(leader: int) -> float:
    kib = 0
    for pid in group_pids(leader):
        try:
            m = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
            kib += int(m.group(1)) if m else 0
        except OSError:
            pass
    return kib / 1024


def wrk(url: str, body: dict, token: str | None, conc: int, threads: list[str] | None = None) -> dict:
    env = {**os.environ, "BODY": json.dumps(body), "TOKEN": token or "", "THREADS": ",".join(threads or [])}
    out = subprocess.run(
        ["wrk", f"-t{2 if conc > 1 else 1}", f"-c{conc}", f"-d{DUR}s", "--timeout", "10s",
         "-s", str(ROOT / "bench" / "post.lua"), url],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    m = re.search(r"RESULT rps=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+) errors=(\d+)", out)
    if not m:
        raise SystemExit(f"wrk gave no result for {url}:\n{out}")
    return {"rps": float(m[1]), "p50": float(m[2]), "p99": float(m[3]), "errors": int(m[4])}


def ttfb_ms(url: str, body: dict, token: str | None, thread: str | None = None, n: int = 20) -> float:
    """Median time to the first byte of the response body, sequential requests."""
    times = []
    for _ in range(n):
        cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{time_starttransfer}", "-X", "POST", url,
               "-H", "content-type: application/json", "-d", json.dumps(body)]
        if token:
            cmd += ["-H", f"authorization: Bearer {token}"]
        if thread:
            cmd += ["-H", f"x-palisade-thread: {thread}"]
        times.append(float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))
    return statistics.median(times) * 1000


def corpus(dir: Path, chunks_wanted: int) -> list[Path]:
    """Synthetic documents of ~chunks_wanted chunks in all (100-word paragraphs, one chunk
    each), with a Zipf-like vocabulary of 5,000 terms, as real text has: common terms are
    everywhere, topic terms in few documents. One document in fifty is about travel
    approvals, the benchmark's question."""
    import random

    rnd = random.Random(42)
    vocab = [f"term{i}" for i in range(5000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    topic = "travel policy approvals international flights manager budget".split()
    dir.mkdir(parents=True, exist_ok=True)
    files = []
    per_file = 100
    for f in range(max(1, chunks_wanted // per_file)):
        paras = []
        for c in range(per_file):
            words = rnd.choices(vocab, weights, k=100)
            if f % 50 == 7:
                words[::10] = topic + topic[:3]
            paras.append(f"Section {f}.{c}. " + " ".join(words) + ".")
        p = dir / f"policy-{f:03}.txt"
        p.write_text("\n\n".join(paras))
        files.append(p)
    return files


def palisade(port: int, data: Path, extra: dict, docs: list[Path]) -> dict:
    env = {
        "PALISADE_LLM__BASE_URL": f"http://127.0.0.1:{MOCK}/v1",
        "PALISADE_LLM__MODEL": "mock-model",
        "PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE": "100000000",
        "PALISADE_THREADS__MAX_MESSAGES_PER_THREAD": "100000000",
        "PALISADE_LOG__LEVEL": "warn",
        # The hashing embedder: ingestion of 10k chunks in seconds. Retrieval does the
        # same work per query (a vector KNN and BM25 within the scope, fused).
        "PALISADE_EMBEDDINGS__KIND": "hash",
        **extra,
    }
    cli = [str(REL / "palisade"), "--data-dir", str(data)]
    for user, tenant in [("bench", "acme"), ("solo", "elsewhere")]:
        subprocess.run(cli + ["user", "add", user, "--roles", "employee", "--tenant", tenant,
                              "--password-stdin"], input=PASSWORD, text=True, env={**os.environ, **env},
                       check=True, capture_output=True)
    t0 = time.time()
    for d in docs:
        subprocess.run(cli + ["doc", "add", str(d), "--title", d.stem, "--public", "--tenant", "acme"],
                       env={**os.environ, **env}, check=True, capture_output=True)
    ingest = time.time() - t0
    listed = subprocess.run(cli + ["doc", "list", "--tenant", "acme"], env={**os.environ, **env},
                            check=True, capture_output=True, text=True).stdout
    chunks = sum(json.loads(l)["chunks"] for l in listed.splitlines() if l.strip())
    since = time.time()
    p = start(f"palisade:{port}", cli + ["serve", "--listen", f"127.0.0.1:{port}"], env, data / "log")
    startup = wait_ready(f"http://127.0.0.1:{port}/healthz", since)
    tokens = {}
    for user in ["bench", "solo"]:
        status, body = http("POST", f"http://127.0.0.1:{port}/auth/login", {"username": user, "password": PASSWORD})
        assert status == 200, body
        tokens[user] = json.loads(body)["access_token"]
    threads = []
    for _ in range(32):
        status, body = http("POST", f"http://127.0.0.1:{port}/v1/threads", {}, tokens["solo"])
        threads.append(json.loads(body)["id"])
    return {"proc": p, "startup": startup, "tokens": tokens, "threads": threads, "chunks": chunks,
            "ingest_s": ingest}


TOOLS = "completion, 20 tools (30 KB)"


def agent_tools(n: int, size: int) -> list[dict]:
    """`n` function tools with JSON schemas of about `size` bytes in all: nested objects,
    enums, descriptions, as an agent framework declares them."""
    tools = []
    for i in range(n):
        props = {}
        j = 0
        while len(json.dumps(props)) < size // n - 200:
            props[f"field_{j}"] = {
                "type": "string" if j % 3 else "integer",
                "description": f"Parameter {j} of tool {i}: what the model should put here, in a sentence.",
                **({"enum": ["low", "medium", "high"]} if j % 4 == 1 else {}),
            }
            j += 1
        tools.append({"type": "function", "function": {
            "name": f"tool_{i}", "description": f"Tool number {i} of the agent.",
            "parameters": {"type": "object", "properties": props, "required": list(props)[:2],
                           "additionalProperties": False}}})
    return tools


def ports_free() -> None:
    """Every port this script serves on is free: a leftover server there would answer
    the readiness checks and be measured in place of the one started here."""
    for port in (MOCK, PASS, EMB, CLU, LITE):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"127.0.0.1:{port} is already in use; stop what listens there first")


def main() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is required (apt-get install wrk)")
    ports_free()
    work = Path(tempfile.mkdtemp(prefix="palisade-bench-"))
    cleanups.append(lambda: shutil.rmtree(work, ignore_errors=True))
    litellm = VENV / "bin" / "litellm"

    # The mock and the pass-through.
    start("mock", [str(REL / "examples" / "mock_upstream"), f"127.0.0.1:{MOCK}"], {"MOCK_ANSWER_CHARS": "400", "MOCK_STRICT": "0"})
    wait_ready(f"http://127.0.0.1:{MOCK}/", time.time())
    since = time.time()
    pt = start("passthrough", [str(REL / "examples" / "passthrough_proxy"), f"127.0.0.1:{PASS}",
                               f"http://127.0.0.1:{MOCK}"], {"PASSTHROUGH_BEARER": PASS_TOKEN})
    pt_startup = wait_ready(f"http://127.0.0.1:{PASS}/", since)

    # The corpus: 10k chunks, in tenant acme (user bench sees it; user solo, of another
    # tenant, sees nothing, so its requests measure the gateway without retrieval work).
    docs = corpus(work / "corpus", 10_000)
    emb = palisade(EMB, work / "embedded", {}, docs)
    db = f"palisade_bench_{os.getpid()}"
    subprocess.run(["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {db}"], check=True, capture_output=True)
    cleanups.append(lambda: subprocess.run(["psql", PG_ADMIN, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                                           capture_output=True))
    prefix = f"{db}:"
    cleanups.append(lambda: subprocess.run(
        ["sh", "-c", f"redis-cli --scan --pattern '{prefix}*' | xargs -r redis-cli del >/dev/null"]))
    clu = palisade(CLU, work / "cluster", {
        "PALISADE_STORE__KIND": "cluster",
        "PALISADE_STORE__POSTGRES_URL": PG_ADMIN.rsplit("/", 1)[0] + f"/{db}",
        "PALISADE_STORE__REDIS_PREFIX": prefix,
    }, docs)

    # LiteLLM: one worker, a master key, no database.
    lite = None
    if litellm.exists():
        cfg = work / "litellm.yaml"
        cfg.write_text(
            "model_list:\n"
            "  - model_name: mock-model\n"
            "    litellm_params:\n"
            "      model: openai/mock-model\n"
            f"      api_base: http://127.0.0.1:{MOCK}/v1\n"
            "      api_key: sk-unused\n"
            "general_settings:\n"
            f"  master_key: {LITE_KEY}\n"
            "litellm_settings:\n"
            "  drop_params: true\n"
        )
        since = time.time()
        lp = start("litellm", [str(litellm), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(LITE),
                               "--num_workers", "1"], {"LITELLM_LOG": "ERROR"}, work / "litellm.log")
        lite = {"proc": lp, "startup": wait_ready(f"http://127.0.0.1:{LITE}/health/liveliness", since)}
    else:
        print(f"LiteLLM is not installed in {VENV}: its rows are skipped (bench/run installs it)", file=sys.stderr)

    plain = {"model": "mock-model", "messages": [{"role": "user", "content": "Summarise our travel policy in one sentence."}]}
    # An agent's request: 20 function tools whose schemas make about 30 KB.
    tools = {**plain, "tools": agent_tools(20, 30_000)}
    stream = {**plain, "stream": True}
    rag = {"model": "mock-model", "messages": [{"role": "user", "content": QUESTION}]}
    path = "/v1/chat/completions"
    rows = []

    def measure(system, scenario, port, body, token, conc, leader, threads=None):
        url = f"http://127.0.0.1:{port}{path}"
        before = cpu_seconds(leader)
        r = wrk(url, body, token, conc, threads)
        used = cpu_seconds(leader) - before
        reqs = r["rps"] * DUR
        r["cpu_us"] = used / reqs * 1e6 if reqs else float("nan")
        r["ttfb"] = ttfb_ms(url, body, token, threads[0] if threads else None) if conc == 1 else None
        rows.append({"system": system, "scenario": scenario, "conc": conc, **r})
        print(f"  {system:<22} {scenario:<26} c={conc:<3} {r['rps']:>9.1f} req/s", file=sys.stderr)

    for conc in (1, 32):
        for scenario, body in (("completion", plain), ("completion, streamed", stream), (TOOLS, tools)):
            measure("pass-through", scenario, PASS, body, PASS_TOKEN, conc, pt.pid)
            measure("palisade embedded", scenario, EMB, body, emb["tokens"]["solo"], conc, emb["proc"].pid)
            measure("palisade cluster", scenario, CLU, body, clu["tokens"]["solo"], conc, clu["proc"].pid)
            if lite:
                measure("LiteLLM", scenario, LITE, body, LITE_KEY, conc, lite["proc"].pid)
        for name, sys_ in (("palisade embedded", emb), ("palisade cluster", clu)):
            measure(name, "thread-bound turn", EMB if sys_ is emb else CLU, plain, sys_["tokens"]["solo"], conc,
                    sys_["proc"].pid, sys_["threads"])
        for name, sys_ in (("palisade embedded", emb), ("palisade cluster", clu)):
            measure(name, f"RAG over {sys_['chunks']:,} chunks", EMB if sys_ is emb else CLU, rag,
                    sys_["tokens"]["bench"], conc, sys_["proc"].pid)

    def kind(r):
        if r["scenario"] == TOOLS:
            return "tools"
        return "stream" if "streamed" in r["scenario"] else "plain"

    base = {(kind(r), r["conc"]): r["rps"] for r in rows if r["system"] == "pass-through"}

    def f(v, fmt="{:.2f}"):
        return "–" if v is None else fmt.format(v)

    lines = ["| system | scenario | conc | req/s | p50 ms | p99 ms | TTFB ms (c=1) | CPU µs/req | × pass-through | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        key = (kind(r), r["conc"])
        ratio = r["rps"] / base[key] if base.get(key) else None
        lines.append(f"| {r['system']} | {r['scenario']} | {r['conc']} | {r['rps']:.0f} | {r['p50']:.2f} | "
                     f"{r['p99']:.2f} | {f(r['ttfb'])} | {r['cpu_us']:.0f} | {f(ratio)} | {r['errors']} |")
    systems = [("pass-through", pt, pt_startup), ("palisade embedded", emb["proc"], emb["startup"]),
               ("palisade cluster", clu["proc"], clu["startup"])]
    if lite:
        systems.append(("LiteLLM", lite["proc"], lite["startup"]))
    lines += ["", "| system | start-up to first answer | peak RSS | RSS at the end: anonymous + file-backed |",
              "|---|---|---|---|"]
    for name, p, s in systems:
        lines.append(f"| {name} | {s * 1000:.0f} ms | {peak_rss_mib(p.pid):.1f} MiB | {rss_now(p.pid)} |")

    def rps(system, scenario, conc=32):
        return next((r["rps"] for r in rows if r["system"] == system and r["scenario"] == scenario
                     and r["conc"] == conc), None)

    verdicts = []
    if lite:
        lite_rps = rps("LiteLLM", "completion")
        for name, scenario, target in (("palisade embedded", "completion", 100),
                                       ("palisade embedded", "thread-bound turn", 50),
                                       ("palisade cluster", "completion", 100),
                                       ("palisade cluster", "thread-bound turn", 50)):
            v = rps(name, scenario)
            x = v / lite_rps if v and lite_rps else None
            verdicts.append(f"* {name}, {scenario} at c=32: {f(x, '{:.0f}')}× LiteLLM's completion "
                            f"throughput (target ≥ {target}×): {'met' if x and x >= target else 'NOT met'}")
    for name in ("palisade embedded", "palisade cluster"):
        for scenario, k in (("completion", "plain"), (TOOLS, "tools")):
            v, b = rps(name, scenario), base.get((k, 32))
            x = v / b if v and b else None
            verdicts.append(f"* {name}, {scenario} at c=32: {f(x)}× the pass-through with the same body "
                            f"(target ≥ 0.50): {'met' if x and x >= 0.5 else 'NOT met'}")
    for name, p, s in systems[1:3]:
        rss = peak_rss_mib(p.pid)
        verdicts.append(f"* {name}: peak RSS {rss:.1f} MiB (target < 64): {'met' if rss < 64 else 'NOT met'}; "
                        f"start-up {s * 1000:.0f} ms (target < 1 s): {'met' if s < 1 else 'NOT met'}")

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "?"

    lite_version = version([str(VENV / "bin" / "python"), "-c",
                            "import importlib.metadata as m; print(m.version('litellm'))"]) if lite else "not run"
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    meta = [
        f"Machine: {os.cpu_count()} cores, {cpu.group(1) if cpu else '?'}; {time.strftime('%Y-%m-%d', time.gmtime())}.",
        f"Versions: {version([str(REL / 'palisade'), '--version'])}; "
        f"LiteLLM {lite_version}; "
        f"{version(['wrk', '-v'])}; {version(['psql', '--version'])}; {version(['redis-server', '--version'])}.",
        f"Load: wrk, {DUR} s per row, loopback; the mock answers 400 characters (streamed in 16-character deltas). "
        f"Corpus: {emb['chunks']:,} chunks (embedded, ingested in {emb['ingest_s']:.0f} s through the CLI), "
        f"{clu['chunks']:,} (cluster, {clu['ingest_s']:.0f} s), hashing embedder.",
    ]
    report = "\n".join(meta + [""] + lines + [""] + verdicts)
    print(report)
    bm = ROOT / "BENCHMARKS.md"
    text = bm.read_text()
    begin, end = "<!-- bench/run:begin -->", "<!-- bench/run:end -->"
    block = f"{begin}\n{report}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += f"\n## palisade beside LiteLLM and a bare pass-through (`bench/run`)\n\n{block}\n"
    bm.write_text(text)
    print(f"\nwritten to {bm}", file=sys.stderr)


if __name__ == "__main__":
    main()
