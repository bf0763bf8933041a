"""Offline RL on CartPole-v1: reader throughput, BC/MARWIL time to 0.9x the expert, and BC vs
MARWIL on a mixed-quality data set.

1. Expert data: a PPO expert (``configs/cartpole-ppo.yaml``, trained here unless
   ``--expert-checkpoint`` is given) plays greedy episodes until ``--steps`` steps are recorded
   (``jrl evaluate --out``'s format) into ``--data/expert``. The expert's return is the mean
   return of the recorded episodes.
2. Mixed data (``--data/mixed``): half the steps from expert episodes, half from epsilon-random
   episodes (the expert's greedy action, replaced by a uniform random one with probability
   ``--epsilon``; the behaviour log-probabilities are recorded).
3. Reader throughput: samples per CPU-second of ``JsonReader`` assembling ``[T, B]`` batches
   (``load_dataset``, one full pass) from the expert rows rewritten four ways (obs/new_obs
   compressed, RLlib's default, or every numeric column compressed; codec zlib or lz4) vs
   ``np.load`` of the same columns from an ``.npz`` (zlib-compressed) and from an uncompressed
   ``.npz``; each repeat runs every reader in turn. ``--reader-only`` runs just this part and
   replaces just its table in ``--out``.
4. Time to 0.9x expert, per algorithm, two ways:
   - trainer: ``jrl.Trainer`` with ``configs/cartpole-<algo>.yaml`` (files streamed by the
     offline plan), greedy 10-episode evaluation after each iteration with the clock paused;
   - jit: ``load_dataset`` once, then ``fit_epochs`` (whole epochs inside one jit), evaluated
     after every ``--epochs-per-eval`` epochs with the clock paused; data loading and
     compilation counted.
5. Mixed data: BC and MARWIL for the same number of epochs (``fit_epochs``), then 20 greedy and
   20 stochastic (sampled) episodes each, over ``--seeds``.

    python benchmarks/offline.py --out benchmarks/RESULTS.md
    python benchmarks/offline.py --reader-only --repeats 21 --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

SECTION = "Offline RL on CartPole-v1: reader throughput, BC/MARWIL time to 0.9x expert"


def train_expert(local_dir: str) -> str:
    import jrl

    config = common.tuned_config("configs/cartpole-ppo.yaml", "PPO")
    trainer = jrl.Trainer("PPO", env="CartPole-v1", config=config, local_dir=local_dir)
    try:
        while trainer.timesteps_total < 200_000:
            result = trainer.train()
            if result.get("evaluation", {}).get("episode_reward_mean", 0) >= 475:
                break
        return trainer.save()
    finally:
        trainer.stop()


def record_expert(checkpoint: str, out: str, steps: int, seed: int = 100) -> None:
    import jrl
    from jrl.rollout.offline import write_episodes

    trainer = jrl.Trainer.from_checkpoint(checkpoint, log_to_disk=False)
    try:
        episodes, total = [], 0
        while total < steps:
            batch = trainer.rollout_episodes(16, explore=False, seed=seed + len(episodes),
                                             record=True)
            episodes.extend(batch)
            total += sum(e["episode_len"] for e in batch)
    finally:
        trainer.stop()
    write_episodes(out, episodes, ("obs", "new_obs"))


def record_epsilon_random(checkpoint: str, out: str, steps: int, epsilon: float,
                          seed: int = 500) -> None:
    """Expert episodes with each greedy action replaced by a random one with prob. epsilon."""
    import gymnasium as gym

    import jrl
    from jrl.rollout.offline import write_episodes

    trainer = jrl.Trainer.from_checkpoint(checkpoint, log_to_disk=False)
    rng = np.random.default_rng(seed)
    env = gym.make("CartPole-v1")
    episodes, total, k = [], 0, 0
    try:
        while total < steps:
            obs, _ = env.reset(seed=seed + k)
            k += 1
            ep = {c: [] for c in ("obs", "new_obs", "actions", "rewards", "terminateds",
                                  "truncateds", "action_logp")}
            done = False
            while not done:
                greedy = int(trainer.compute_action(obs, explore=False))
                action = int(rng.integers(2)) if rng.random() < epsilon else greedy
                prob = (1 - epsilon) * (action == greedy) + epsilon / 2
                new_obs, reward, terminated, truncated, _ = env.step(action)
                for c, v in zip(ep, (obs, new_obs, action, reward, terminated, truncated,
                                     np.log(prob)), strict=True):
                    ep[c].append(v)
                obs, done = new_obs, terminated or truncated
            episodes.append({c: np.asarray(v, np.float32 if c in ("obs", "new_obs", "rewards",
                                                                  "action_logp") else None)
                             for c, v in ep.items()})
            total += len(ep["rewards"])
    finally:
        trainer.stop()
        env.close()
    write_episodes(out, episodes, ("obs", "new_obs"))


def episode_returns(source: str) -> np.ndarray:
    from jrl.rollout.offline import read_json

    return np.array([float(row["rewards"].sum()) for row in read_json(source)])


def reader_throughput(source: str, repeats: int) -> dict:
    """Samples per CPU-second of each way of reading the expert data (CPU time: the machine is
    shared). Each repeat runs every reader once, in turn, so that load drifting during the run
    weighs on all of them alike; the median of the repeats is reported."""
    from jrl.rollout.offline import COLUMNS, JsonWriter, load_dataset, read_json

    T, B = 250, 8
    rows = list(read_json(source))
    steps = sum(len(r["rewards"]) for r in rows)
    cols = ("obs", "new_obs", "actions", "rewards", "terminateds", "truncateds", "action_logp",
            "eps_id", "t")
    arrays = {c: np.concatenate([r[c] for r in rows]) for c in cols}
    tmp = tempfile.mkdtemp(prefix="jrl-offline-bench-")
    npz_c, npz_u = os.path.join(tmp, "c.npz"), os.path.join(tmp, "u.npz")
    np.savez_compressed(npz_c, **arrays)
    np.savez(npz_u, **arrays)

    def load_npz(path):
        with np.load(path) as data:
            return {k: data[k] for k in data.files}

    # The same rows rewritten: obs/new_obs compressed (RLlib's default columns) or every numeric
    # column compressed, with each codec (output_compress_codec).
    numeric = [c for c in COLUMNS if c != "infos"]
    dirs = {}
    for name, columns, codec in (("obs_zlib", ["obs", "new_obs"], "zlib"),
                                 ("obs_lz4", ["obs", "new_obs"], "lz4"),
                                 ("all_zlib", numeric, "zlib"), ("all_lz4", numeric, "lz4")):
        dirs[name] = os.path.join(tmp, name)
        writer = JsonWriter(dirs[name], columns, compress_codec=codec)
        for row in rows:
            writer.write_row(row)
        writer.close()

    def dataset(path):
        return lambda: load_dataset(path, T, B, "float32", "int32", (4,))

    readers = {name: dataset(path) for name, path in dirs.items()}
    readers["rows_only"] = lambda: list(read_json(dirs["obs_lz4"]))
    readers["numpy_npz_compressed"] = lambda: load_npz(npz_c)
    readers["numpy_npz"] = lambda: load_npz(npz_u)
    times: dict[str, list[float]] = {name: [] for name in readers}
    for fn in readers.values():  # warm the page cache and the header caches
        fn()
    for _ in range(repeats):
        for name, fn in readers.items():
            start = time.process_time()
            fn()
            times[name].append(time.process_time() - start)
    result = {name: steps / float(np.median(t)) for name, t in times.items()}
    result.update(steps=steps, source=source, npz_compressed_bytes=os.path.getsize(npz_c),
                  bytes={name: sum(os.path.getsize(p) for p in glob.glob(os.path.join(d, "*")))
                         for name, d in dirs.items()})
    return result


def reader_table(tp: dict, repeats: int) -> list[str]:
    npz = tp["numpy_npz_compressed"]

    def row(label, key):
        return [label, f"{tp[key]:,.0f}", f"{tp[key] / npz:.2f}x"]

    mb = {k: f"{v / 1e6:.1f} MB" for k, v in tp["bytes"].items()}
    return [f"### Reader throughput (samples per CPU-second, median of {repeats} interleaved "
            f"repeats; {tp['steps']} steps; npz {tp['npz_compressed_bytes'] / 1e6:.1f} MB)", "",
            common.markdown_table(
                ["reader", "samples/s", "vs np.load(.npz compressed)"],
                [row(f"JsonReader -> [250, 8] batches (load_dataset), obs/new_obs compressed, "
                     f"zlib ({mb['obs_zlib']})", "obs_zlib"),
                 row(f"same, obs/new_obs compressed, lz4 ({mb['obs_lz4']})", "obs_lz4"),
                 row(f"same, every numeric column compressed, zlib ({mb['all_zlib']})",
                     "all_zlib"),
                 row(f"same, every numeric column compressed, lz4 ({mb['all_lz4']})",
                     "all_lz4"),
                 row("read_json rows only (obs/new_obs compressed, lz4)", "rows_only"),
                 row("np.load, .npz compressed (same columns)", "numpy_npz_compressed"),
                 row("np.load, .npz uncompressed", "numpy_npz")])]


def publish_reader_only(out: str | None, tp: dict, repeats: int, machine: list[str]) -> None:
    """Replaces the reader table of the section in ``out``, keeping the rest of the section
    (whose numbers come from the last full run); ``machine``: ``machine_lines()`` at start."""
    import re

    note = (f"- **reader table re-run alone** ({'; '.join(m[2:] for m in machine)}; command "
            f"`{common.command_line()}`): the other tables of this section were not re-run and "
            "keep the numbers of the full run above")
    table = "\n".join(reader_table(tp, repeats))
    body = ""
    if out and os.path.exists(out):
        with open(out) as f:
            match = re.search(rf"^## {re.escape(SECTION)}[ \t]*\n(.*?)(?=^## |\Z)", f.read(),
                              re.S | re.M)
        body = match.group(1) if match else ""
    if "### Reader throughput" in body:
        head, rest = body.split("### Reader throughput", 1)
        tail = rest[rest.index("\n### "):] if "\n### " in rest else ""
        head = "\n".join(line for line in head.rstrip().split("\n")
                         if not line.startswith("- **reader table re-run alone**"))
        body = f"{head}\n{note}\n\n{table}\n{tail}"
    else:
        body = f"{body.rstrip()}\n{note}\n\n{table}\n"
    common.publish(out, SECTION, body)


class Clock:
    def __init__(self):
        self.total, self._start = 0.0, time.perf_counter()

    def pause(self):
        self.total += time.perf_counter() - self._start

    def resume(self):
        self._start = time.perf_counter()


def trainer_time_to_target(algo: str, source: str, target: float, seed: int,
                           max_iterations: int) -> dict:
    import jrl

    config = common.tuned_config(f"configs/cartpole-{algo.lower()}.yaml", algo)
    config.update(input=source, seed=seed, evaluation_interval=None)
    clock = Clock()
    trainer = jrl.Trainer(algo, env="CartPole-v1", config=config, log_to_disk=False)
    try:
        for _ in range(max_iterations):
            trainer.train()
            clock.pause()
            score = trainer.evaluate(10)["evaluation"]["episode_reward_mean"]
            if score >= target:
                return {"seconds": clock.total, "iterations": trainer.iteration,
                        "steps_trained": trainer.timesteps_total, "score": score}
            clock.resume()
        return {"seconds": None, "iterations": trainer.iteration,
                "steps_trained": trainer.timesteps_total, "score": score}
    finally:
        trainer.stop()


def jit_trainer(algo: str, seed: int, **overrides):
    import jrl

    config = common.tuned_config(f"configs/cartpole-{algo.lower()}.yaml", algo)
    config.update(input="sampler", seed=seed, evaluation_interval=None, **overrides)
    return jrl.Trainer(algo, env="CartPole-v1", config=config, log_to_disk=False)


def jit_time_to_target(algo: str, source: str, target: float, seed: int, epochs_per_eval: int,
                       max_epochs: int, **overrides) -> dict:
    import jax

    from jrl.execution.offline import dataset_transitions, fit_epochs
    from jrl.rollout.offline import load_dataset

    clock = Clock()
    trainer = jit_trainer(algo, seed, **overrides)
    try:
        spec = trainer.spec
        T, B = 250, 8
        data = dataset_transitions(load_dataset(source, T, B, spec.obs_dtype,
                                                spec.action_dtype, spec.obs_shape))
        fit = fit_epochs(trainer.algorithm, epochs_per_eval)
        state, key, epochs = trainer.state, jax.random.PRNGKey(seed), 0
        while epochs < max_epochs:
            key, sub = jax.random.split(key)
            state, _ = fit(state, data, sub)
            jax.block_until_ready(state)
            epochs += epochs_per_eval
            clock.pause()
            trainer.state = state
            score = trainer.evaluate(10)["evaluation"]["episode_reward_mean"]
            if score >= target:
                return {"seconds": clock.total, "epochs": epochs,
                        "updates": int(state.num_updates), "score": score}
            clock.resume()
        return {"seconds": None, "epochs": epochs, "updates": int(state.num_updates),
                "score": score}
    finally:
        trainer.stop()


def mixed_run(algo: str, source: str, seed: int, epochs: int) -> dict:
    import jax

    from jrl.execution.offline import dataset_transitions, fit_epochs
    from jrl.rollout.offline import load_dataset

    trainer = jit_trainer(algo, seed)
    try:
        spec = trainer.spec
        data = dataset_transitions(load_dataset(source, 250, 8, spec.obs_dtype,
                                                spec.action_dtype, spec.obs_shape))
        state, _ = fit_epochs(trainer.algorithm, epochs)(trainer.state, data,
                                                          jax.random.PRNGKey(seed))
        trainer.state = state
        greedy = [e["episode_reward"] for e in trainer.rollout_episodes(20, explore=False,
                                                                        seed=20_000 + seed)]
        sampled = [e["episode_reward"] for e in trainer.rollout_episodes(20, explore=True,
                                                                         seed=30_000 + seed)]
        return {"greedy": float(np.mean(greedy)), "sampled": float(np.mean(sampled))}
    finally:
        trainer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/tmp/jrl-offline-bench")
    parser.add_argument("--expert-checkpoint")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--epsilon", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs-per-eval", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--max-iterations", type=int, default=100)
    parser.add_argument("--mixed-epochs", type=int, default=30)
    parser.add_argument("--out")
    parser.add_argument("--reader-only", action="store_true",
                        help="measure only the reader and replace only its table in --out")
    args = parser.parse_args()
    header = common.section_header()

    expert_dir = os.path.join(args.data, "expert")
    mixed_dir = os.path.join(args.data, "mixed")
    if not glob.glob(os.path.join(expert_dir, "*.json")):
        checkpoint = args.expert_checkpoint or train_expert(os.path.join(args.data, "ppo"))
        record_expert(checkpoint, os.path.join(expert_dir, "expert.json"), args.steps)
        record_expert(checkpoint, os.path.join(mixed_dir, "expert-half.json"), args.steps // 2,
                      seed=900)
        record_epsilon_random(checkpoint, os.path.join(mixed_dir, "epsilon-random.json"),
                              args.steps // 2, args.epsilon)
    if args.reader_only:
        machine = common.machine_lines()
        tp = reader_throughput(expert_dir, args.repeats)
        print("throughput", tp, flush=True)
        publish_reader_only(args.out, tp, args.repeats, machine)
        return
    expert_returns = episode_returns(expert_dir)
    target = 0.9 * float(expert_returns.mean())
    mixed_expert = episode_returns(os.path.join(mixed_dir, "expert-half.json"))
    mixed_noisy = episode_returns(os.path.join(mixed_dir, "epsilon-random.json"))
    print(f"expert: {len(expert_returns)} episodes, mean return {expert_returns.mean():.1f}; "
          f"target {target:.1f}", flush=True)

    tp = reader_throughput(expert_dir, args.repeats)
    print("throughput", tp, flush=True)
    rows = []
    for algo in ("BC", "MARWIL"):
        for seed in args.seeds:
            tr = trainer_time_to_target(algo, expert_dir, target, seed, args.max_iterations)
            jt = jit_time_to_target(algo, expert_dir, target, seed, args.epochs_per_eval,
                                    args.max_epochs)
            print(algo, seed, tr, jt, flush=True)
            rows.append((algo, seed, tr, jt))
    mixed = []
    for algo in ("BC", "MARWIL"):
        for seed in args.seeds:
            m = mixed_run(algo, mixed_dir, seed, args.mixed_epochs)
            print("mixed", algo, seed, m, flush=True)
            mixed.append((algo, seed, m))

    def fmt(x, spec=".1f"):
        return "not reached" if x is None else format(x, spec)

    lines = [*header,
             f"- expert: PPO (configs/cartpole-ppo.yaml), greedy; {len(expert_returns)} "
             f"recorded episodes, {tp['steps']} steps, mean return "
             f"{expert_returns.mean():.1f}; target 0.9x = {target:.1f} (greedy 10-episode "
             "mean, evaluated after each iteration / eval chunk with the clock paused)",
             "", *reader_table(tp, args.repeats),
             "", "### Time to 0.9x expert from the recorded steps", "",
             common.markdown_table(
                 ["algo", "seed", "Trainer (files streamed): s", "iterations", "steps trained",
                  "fit_epochs (one jit): s", "epochs", "final greedy return (trainer / jit)"],
                 [[a, s, fmt(tr["seconds"]), tr["iterations"], tr["steps_trained"],
                   fmt(jt["seconds"]), jt["epochs"], f"{tr['score']:.0f} / {jt['score']:.0f}"]
                  for a, s, tr, jt in rows]),
             "", f"### Mixed-quality data: {len(mixed_expert)} expert episodes (mean return "
             f"{mixed_expert.mean():.1f}) + {len(mixed_noisy)} epsilon={args.epsilon} random "
             f"episodes (mean return {mixed_noisy.mean():.1f}); {args.mixed_epochs} epochs "
             "each (fit_epochs), mean return over 20 episodes", "",
             common.markdown_table(
                 ["algo", "seed", "greedy", "sampled (stochastic policy)"],
                 [[a, s, f"{m['greedy']:.1f}", f"{m['sampled']:.1f}"] for a, s, m in mixed]
                 + [[a, "mean", f"{np.mean([m['greedy'] for b, _, m in mixed if b == a]):.1f}",
                     f"{np.mean([m['sampled'] for b, _, m in mixed if b == a]):.1f}"]
                    for a in ("BC", "MARWIL")])]
    common.publish(args.out, SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
