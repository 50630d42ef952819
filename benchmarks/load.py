"""Bounded HTTP load test of the service: ``/api/search`` and ``/api/ask`` under concurrent clients.

Starts ``policy-assistant serve`` itself (its production settings: the same command, the
``ASSISTANT_*`` environment, N uvicorn workers) or targets a running one with ``--url``.
Loopback only: any host other than 127.0.0.1, localhost or ::1 is refused. Every run stops
by itself: at ``--duration`` seconds or ``--max-requests`` requests, whichever comes first.

    python benchmarks/load.py                                  # 32 clients, 60 s, search and ask
    python benchmarks/load.py --mix search --rate 120          # search only, 120 requests/s offered
    python benchmarks/load.py --texts unique --mix search      # every question new (no cache hits)
    python benchmarks/load.py --url http://127.0.0.1:7860 --json out.json
    python benchmarks/load.py --backend postgres --compare-workers 1,4 --mix search   # stateless workers

With ``--backend postgres`` the started server reads the index version published in PostgreSQL
(``ASSISTANT_BACKEND_DSN``, or ``--dsn``; ``scripts/postgres.sh start`` prints one), so its workers
hold no index files of their own; ``--compare-workers 1,4`` runs the whole measurement once per
worker count, each against a fresh server, and prints their throughput side by side.

Two ways to drive the clients:

- closed loop (default): each client sends its next request as soon as the last one is
  answered, so the run finds the service's capacity; by Little's law the mean latency is
  then ``clients / throughput``.
- paced (``--rate R``): the clients together offer R requests/s on a fixed schedule, as a
  population of callers does; latency is measured from the scheduled send time, so a
  stalled server cannot hide its queue (no coordinated omission).

Questions are the texts of ``eval/questions.jsonl`` (Chinese, English, mixed, colloquial,
out of scope). ``--texts repeat`` cycles through them, as a hotline hears the same questions
again, and primes every question once before measuring; ``--texts unique`` makes every
request text new (natural greetings and thanks around the question), so no query-embedding
cache ever hits: the cost of unseen questions.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
ENDPOINTS = {"search": "/api/search", "ask": "/api/ask"}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
MAX_DURATION_S = 600.0
MAX_REQUESTS = 500_000
MAX_CLIENTS = 512
START_TIMEOUT_S = 600.0

# Ways people wrap a question; ``--texts unique`` combines them so that every text is new.
PREFIXES = {"zh": ["", "你好，", "请问", "您好，请问", "咨询一下，", "想了解一下，", "麻烦问下，", "打扰一下，"],
            "en": ["", "Hello, ", "Hi, ", "Quick question: ", "Could you tell me: ", "I'd like to know: ",
                   "Please advise: ", "Good morning. "]}
SUFFIXES = {"zh": ["", "谢谢。", "谢谢！", "急，谢谢", "麻烦了", "多谢"],
            "en": ["", " Thanks.", " Thank you!", " Many thanks.", " Cheers.", " Thanks in advance."]}


# --- safety ---------------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual names of the loopback interface only."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SystemExit(f"error: --url must look like http://127.0.0.1:7860, not {url!r}")
    if not is_loopback(parsed.hostname):
        raise SystemExit(f"error: refusing to load {parsed.hostname}: this script only targets loopback "
                         "(127.0.0.1, localhost, ::1)")
    return url.rstrip("/")


# --- questions ------------------------------------------------------------------------------------------
def load_questions(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every question in the eval set."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [("en" if row.get("lang") == "en" else "zh", row["question"]) for row in rows]


def question_stream(questions: list[tuple[str, str]], unique: bool, seed: int) -> Iterator[str]:
    """Endless question texts; with ``unique`` no text repeats until the variants run out."""
    rng = random.Random(seed)
    order = list(questions)
    if not unique:
        while True:
            rng.shuffle(order)
            for _, text in order:
                yield text
    variants = [(lang, text, p, s) for lang, text in order
                for p in range(len(PREFIXES[lang])) for s in range(len(SUFFIXES[lang]))]
    variants = [v for v in variants if v[2] or v[3]]  # never the bare text (it may be cached from priming)
    rng.shuffle(variants)
    for lang, text, p, s in variants:
        yield f"{PREFIXES[lang][p]}{text}{SUFFIXES[lang][s]}"
    sys.stderr.write("warning: unique question variants exhausted; texts repeat from here\n")
    yield from question_stream(questions, False, seed)


def body_for(endpoint: str, text: str) -> dict[str, Any]:
    return {"query": text, "top_k": 10} if endpoint == "search" else {"question": text}


# --- the server -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command() -> list[str]:
    cli = Path(sys.executable).with_name("policy-assistant")
    if cli.exists():
        return [str(cli)]
    found = shutil.which("policy-assistant")
    return [found] if found else [sys.executable, "-m", "assistant.cli"]


def group_cpu_seconds(pgid: int) -> float | None:
    """User+system CPU of a process group (the server and all its workers), from /proc."""
    total, tick, found = 0.0, os.sysconf("SC_CLK_TCK"), False
    try:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:  # process group id
                found = True
                total += (int(fields[11]) + int(fields[12])) / tick
    except OSError:
        return None
    return total if found else None


class Server:
    """``policy-assistant serve`` in its own process group, stopped (TERM, then KILL) on exit."""

    def __init__(self, workers: int, port: int, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        command = [*serve_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        print(f"starting: {' '.join(command)} (log {log_path})", file=sys.stderr)
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=REPO)

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"error: the server exited with {self.proc.returncode}; see {self.log_path}:\n"
                                 + self.log_path.read_text(errors="replace")[-3000:])
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=5)
                if health.status_code == 200:
                    return health.json()
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"error: the server did not become healthy within {timeout:.0f} s; see {self.log_path}")

    def cpu_seconds(self) -> float | None:
        return group_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


# --- the clients ----------------------------------------------------------------------------------------
@dataclass
class Sample:
    endpoint: str
    started: float  # seconds since the run started (scheduled time when paced)
    latency_ms: float  # from the scheduled send time when paced (includes waiting for a free client)
    service_ms: float  # from the actual send to the answer
    outcome: str  # "ok", an HTTP status, or an exception name


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0
    seconds: float = 0.0


def pick_endpoints(mix: dict[str, float], rng: random.Random) -> Iterator[str]:
    names, weights = list(mix), list(mix.values())
    while True:
        yield rng.choices(names, weights)[0]


def check_body(endpoint: str, response: httpx.Response) -> str:
    """``ok`` for a 2xx with the expected JSON shape, otherwise what was wrong."""
    if response.status_code == 503 and "busy" in response.text:
        return "HTTP 503 busy (shed)"  # ASSISTANT_MAX_IN_FLIGHT: refused at once, with Retry-After
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return "non-JSON body"
    wanted = "results" if endpoint == "search" else "answer"
    return "ok" if isinstance(body, dict) and wanted in body else "unexpected body"


class SharedTexts:
    """One question stream shared by the client threads (a generator must not run in two at once)."""

    def __init__(self, texts: Iterator[str]) -> None:
        self._texts = texts
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            return next(self._texts)


def send(client: httpx.Client, endpoint: str, text: str) -> str:
    try:
        return check_body(endpoint, client.post(ENDPOINTS[endpoint], json=body_for(endpoint, text)))
    except httpx.HTTPError as exc:
        return type(exc).__name__


def client_loop(client: httpx.Client, run: Run, texts: SharedTexts, endpoints: Iterator[str], run_t0: float,
                first: float, stop_at: float, budget: Iterator[int], interval: float | None, record: bool) -> None:
    """One client: closed loop (``interval`` None) or one request every ``interval`` seconds from ``first``."""
    scheduled = first
    while True:
        if interval:
            time.sleep(max(0.0, scheduled - time.perf_counter()))
        start = scheduled if interval else time.perf_counter()
        if start >= stop_at or next(budget, None) is None:
            return
        endpoint = next(endpoints)
        text = texts.next()
        sent = time.perf_counter()
        outcome = send(client, endpoint, text)
        done = time.perf_counter()
        if record:
            run.samples.append(Sample(endpoint, start - run_t0, (done - start) * 1000, (done - sent) * 1000, outcome))
        if interval:
            scheduled += interval


def drive(url: str, clients: int, duration: float, max_requests: int, mix: dict[str, float],
          texts: Iterator[str], rate: float | None, timeout: float, seed: int, record: bool = True) -> Run:
    """``clients`` concurrent client threads against ``url`` until the time or the request budget is spent.

    Threads, not asyncio: httpx's blocking client costs about half the CPU per request of its
    async one (measured here: 1.0 vs 2.1 ms), and the load generator shares the machine's cores
    with the server it measures.
    """
    run = Run()
    shared = SharedTexts(texts)
    budget = iter(range(max_requests))  # next() on a range iterator is atomic under the GIL
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(base_url=url, timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter() + 0.05
        interval = clients / rate if rate else None
        threads = []
        for number in range(clients):
            endpoints = pick_endpoints(mix, random.Random(seed * 1000 + number))
            first = t0 + (interval * number / clients if interval else 0.0)  # spread the clients over one interval
            threads.append(threading.Thread(target=client_loop, name=f"client-{number}", daemon=True, args=(
                client, run, shared, endpoints, t0, first, t0 + duration, budget, interval, record)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + duration + 60)
        run.seconds = time.perf_counter() - t0
    return run


def prime(url: str, clients: int, mix: dict[str, float], questions: list[tuple[str, str]],
          timeout: float) -> Counter[str]:
    """Send every distinct question once to each endpoint (not measured): a warm service."""
    work = iter([(endpoint, text) for endpoint in mix for _, text in questions])
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(base_url=url, timeout=timeout, limits=limits) as client:

        def worker() -> None:
            while True:
                with lock:
                    item = next(work, None)
                if item is None:
                    return
                outcome = send(client, *item)
                with lock:
                    outcomes[outcome] += 1

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return outcomes


# --- the report -----------------------------------------------------------------------------------------
def summarise(samples: list[Sample], seconds: float) -> dict[str, Any]:
    latencies = np.array([s.latency_ms for s in samples]) if samples else np.array([0.0])
    outcomes = Counter(s.outcome for s in samples)
    ok = outcomes.pop("ok", 0)

    def pct(q: float) -> float:
        return round(float(np.percentile(latencies, q)), 1)

    service = np.array([s.service_ms for s in samples]) if samples else np.array([0.0])
    return {"requests": len(samples), "ok": ok, "errors": sum(outcomes.values()), "error_kinds": dict(outcomes),
            "throughput_rps": round(len(samples) / seconds, 1) if seconds else 0.0,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "max_ms": round(float(latencies.max()), 1),
            "mean_ms": round(float(latencies.mean()), 1),
            "service_p50_ms": round(float(np.percentile(service, 50)), 1),
            "service_p95_ms": round(float(np.percentile(service, 95)), 1)}


def print_report(report: dict[str, Any]) -> None:
    config = report["config"]
    mode = f"paced at {config['rate']} req/s offered" if config["rate"] else "closed loop"
    print(f"\n{config['clients']} clients, {report['seconds']:.1f} s, {mode}, texts {config['texts']}"
          f"{' (primed)' if config['primed'] else ''}, target {report['target']}")
    print(f"{'endpoint':<10} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8}")
    for name, row in report["endpoints"].items():
        print(f"{name:<10} {row['requests']:>9} {row['errors']:>7} {row['throughput_rps']:>8.1f} {row['p50_ms']:>8.1f} "
              f"{row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['max_ms']:>8.1f}")
        if config["rate"]:
            print(f"{'':<10} service time (sent to answered): p50 {row['service_p50_ms']:.1f} ms, "
                  f"p95 {row['service_p95_ms']:.1f} ms")
        if row["error_kinds"]:
            print(f"{'':<10} errors: {row['error_kinds']}")
    machine = report["machine"]
    print(f"CPU seconds: server {report['server_cpu_s']} ({report['server_cpu_ms_per_request']} ms a request), "
          f"load client {report['client_cpu_s']}; "
          f"load average before {machine['loadavg_before']}, after {machine['loadavg_after']}")


def parse_mix(text: str) -> dict[str, float]:
    """``search=3,ask=1`` (or ``search``) as weights per endpoint."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in ENDPOINTS:
            raise argparse.ArgumentTypeError(f"unknown endpoint {name!r}: use {', '.join(ENDPOINTS)}")
        mix[name] = float(weight) if weight else 1.0
        if mix[name] <= 0:
            raise argparse.ArgumentTypeError(f"the weight of {name} must be positive")
    return mix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service on loopback (default: start policy-assistant serve)")
    parser.add_argument("--workers", type=int, default=None,
                        help="uvicorn workers of the started server (default ASSISTANT_WORKERS, 1)")
    parser.add_argument("--port", type=int, default=None, help="port of the started server (default: a free one)")
    parser.add_argument("--server-pgid", type=int, default=None,
                        help="with --url: process group of the server, to report its CPU time")
    parser.add_argument("--max-in-flight", type=int, default=None,
                        help="ASSISTANT_MAX_IN_FLIGHT of the started server (0 = never shed; default: the setting's)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60, at most 600)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    parser.add_argument("--mix", type=parse_mix, default=parse_mix("search=1,ask=1"),
                        help="endpoints and weights, e.g. search=3,ask=1 or search (default search=1,ask=1)")
    parser.add_argument("--rate", type=float, default=None,
                        help="offered requests/s of all clients together (default: closed loop, as fast as answered)")
    parser.add_argument("--texts", choices=("repeat", "unique"), default="repeat",
                        help="repeat the eval questions, or make every text new (no cache hits)")
    parser.add_argument("--no-prime", dest="prime", action="store_false",
                        help="do not send every question once before measuring")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    parser.add_argument("--questions", type=Path, default=REPO / "eval" / "questions.jsonl")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    parser.add_argument("--target-p95-ms", type=float, default=100.0, help="search p95 target (reported, not enforced)")
    parser.add_argument("--target-rps", type=float, default=100.0, help="search throughput target (reported)")
    parser.add_argument("--backend", choices=("embedded", "postgres"), default=None,
                        help="ASSISTANT_BACKEND of the started server (default: the environment's)")
    parser.add_argument("--dsn", help="with --backend postgres: ASSISTANT_BACKEND_DSN of the started server")
    parser.add_argument("--compare-workers", default=None,
                        help="e.g. 1,4: measure once per worker count (fresh servers) and compare throughput")
    args = parser.parse_args(argv)

    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be 1-{MAX_CLIENTS}")
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be in (0, {MAX_DURATION_S:g}] seconds")
    if not 1 <= args.max_requests <= MAX_REQUESTS:
        parser.error(f"--max-requests must be 1-{MAX_REQUESTS}")
    if args.rate is not None and not 0 < args.rate <= 10_000:
        parser.error("--rate must be in (0, 10000]")
    if args.compare_workers:
        return compare_workers(parser, args, list(sys.argv[1:] if argv is None else argv))
    backend_env(args)
    questions = load_questions(args.questions)
    unique = args.texts == "unique"

    server: Server | None = None
    tmp = Path(tempfile.mkdtemp(prefix="load-"))
    try:
        if args.url:
            url = check_url(args.url)
        else:
            if args.workers is not None and not 1 <= args.workers <= 32:
                parser.error("--workers must be 1-32")
            if args.workers is not None:
                os.environ["ASSISTANT_WORKERS"] = str(args.workers)
            if args.max_in_flight is not None:
                os.environ["ASSISTANT_MAX_IN_FLIGHT"] = str(args.max_in_flight)
            server = Server(args.workers or int(os.environ.get("ASSISTANT_WORKERS", "1")), args.port or free_port(),
                            tmp / "serve.log")
            server.wait_ready(START_TIMEOUT_S)
            url = server.url
        health = httpx.get(f"{url}/healthz", timeout=30).json()
        primed: dict[str, int] = {}
        if args.prime and not unique:
            print(f"priming: {len(questions)} questions x {len(args.mix)} endpoints", file=sys.stderr)
            primed = dict(prime(url, args.clients, args.mix, questions, args.timeout))
        else:  # load the models' lazy parts without filling the caches the run will use
            drive(url, min(args.clients, 4), 2.0, 20, args.mix,
                  question_stream([(lang, f"warm-up {i}") for i, (lang, _) in enumerate(questions[:20])], False,
                                  args.seed), None, args.timeout, args.seed, record=False)
        pgid = server.proc.pid if server else args.server_pgid
        server_cpu_before = group_cpu_seconds(pgid) if pgid else None
        client_cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        loadavg_before = [round(x, 2) for x in os.getloadavg()]
        print(f"measuring: {args.clients} clients for {args.duration:g} s against {url}", file=sys.stderr)
        run = drive(url, args.clients, args.duration, args.max_requests, args.mix,
                    question_stream(questions, unique, args.seed), args.rate, args.timeout, args.seed)
        client_cpu = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu_after = group_cpu_seconds(pgid) if pgid else None
        seconds = run.seconds
        endpoints = {name: summarise([s for s in run.samples if s.endpoint == name], seconds) for name in args.mix}
        if len(args.mix) > 1:
            endpoints["all"] = summarise(run.samples, seconds)
        search = endpoints.get("search")
        target = "n/a (no search traffic)"
        if search:
            met = (search["errors"] == 0 and search["p95_ms"] <= args.target_p95_ms
                   and search["throughput_rps"] >= args.target_rps)
            target = (f"search p95 <= {args.target_p95_ms:g} ms at >= {args.target_rps:g} req/s, no errors: "
                      f"{'MET' if met else 'MISSED'}")
        report = {
            "config": {"url": url, "clients": args.clients, "duration_s": args.duration, "rate": args.rate,
                       "mix": args.mix, "texts": args.texts, "primed": bool(primed), "max_requests": args.max_requests,
                       "backend": health.get("backend") or os.environ.get("ASSISTANT_BACKEND", "embedded"),
                       "workers": (args.workers or int(os.environ.get("ASSISTANT_WORKERS", "1"))) if server else None,
                       "started_server": server is not None, "command": " ".join([Path(sys.argv[0]).name,
                                                                                   *(argv or sys.argv[1:])])},
            "seconds": round(seconds, 2),
            "endpoints": endpoints,
            "target": target,
            "primed_outcomes": primed,
            "server_cpu_s": round(server_cpu_after - server_cpu_before, 1)
            if server_cpu_before is not None and server_cpu_after is not None else None,
            "server_cpu_ms_per_request": round((server_cpu_after - server_cpu_before) * 1000 / len(run.samples), 2)
            if server_cpu_before is not None and server_cpu_after is not None and run.samples else None,
            "client_cpu_s": round(client_cpu.ru_utime + client_cpu.ru_stime
                                  - client_cpu_before.ru_utime - client_cpu_before.ru_stime, 1),
            "machine": {"cpus": os.cpu_count(), "loadavg_before": loadavg_before,
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "python": sys.version.split()[0]},
            "service": {"index_build": health.get("index", {}).get("build"), "retrievers": health.get("retrievers"),
                        "answers": health.get("answers")},
        }
        print_report(report)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
        return 0 if all(row["errors"] == 0 for row in endpoints.values()) else 1
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def backend_env(args: argparse.Namespace) -> None:
    """``--backend`` and ``--dsn`` as the started server's environment (this script's own process)."""
    if args.url:
        return
    if args.backend is not None:
        os.environ["ASSISTANT_BACKEND"] = args.backend
    if args.dsn:
        os.environ["ASSISTANT_BACKEND_DSN"] = args.dsn


def _without(argv: list[str], *flags: str) -> list[str]:
    """``argv`` without ``flags`` and their values (``--flag value`` and ``--flag=value``)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in flags:
            skip = True
        elif not item.startswith(tuple(f"{flag}=" for flag in flags)):
            out.append(item)
    return out


def compare_workers(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    """One full measurement per worker count (``--compare-workers 1,4``), each on a fresh server; a summary."""
    if args.url:
        parser.error("--compare-workers starts its own servers: leave out --url")
    try:
        counts = [int(n) for n in args.compare_workers.split(",") if n.strip()]
    except ValueError:
        parser.error("--compare-workers must be worker counts, e.g. 1,4")
    if not counts or not all(1 <= n <= 32 for n in counts):
        parser.error("--compare-workers: each count must be 1-32")
    base = _without(argv, "--compare-workers", "--workers", "--json")
    reports, code = [], 0
    with tempfile.TemporaryDirectory(prefix="load-compare-") as tmp:
        for workers in counts:
            out = Path(tmp) / f"{workers}.json"
            code |= main([*base, "--workers", str(workers), "--json", str(out)])
            reports.append((workers, json.loads(out.read_text(encoding="utf-8"))))
    backend = reports[0][1]["config"].get("backend")
    print(f"\nworkers compared ({backend} backend, {args.clients} clients, {args.duration:g} s each)")
    print(f"{'workers':>7} {'endpoint':<8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'errors':>7} {'CPU ms/req':>10}")
    for workers, report in reports:
        for name, row in report["endpoints"].items():
            print(f"{workers:>7} {name:<8} {row['throughput_rps']:>8.1f} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} "
                  f"{row['errors']:>7} {report['server_cpu_ms_per_request'] or 0:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps([r for _, r in reports], ensure_ascii=False, indent=2), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
