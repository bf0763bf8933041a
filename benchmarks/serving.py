"""PolicyServer get_action throughput and latency: 1 and 16 clients, remote vs local inference.

The server (a PPO policy for CartPole's spaces with RLlib's default 256x256 network, weights
fixed, no training) runs in a child process; each client is a process of its own, with
its own ``PolicyClient`` and one long episode (``training_enabled=False``), calling
``get_action`` in a loop for ``--seconds`` after a warm-up. Remote: every action is an HTTP
round trip, answered in batches by the server's inference thread. Local: the client acts with
the pulled weights and ships ``log_action`` commands in batches of 1000 (the flushes are part of
the measured calls).

    python benchmarks/serving.py --out benchmarks/RESULTS.md

``--cpu`` measures what depends least on a shared machine's load: CPU seconds per action
(server process + client processes, from ``/proc``, over the measured window), remote inference
with 16 clients, ``--rounds`` times. Run it with ``PYTHONPATH=<tree>/src`` for each tree to
compare (alternate the trees).

    PYTHONPATH=src python benchmarks/serving.py --cpu --rounds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench_common import markdown_table, publish, section_header  # noqa: E402

HEADER = "PolicyServer get_action: requests/s and latency, remote vs local inference"


def serve(port: int) -> None:
    import gymnasium as gym

    import jrl
    from jrl.serving import PolicyServer

    class Serving(jrl.ExternalEnv):
        def __init__(self):
            super().__init__(gym.spaces.Discrete(2),
                             gym.spaces.Box(-10.0, 10.0, (4,), np.float32), max_concurrent=256)

        def run(self):
            PolicyServer(self, "127.0.0.1", port).serve_forever()

    jrl.register_env("bench-serving", lambda ctx: Serving())
    trainer = jrl.Trainer("PPO", env="bench-serving", config={"num_workers": 0},
                          log_to_disk=False)
    trainer.workers.set_policy(trainer.get_policy().acting)
    trainer.workers.local_worker().env.start()
    print("ready", flush=True)
    threading.Event().wait()


def _client(port: int, mode: str, index: int, ready, measure, stop, out) -> None:
    """One client process: one PolicyClient, one long episode, get_action in a loop."""
    from jrl.serving import PolicyClient

    client = PolicyClient(f"http://127.0.0.1:{port}", inference_mode=mode, update_interval=10.0)
    eid = client.start_episode(training_enabled=False)
    rng = np.random.default_rng(index)
    obs = rng.uniform(-0.05, 0.05, 4).astype(np.float32)
    client.get_action(eid, obs)
    ready.release()
    latencies = []
    while not stop.is_set():
        t = time.perf_counter()
        client.get_action(eid, obs)
        dt = time.perf_counter() - t
        if measure.is_set():
            latencies.append(dt)
        obs = rng.uniform(-0.05, 0.05, 4).astype(np.float32)
    client.end_episode(eid, obs)
    client.close()
    out.put(latencies)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port: int, clients: int, mode: str, seconds: float, warmup: float,
         server_pid: int | None = None) -> dict:
    """``clients`` client processes (each simulator is its own process, as in production).
    With ``server_pid``, also the CPU seconds the server and the clients spent in the window."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # this process has not imported jax: forking is safe
    ready, measure, stop, out = ctx.Semaphore(0), ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_client, args=(port, mode, i, ready, measure, stop, out),
                         daemon=True) for i in range(clients)]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=300):
            raise RuntimeError("a client did not start")
    time.sleep(warmup)
    pids = [p.pid for p in procs]
    if server_pid is not None:
        cpu0 = cpu_seconds(server_pid), sum(cpu_seconds(pid) for pid in pids)
    measure.set()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - t0
    if server_pid is not None:
        cpu1 = cpu_seconds(server_pid), sum(cpu_seconds(pid) for pid in pids)
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    all_lat = np.concatenate([np.asarray(x) for x in results]) * 1000.0
    out = {"mode": mode, "clients": clients, "requests": len(all_lat),
           "rps": len(all_lat) / elapsed, "p50": float(np.percentile(all_lat, 50)),
           "p99": float(np.percentile(all_lat, 99))}
    if server_pid is not None:
        # The clients' last calls after ``stop`` add a few requests' CPU: at most one each.
        out["server_us"] = (cpu1[0] - cpu0[0]) / len(all_lat) * 1e6
        out["clients_us"] = (cpu1[1] - cpu0[1]) / len(all_lat) * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--port", type=int, default=9931)
    parser.add_argument("--out", help="write the section into this markdown file")
    parser.add_argument("--cpu", action="store_true",
                        help="CPU seconds per action (server + clients), remote, 16 clients")
    parser.add_argument("--rounds", type=int, default=3, help="--cpu: measured windows")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
        return
    header = section_header()
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve",
                               "--port", str(args.port)], stdout=subprocess.PIPE, text=True)
    if args.cpu:
        try:
            assert server.stdout.readline().strip() == "ready", "the server did not start"
            for _ in range(args.rounds):
                r = load(args.port, 16, "remote", args.seconds, args.warmup, server.pid)
                print(f"remote 16 clients: {r['rps']:,.0f}/s p50 {r['p50']:.2f} ms p99 "
                      f"{r['p99']:.2f} ms | CPU per action: server {r['server_us']:.0f} us, "
                      f"clients {r['clients_us']:.0f} us, total "
                      f"{r['server_us'] + r['clients_us']:.0f} us | load "
                      f"{os.getloadavg()[0]:.2f}", flush=True)
        finally:
            server.kill()
        return
    try:
        assert server.stdout.readline().strip() == "ready", "the server did not start"
        results = [load(args.port, n, mode, args.seconds, args.warmup)
                   for mode in ("remote", "local") for n in (1, 16)]
    finally:
        server.kill()
    load_end = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = [(r["mode"], r["clients"], f"{r['rps']:,.0f}", f"{r['p50']:.2f}", f"{r['p99']:.2f}",
             r["requests"]) for r in results]
    table = markdown_table(("inference", "clients", "get_action/s", "p50 ms", "p99 ms",
                            "requests"), rows)
    remote16 = next(r for r in results if r["mode"] == "remote" and r["clients"] == 16)
    body = "\n".join([
        *header,
        "- server: PolicyServer (aiohttp) in a child process, PPO policy with the default "
        "256x256 network, fixed weights; clients: one process each (one PolicyClient, one "
        "long episode, `training_enabled=False`), on the same CPUs as the server",
        f"- {args.seconds:.0f} s measured per row after {args.warmup:.0f} s warm-up; the "
        "machine is shared with other work, so compare rows of one run",
        f"- load average at the end (1/5/15 min): {load_end}",
        "", table, "",
        f"Goal (16 clients, remote): >= 2,000 actions/s and p99 < 20 ms; measured "
        f"{remote16['rps']:,.0f}/s, p99 {remote16['p99']:.1f} ms.",
    ])
    publish(args.out, HEADER, body)


if __name__ == "__main__":
    main()
