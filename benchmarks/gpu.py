"""jrl on a GPU: the jitted PPO loop with 1 / 64 / 1024 seeds (against a PureJaxRL-style
loop), the CLI around it, the learner's update, and the gymnasium path acting on the host or on
the GPU. Issue 18, item 4; run where a GPU machine is lent.

    python benchmarks/gpu.py --out gpu.md [--seeds 1 64 1024] [--parts anakin cli learner gym]

Every part is timed in this one process (the CLI part in a child process), compile separately
from running; results are printed as they come and the markdown section is rewritten after each
part, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _bench_common as common  # noqa: E402

SECTION = "GPU: jitted PPO with 1 / 64 / 1024 seeds, the CLI, the learner, acting device"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "no nvidia-smi"


def part_anakin(seeds: list[int], lines: list[str]) -> None:
    import anakin

    rows = []
    for n in seeds:
        ref = anakin.measure(anakin.reference_train, n)
        ours = anakin.measure(anakin.jrl_train, n)
        print("anakin", n, json.dumps({"reference": ref, "jrl": ours}), flush=True)
        rows.append([n, f"{ref['compile_s']:.1f}", f"{ref['run_s']:.2f}",
                     f"{ref['steps_per_s']:,.0f}", f"{ours['compile_s']:.1f}",
                     f"{ours['run_s']:.2f}", f"{ours['steps_per_s']:,.0f}",
                     f"{ours['steps_per_s'] / ref['steps_per_s']:.2f}×", f"{ours['solved']}/{n}"])
    lines += [
        "### Jitted PPO, gymnax CartPole-v1 (`benchmarks/anakin.py` programs)", "",
        f"{anakin.NUM_ENVS} envs x {anakin.NUM_STEPS} steps, {anakin.EPOCHS} epochs x "
        f"{anakin.MINIBATCHES} minibatches, {anakin.UPDATES * anakin.NUM_ENVS * anakin.NUM_STEPS:,}"
        " env steps per seed, whole run in one jitted call; compile excluded from steps/s.", "",
        common.markdown_table(
            ["seeds", "reference compile (s)", "reference run (s)", "reference steps/s",
             "jrl compile (s)", "jrl run (s)", "jrl steps/s", "jrl / reference",
             "jrl seeds >= 475"], rows), ""]


def part_cli(seeds: list[int], lines: list[str]) -> None:
    rows = []
    for n in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "jrl.cli", "train", "-f",
                   os.path.join(ROOT, "configs/gymnax-cartpole-ppo.yaml"), "--local-dir", tmp,
                   "--config", json.dumps({"num_seeds": n})]
            env = dict(os.environ, JRL_PROFILE="1", PYTHONUNBUFFERED="1")
            start = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                                 cwd=tmp)
            wall = time.perf_counter() - start
        tail = (out.stdout + out.stderr)[-6000:]
        print(f"cli seeds={n} rc={out.returncode} wall={wall:.1f}s\n{tail}", flush=True)
        rows.append([n, out.returncode, f"{wall:.1f}"])
        lines += [f"<details><summary>jrl train, {n} seeds: JRL_PROFILE table</summary>", "",
                  "```", tail[-3500:], "```", "</details>", ""]
    lines += ["### `jrl train -f configs/gymnax-cartpole-ppo.yaml --config "
              "'{\"num_seeds\": N}'`, whole command", "",
              common.markdown_table(["seeds", "exit", "wall (s)"], rows), ""]


def part_learner(lines: list[str], batch: int, minibatch: int, epochs: int) -> None:
    """PPO's update (epochs x minibatches of SGD) on one big batch: GPU vs the host's CPUs."""
    import gymnasium as gym
    import jax

    from jrl.algorithms.examples import random_fragment
    from jrl.registry import make_algorithm, parse_config
    from jrl.rollout.envs import env_spec

    rows = []
    for hidden in ([64, 64], [256, 256], [1024, 1024]):
        devices = [jax.devices()[0]]
        if hidden[0] <= 256 or jax.default_backend() == "cpu":
            devices.append(jax.devices("cpu")[0])  # the host's CPUs, for comparison
        config = parse_config("PPO", {"train_batch_size": batch, "sgd_minibatch_size": minibatch,
                                      "num_sgd_iter": epochs,
                                      "model": {"fcnet_hiddens": hidden}})
        spec = env_spec((64,), "float32", gym.spaces.Discrete(8))
        algo = make_algorithm("PPO", config, spec)
        for device in dict.fromkeys(devices):
            with jax.default_device(device):
                state = jax.jit(algo.init)(jax.random.PRNGKey(0))
                frag = jax.jit(random_fragment, static_argnums=(0, 1, 2))(
                    spec, 256, batch // 256, jax.random.PRNGKey(1))
                update = jax.jit(algo.update)
                start = time.perf_counter()
                compiled = update.lower(state, frag).compile()
                compile_s = time.perf_counter() - start
                state, _ = jax.block_until_ready(compiled(state, frag))
                reps = 5 if device.platform != "cpu" else 2
                start = time.perf_counter()
                for _ in range(reps):
                    state, metrics = compiled(state, frag)
                jax.block_until_ready(state)
                per = (time.perf_counter() - start) / reps
            print("learner", hidden, device.platform, compile_s, per, flush=True)
            rows.append([str(hidden), device.platform, f"{compile_s:.1f}", f"{per * 1e3:.1f}",
                         f"{batch * epochs / per:,.0f}"])
    lines += [f"### PPO update on one batch: {batch:,} samples, minibatch {minibatch:,}, "
              f"{epochs} epochs (64 float inputs, 8 actions)", "",
              common.markdown_table(["fcnet_hiddens", "device", "compile (s)",
                                     "update (ms)", "SGD samples/s"], rows), ""]


def part_gym(lines: list[str], iters: int, num_gpus: int) -> None:
    """The gymnasium path (host CartPole-v1, local worker) with the learner on the GPU: acting on
    the host (``num_gpus_per_worker: 0``, the default) vs on the GPU."""
    import jrl
    from jrl.logger import PHASES

    rows = []
    for acting in ("cpu", "gpu"):
        config = {"num_gpus": num_gpus, "num_gpus_per_worker": 0 if acting == "cpu" else 1,
                  "num_envs_per_worker": 8, "rollout_fragment_length": 500,
                  "train_batch_size": 4000, "sgd_minibatch_size": 128, "num_sgd_iter": 30}
        trainer = jrl.Trainer("PPO", env="CartPole-v1", config=config, log_to_disk=False)
        try:
            trainer.train()
            start, first = time.perf_counter(), trainer.timesteps_total
            before = dict(PHASES.seconds)
            for _ in range(iters):
                trainer.train()
            wall = time.perf_counter() - start
            spent = {k: v - before.get(k, 0.0) for k, v in PHASES.seconds.items()}
            sample_s = spent.get("train: sample (envs + acting)", 0.0)
            learn_s = spent.get("train: learn (update)", 0.0)
            steps = trainer.timesteps_total - first
        finally:
            trainer.stop()
        print("gym", acting, steps, wall, sample_s, learn_s, flush=True)
        rows.append([acting, f"{steps / wall:,.0f}", f"{sample_s:.2f}", f"{learn_s:.2f}",
                     f"{wall:.2f}"])
    lines += [f"### PPO CartPole-v1, gymnasium path, learner on the GPU ({iters} iterations of "
              "4,000 steps, 8 envs, 30 epochs x minibatch 128, after one warm-up iteration)", "",
              common.markdown_table(["acting on", "env steps/s", "sampling (s)", "learning (s)",
                                     "wall (s)"], rows), ""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--cli-seeds", type=int, nargs="+", default=[8, 1024])
    p.add_argument("--parts", nargs="+", default=["anakin", "gym", "cli", "learner"])
    p.add_argument("--learner-batch", type=int, default=65536)
    p.add_argument("--learner-minibatch", type=int, default=8192)
    p.add_argument("--gym-iters", type=int, default=5)
    p.add_argument("--gym-num-gpus", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    os.environ.setdefault("JRL_COMPILATION_CACHE_DIR", "0")
    import jax

    head = [*common.section_header(), f"- GPU: {gpu_name()}",
            f"- jax devices: {jax.devices()}", ""]
    body: list[str] = []
    started = time.perf_counter()
    for part in args.parts:
        t0 = time.perf_counter()
        try:
            if part == "anakin":
                part_anakin(args.seeds, body)
            elif part == "cli":
                part_cli(args.cli_seeds, body)
            elif part == "learner":
                part_learner(body, args.learner_batch, args.learner_minibatch, 4)
            elif part == "gym":
                part_gym(body, args.gym_iters, args.gym_num_gpus)
            else:
                raise SystemExit(f"unknown part {part!r}")
        except Exception:  # noqa: BLE001 - a benchmark part failing must not lose the others
            err = traceback.format_exc()
            print(err, flush=True)
            body += [f"### {part}: failed", "", "```", err[-2000:], "```", ""]
        print(f"== part {part}: {time.perf_counter() - t0:.1f} s", flush=True)
        text = "\n".join(head + [f"- wall so far: {time.perf_counter() - started:.0f} s", ""]
                         + body)
        common.publish(args.out, SECTION, text)


if __name__ == "__main__":
    main()
