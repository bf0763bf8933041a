"""The jitted PPO through the CLI against the loop itself and a minimal jitted PPO, whole
processes, in one run.

Each measurement is a fresh process (imports, env creation, compile, 8 seeds x ~500k steps of
gymnax CartPole-v1 with PureJaxRL's hyperparameters, and for the CLI its logging and checkpoint),
with no persistent compilation cache, timed from outside (wall time and peak RSS of the process):

- ``cli``: ``jrl train -f configs/gymnax-cartpole-ppo.yaml`` (with ``JRL_PROFILE=1``, whose
  timing breakdown is kept);
- ``loop``: the same compiled chunks driven directly (``make_anakin`` +
  ``jax.jit(jax.vmap(train_chunk))``, 10 chunks), no Trainer, no logging, no checkpoint;
- ``minimal``: the team's from-scratch jitted PPO (``anakin.reference_train``), one call;
- ``rejax`` (with ``--rejax-python``, a Python whose environment has ``rejax`` and
  ``gymnax==0.0.9``): ``PPO.create(...)`` with the same hyperparameters,
  ``jax.jit(jax.vmap(algo.train))``.

``--trees before=../old after=.`` runs ``cli`` and ``loop`` for every tree (``PYTHONPATH`` set to
its ``src/``), interleaved with the peers, so a before/after comparison shares the load.

    python benchmarks/cli_overhead.py --repeats 1 --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

SECTION = "`jrl train -f configs/gymnax-cartpole-ppo.yaml`: whole command vs the loop and peers"
CONFIG = "configs/gymnax-cartpole-ppo.yaml"
SEEDS = 8

REJAX_CHILD = r"""
import time, json, sys
t0 = time.perf_counter()
import jax, jax.numpy as jnp
from rejax import PPO
algo = PPO.create(env="CartPole-v1", num_envs=4, num_steps=128, num_epochs=4,
                  num_minibatches=4, learning_rate=2.5e-4, max_grad_norm=0.5,
                  total_timesteps=499712, eval_freq=499712, gamma=0.99, gae_lambda=0.95,
                  clip_eps=0.2, ent_coef=0.01, vf_coef=0.5,
                  agent_kwargs={"activation": "tanh", "hidden_layer_sizes": (64, 64)})
keys = jax.random.split(jax.random.PRNGKey(0), 8)
train_state, evaluation = jax.block_until_ready(jax.jit(jax.vmap(algo.train))(keys))
lengths, returns = evaluation
print(json.dumps({"final_returns": [float(x) for x in jnp.asarray(returns)[:, -1].mean(-1)]}))
"""


def child_loop() -> dict:
    """The loop itself: the CLI's compiled chunks, driven directly."""
    import jax
    import numpy as np
    import yaml

    from jrl.backends import jit_init
    from jrl.execution.anakin import make_anakin, steps_per_env
    from jrl.registry import get_algorithm_def, parse_config
    from jrl.rollout.jax_envs import make_jax_env

    with open(os.path.join(common.REPO_ROOT, CONFIG)) as f:
        entry = next(iter(yaml.safe_load(f).values()))
    config = parse_config("PPO", entry["config"], {"env": entry["env"]})
    total = entry["stop"]["timesteps_total"]
    definition = get_algorithm_def("PPO")
    per_iteration = steps_per_env(definition, config) * config.num_envs_per_worker
    iterations = -(-config.timesteps_per_iteration // per_iteration)
    anakin = make_anakin(definition, make_jax_env(entry["env"]), config, iterations)
    keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
    runners = jit_init(jax.vmap(anakin.init))(keys)
    chunk = jax.jit(jax.vmap(anakin.train_chunk), donate_argnums=0)
    steps, rewards = 0, None
    while steps < total:
        runners, metrics = chunk(runners)
        metrics = jax.device_get(metrics)
        steps += iterations * per_iteration
        rewards = metrics["episode_reward_sum"].sum(1) / np.maximum(metrics["episodes"].sum(1), 1)
    return {"steps": steps, "final_returns": [float(r) for r in rewards]}


def child_minimal() -> dict:
    import anakin as reference
    import jax

    fn, args = reference.reference_train(SEEDS)
    jax.block_until_ready(fn(*args))
    return {"steps": reference.UPDATES * reference.NUM_ENVS * reference.NUM_STEPS}


def measured(cmd: list[str], env: dict[str, str], cwd: str) -> dict:
    """Runs ``cmd`` under ``/usr/bin/time``; returns its wall time, peak RSS and output."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt", delete=False) as tmp:
        rss_path = tmp.name
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", rss_path, *cmd],
                          capture_output=True, text=True, env={**os.environ, **env}, cwd=cwd)
    wall = time.perf_counter() - start
    try:
        with open(rss_path) as f:
            rss_kb, user_s, sys_s = (float(x) for x in f.read().split()[-3:])
        peak, cpu = rss_kb / 1024, user_s + sys_s
    except (OSError, ValueError):
        peak = cpu = None
    finally:
        os.unlink(rss_path)
    return {"wall_s": wall, "cpu_s": cpu, "rc": proc.returncode, "stdout": proc.stdout,
            "stderr_tail": proc.stderr[-3000:], "peak_rss_mb": peak}


def parse_profile(stdout: str) -> dict[str, float]:
    """The ``JRL_PROFILE`` lines ``  <phase> <seconds> s`` printed by ``jrl train``."""
    spans = {}
    block = stdout.split("Where the time went", 1)
    if len(block) == 2:
        for line in block[1].splitlines()[1:]:
            m = re.match(r"\s+(.+?)\s+([0-9.]+) s\b", line)
            if m:
                spans[m.group(1)] = float(m.group(2))
    return spans


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--trees", nargs="+", default=[f"this={common.REPO_ROOT}"],
                   help="label=path of jrl source trees to run cli and loop on")
    p.add_argument("--rejax-python", default=None,
                   help="a Python with rejax and gymnax==0.0.9 installed (skipped without)")
    p.add_argument("--skip", nargs="*", default=[], help="systems to leave out")
    p.add_argument("--out", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--child", choices=["loop", "minimal"], default=None)
    args = p.parse_args()
    if args.child:
        record = child_loop() if args.child == "loop" else child_minimal()
        print("RECORD " + json.dumps(record))
        return

    trees = [t.split("=", 1) for t in args.trees]
    here = os.path.abspath(__file__)
    base_env = {"JRL_COMPILATION_CACHE_DIR": "0", "JAX_COMPILATION_CACHE_DIR": ""}
    systems: list[tuple[str, list[str], dict[str, str]]] = []
    for label, path in trees:
        src = os.path.join(os.path.abspath(path), "src")
        env = {**base_env, "PYTHONPATH": src, "JRL_PROFILE": "1"}
        results = tempfile.mkdtemp(prefix="jrl-cli-bench-")
        systems.append((f"jrl CLI ({label})", [sys.executable, "-m", "jrl", "train", "-f",
                                               os.path.join(common.REPO_ROOT, CONFIG),
                                               "--local-dir", results, "--quiet"], env))
        systems.append((f"jrl loop ({label})", [sys.executable, here, "--child", "loop"],
                        {**base_env, "PYTHONPATH": src}))
    systems.append(("minimal jitted PPO", [sys.executable, here, "--child", "minimal"],
                    {**base_env, "PYTHONPATH": os.path.join(common.REPO_ROOT, "src")}))
    if args.rejax_python:
        systems.append(("Rejax", [args.rejax_python, "-c", REJAX_CHILD], {}))
    systems = [s for s in systems if not any(k in s[0] for k in args.skip)]

    header = common.section_header()
    started = time.perf_counter()
    records: list[dict] = []
    for rep in range(args.repeats):
        order = systems if rep % 2 == 0 else systems[::-1]
        for name, cmd, env in order:
            r = measured(cmd, env, common.REPO_ROOT)
            r.update(system=name, repeat=rep)
            r["profile"] = parse_profile(r["stdout"])
            records.append(r)
            status = "ok" if r["rc"] == 0 else f"FAILED rc={r['rc']}: {r['stderr_tail'][-500:]}"
            print(f"[{name} #{rep}] {r['wall_s']:.1f} s, {status}", flush=True)
    total = time.perf_counter() - started
    common.dump_json(args.json, records)

    def wall(name: str, key: str = "wall_s") -> float | None:
        return common.median(r[key] for r in records if r["system"] == name and r["rc"] == 0
                             and r.get(key) is not None)

    rows = []
    for name, *_ in systems:
        runs = [r for r in records if r["system"] == name]
        w = wall(name)
        rss = [r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb")]
        rows.append([name, " / ".join(f"{r['wall_s']:.1f}" if r["rc"] == 0 else "failed"
                                      for r in runs),
                     common.format_optional(w, ".1f"),
                     common.format_optional(wall(name, "cpu_s"), ".1f"),
                     f"{max(rss):.0f}" if rss else "—"])
    lines = [*header,
             "- each run a fresh process, timed from outside; no persistent compilation cache; "
             f"8 seeds x ~500k env steps; {args.repeats} repeat(s), order reversed on odd repeats",
             "- the machine is shared and noisy (other engineers run tests): compare rows of "
             "this run only",
             f"- whole benchmark wall time: {total:.0f} s", "",
             common.markdown_table(["system", "runs, wall (s)", "median wall (s)",
                                    "median CPU time, user + sys (s)", "peak RSS (MB)"], rows),
             ""]
    peers = [n for n in ("minimal jitted PPO", "Rejax") if wall(n)]
    for label, _ in trees:
        for key, what in (("wall_s", "wall"), ("cpu_s", "CPU time")):
            cli, loop = wall(f"jrl CLI ({label})", key), wall(f"jrl loop ({label})", key)
            if cli and loop:
                lines.append(f"- {label}: CLI / loop = {cli / loop:.2f}x ({what})")
            for peer in peers:
                if cli and wall(peer, key):
                    lines.append(f"- {label}: CLI / {peer} = {cli / wall(peer, key):.2f}x ({what})")
    for label, _ in trees:
        prof = [r["profile"] for r in records if r["system"] == f"jrl CLI ({label})"
                and r["profile"]]
        if prof:
            lines += ["", f"`JRL_PROFILE=1` breakdown of the CLI run ({label}, first repeat):", "",
                      common.markdown_table(["phase", "s"],
                                            [[k, f"{v:.2f}"] for k, v in prof[0].items()])]
    common.publish(args.out, SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
