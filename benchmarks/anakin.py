"""Fully-jitted PPO on gymnax CartPole-v1: jrl's Anakin loop vs a standalone PureJaxRL-style PPO
with the same hyperparameters (4 envs x 128 steps, 4 epochs x 4 minibatches, 500k steps per
seed), for several seed counts, in one run.

    python benchmarks/anakin.py --seeds 1 8 --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import time

import _bench_common as common

SECTION = "Fully-jitted PPO on gymnax CartPole-v1: jrl Anakin vs a PureJaxRL-style loop"
NUM_ENVS, NUM_STEPS, EPOCHS, MINIBATCHES = 4, 128, 4, 4
TOTAL_STEPS = 500_000
UPDATES = TOTAL_STEPS // (NUM_ENVS * NUM_STEPS)
HP = dict(lr=2.5e-4, gamma=0.99, gae_lambda=0.95, clip=0.2, ent_coef=0.01, vf_coef=0.5,
          max_grad_norm=0.5)


def reference_train(num_seeds: int):
    """A from-scratch jitted PPO in the PureJaxRL style (the yardstick, not jrl code)."""
    import flax.linen as nn
    import gymnax
    import jax
    import jax.numpy as jnp
    import optax

    env, params = gymnax.make("CartPole-v1")
    n_actions = env.action_space(params).n

    class ActorCritic(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = nn.tanh(nn.Dense(64)(x))
            a = nn.tanh(nn.Dense(64)(a))
            logits = nn.Dense(n_actions)(a)
            c = nn.tanh(nn.Dense(64)(x))
            c = nn.tanh(nn.Dense(64)(c))
            return logits, nn.Dense(1)(c)[..., 0]

    net = ActorCritic()
    schedule = optax.linear_schedule(HP["lr"], 0.0, UPDATES * EPOCHS * MINIBATCHES)
    tx = optax.chain(optax.clip_by_global_norm(HP["max_grad_norm"]),
                     optax.adam(schedule, eps=1e-5))

    def train(key):
        key, k_init, k_reset = jax.random.split(key, 3)
        net_params = net.init(k_init, jnp.zeros((1, 4)))
        opt_state = tx.init(net_params)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(k_reset, NUM_ENVS), params)

        def update(carry, _):
            net_params, opt_state, env_state, obs, key = carry

            def step(c, _):
                env_state, obs, key = c
                key, k_act, k_step = jax.random.split(key, 3)
                logits, value = net.apply(net_params, obs)
                action = jax.random.categorical(k_act, logits)
                logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], 1)[:, 0]
                obs2, env_state, reward, done, _, _ = jax.vmap(
                    env.step, in_axes=(0, 0, 0, None))(
                    jax.random.split(k_step, NUM_ENVS), env_state, action, params)
                return (env_state, obs2, key), (obs, action, reward, done, value, logp)

            (env_state, obs, key), (b_obs, b_act, b_rew, b_done, b_val, b_logp) = jax.lax.scan(
                step, (env_state, obs, key), None, NUM_STEPS)
            _, last_val = net.apply(net_params, obs)

            def gae_step(c, x):
                gae, next_val = c
                done, val, rew = x
                delta = rew + HP["gamma"] * next_val * (1 - done) - val
                gae = delta + HP["gamma"] * HP["gae_lambda"] * (1 - done) * gae
                return (gae, val), gae

            _, adv = jax.lax.scan(gae_step, (jnp.zeros_like(last_val), last_val),
                                  (b_done, b_val, b_rew), reverse=True, unroll=16)
            targets = adv + b_val

            def epoch(c, _):
                net_params, opt_state, key = c
                key, k_perm = jax.random.split(key)
                batch = (b_obs, b_act, b_logp, b_val, adv, targets)
                flat = jax.tree.map(lambda x: x.reshape((NUM_STEPS * NUM_ENVS,) + x.shape[2:]),
                                    batch)
                perm = jax.random.permutation(k_perm, NUM_STEPS * NUM_ENVS)
                mbs = jax.tree.map(lambda x: x[perm].reshape((MINIBATCHES, -1) + x.shape[1:]),
                                   flat)

                def mb_step(c, mb):
                    net_params, opt_state = c
                    o, a, old_logp, old_v, ad, tgt = mb

                    def loss_fn(p):
                        logits, v = net.apply(p, o)
                        logp_all = jax.nn.log_softmax(logits)
                        logp = jnp.take_along_axis(logp_all, a[:, None], 1)[:, 0]
                        v_clip = old_v + jnp.clip(v - old_v, -HP["clip"], HP["clip"])
                        v_loss = 0.5 * jnp.maximum((v - tgt) ** 2, (v_clip - tgt) ** 2).mean()
                        ratio = jnp.exp(logp - old_logp)
                        ad_n = (ad - ad.mean()) / (ad.std() + 1e-8)
                        pg = -jnp.minimum(ratio * ad_n, jnp.clip(
                            ratio, 1 - HP["clip"], 1 + HP["clip"]) * ad_n).mean()
                        ent = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
                        return pg + HP["vf_coef"] * v_loss - HP["ent_coef"] * ent

                    grads = jax.grad(loss_fn)(net_params)
                    updates, opt_state = tx.update(grads, opt_state, net_params)
                    return (optax.apply_updates(net_params, updates), opt_state), None

                (net_params, opt_state), _ = jax.lax.scan(mb_step, (net_params, opt_state), mbs)
                return (net_params, opt_state, key), None

            (net_params, opt_state, key), _ = jax.lax.scan(
                epoch, (net_params, opt_state, key), None, EPOCHS)
            done_returns = None  # episode returns are not needed for the throughput yardstick
            return (net_params, opt_state, env_state, obs, key), done_returns

        carry, _ = jax.lax.scan(update, (net_params, opt_state, env_state, obs, key), None,
                                UPDATES)
        return carry[0]

    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    return jax.jit(jax.vmap(train)), (keys,)


def jrl_train(num_seeds: int):
    import jax

    from jrl.execution.anakin import make_anakin
    from jrl.registry import parse_config
    from jrl.rollout.jax_envs import make_jax_env

    config = parse_config("PPO", {
        "num_envs_per_worker": NUM_ENVS, "rollout_fragment_length": NUM_STEPS,
        "train_batch_size": NUM_ENVS * NUM_STEPS,
        "sgd_minibatch_size": NUM_ENVS * NUM_STEPS // MINIBATCHES, "num_sgd_iter": EPOCHS,
        "lr": HP["lr"], "lr_annealing": True, "lr_annealing_timesteps": TOTAL_STEPS,
        "gamma": HP["gamma"], "lambda": HP["gae_lambda"], "clip_param": HP["clip"],
        "vf_clip_param": HP["clip"], "entropy_coeff": HP["ent_coef"],
        "vf_loss_coeff": HP["vf_coef"], "grad_clip": HP["max_grad_norm"],
        "model": {"fcnet_hiddens": [64, 64]}})
    anakin = make_anakin("PPO", make_jax_env("gymnax:CartPole-v1"), config, iterations=UPDATES)
    runners = jax.jit(jax.vmap(anakin.init))(jax.random.split(jax.random.PRNGKey(0), num_seeds))

    def train(runners):
        runners, metrics = jax.vmap(anakin.train_chunk)(runners)
        tail = slice(-20, None)
        episodes = metrics["episodes"][:, tail].sum(1)
        return metrics["episode_reward_sum"][:, tail].sum(1) / jax.numpy.maximum(episodes, 1)

    return jax.jit(train), (runners,)


def gymnasium_steps_per_s(steps: int) -> float:
    """The same PPO config through jrl's gymnasium path (workers, host-side env), 1 seed."""
    import jrl

    config = {"num_envs_per_worker": NUM_ENVS, "rollout_fragment_length": NUM_STEPS,
              "train_batch_size": NUM_ENVS * NUM_STEPS,
              "sgd_minibatch_size": NUM_ENVS * NUM_STEPS // MINIBATCHES, "num_sgd_iter": EPOCHS,
              "lr": HP["lr"], "gamma": HP["gamma"], "lambda": HP["gae_lambda"],
              "clip_param": HP["clip"], "vf_clip_param": HP["clip"],
              "entropy_coeff": HP["ent_coef"], "grad_clip": HP["max_grad_norm"],
              "model": {"fcnet_hiddens": [64, 64]}}
    trainer = jrl.Trainer("PPO", env="CartPole-v1", config=config, log_to_disk=False)
    try:
        trainer.train()  # compile
        start, first = time.perf_counter(), trainer.timesteps_total
        while trainer.timesteps_total - first < steps:
            trainer.train()
        return (trainer.timesteps_total - first) / (time.perf_counter() - start)
    finally:
        trainer.stop()


def measure(build, num_seeds: int) -> dict:
    import jax
    import numpy as np

    fn, args = build(num_seeds)
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    run_s = time.perf_counter() - start
    final = np.asarray(out) if isinstance(out, jax.Array) and out.ndim == 1 else None
    return {"compile_s": compile_s, "run_s": run_s,
            "steps_per_s": num_seeds * UPDATES * NUM_ENVS * NUM_STEPS / run_s,
            "solved": "—" if final is None else int((final >= 475).sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 8])
    p.add_argument("--gym-steps", type=int, default=50_000,
                   help="env steps to time jrl's gymnasium path on (same PPO config)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import os

    os.environ.setdefault("JRL_COMPILATION_CACHE_DIR", "0")
    rows = []
    started = time.perf_counter()
    for n in args.seeds:
        ref = measure(reference_train, n)
        ours = measure(jrl_train, n)
        rows.append((n, ref, ours))
        print(n, ref, ours, flush=True)
    gym_rate = gymnasium_steps_per_s(args.gym_steps)
    total = time.perf_counter() - started
    lines = [*common.section_header(),
             f"- config: {NUM_ENVS} envs x {NUM_STEPS} steps, {EPOCHS} epochs x {MINIBATCHES} "
             f"minibatches, {UPDATES} updates = {UPDATES * NUM_ENVS * NUM_STEPS:,} env steps per "
             "seed, lr 2.5e-4 annealed, fcnet [64, 64] tanh, separate actor/critic torsos; "
             "compile excluded from steps/s; no compilation cache",
             f"- whole benchmark wall time: {total:.0f} s", "",
             common.markdown_table(
                 ["seeds", "reference compile (s)", "reference run (s)", "reference steps/s",
                  "jrl compile (s)", "jrl run (s)", "jrl steps/s", "jrl / reference",
                  "jrl seeds >= 475"],
                 [[n, f"{ref['compile_s']:.1f}", f"{ref['run_s']:.2f}",
                   f"{ref['steps_per_s']:,.0f}", f"{ours['compile_s']:.1f}",
                   f"{ours['run_s']:.2f}", f"{ours['steps_per_s']:,.0f}",
                   f"{ours['steps_per_s'] / ref['steps_per_s']:.2f}×", f"{ours['solved']}/{n}"]
                  for n, ref, ours in rows])]
    lines += ["", f"- jrl's gymnasium path (RolloutWorker + host CartPole-v1, same PPO config, "
              f"1 seed, timed over {args.gym_steps:,} steps after compile): "
              f"{gym_rate:,.0f} env steps/s; the jitted loop with 1 seed runs "
              f"{rows[0][2]['steps_per_s'] / gym_rate:.1f}x faster"]
    common.publish(args.out, SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
