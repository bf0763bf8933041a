"""Feed-forward programs before/after a model change: hashes of the lowered (StableHLO) ``update``
and ``act`` of several algorithms, computed in a fresh process per source tree.

Equal hashes mean XLA compiles the very same programs, so the change cannot have made the
feed-forward learner or acting step slower (timings on a shared machine are far noisier than
that). Used for issue 15 (models: masking, custom models, extra action spaces).

    python benchmarks/models_same_programs.py --before ../main --after .
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys

CASES = [("PPO", "discrete"), ("DQN", "discrete"), ("A2C", "discrete"), ("IMPALA", "discrete"),
         ("PPO", "continuous"), ("SAC", "continuous")]


def child() -> None:
    import jax
    import jax.numpy as jnp

    from jrl import registry
    from jrl.types import EnvSpec

    specs = {"discrete": EnvSpec(obs_shape=(4,), num_actions=2),
             "continuous": EnvSpec(obs_shape=(3,), action_kind="continuous", action_shape=(1,),
                                   action_low=(-2.0,), action_high=(2.0,))}
    for algo, kind in CASES:
        spec = specs[kind]
        definition = registry.get_algorithm_def(algo)
        config = registry.parse_config(algo, {})
        alg = registry.make_algorithm(definition, config, spec)
        state = alg.init(jax.random.PRNGKey(0))
        batch = definition.example_batch(config, spec, jax.random.PRNGKey(1))
        update = jax.jit(alg.update).lower(state, batch).as_text()
        act = jax.jit(alg.act, static_argnums=3).lower(
            alg.policy(state), jnp.zeros((8, *spec.obs_shape)), jax.random.PRNGKey(0),
            True).as_text()
        digest = [hashlib.sha1(t.encode()).hexdigest()[:12] for t in (update, act)]
        print(algo, kind, *digest)


def run(tree: str) -> list[list[str]]:
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.abspath(tree), "src")}
    out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return [line.split() for line in out.strip().splitlines()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required="--child" not in sys.argv)
    p.add_argument("--after", default=".")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child()
        return
    before, after = run(args.before), run(args.after)
    print("| algorithm | actions | update before | update after | act before | act after | "
          "same |")
    print("|---|---|---|---|---|---|---|")
    for b, a in zip(before, after, strict=True):
        print(f"| {b[0]} | {b[1]} | {b[2]} | {a[2]} | {b[3]} | {a[3]} | "
              f"{'yes' if b[2:] == a[2:] else 'NO'} |")


if __name__ == "__main__":
    main()
