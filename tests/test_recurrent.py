"""Recurrent policies (model.use_lstm / use_gru): sequence chopping and masks, state on workers,
the masked loss, compute_action's state round trip and checkpoints."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl import config as jrl_config
from jrl.algorithms import toolkit
from jrl.algorithms.ppo import PPOConfig, ppo_loss
from jrl.errors import ConfigError
from jrl.networks.distributions import Categorical
from jrl.ops.sequences import chop, chop_into_sequences, episode_starts, unchop
from jrl.registry import get_algorithm_def, make_algorithm
from jrl.types import EnvSpec

LSTM = {"use_lstm": True, "lstm_cell_size": 8, "max_seq_len": 4, "fcnet_hiddens": [8],
        "lstm_use_prev_action": True, "lstm_use_prev_reward": True}
CONFIG = {"train_batch_size": 24, "rollout_fragment_length": 12, "num_envs_per_worker": 2,
          "model": LSTM, "seed": 0}


def test_chop_into_sequences_pads_and_masks_a_hand_built_trajectory():
    # Two lanes of T=5 steps, max_seq_len 2: sequences c*B + b hold steps 2c, 2c+1 of lane b.
    x = jnp.arange(10.0).reshape(5, 2)  # x[t, b] = 2 t + b
    state = jnp.stack([x * 10, x * 10 + 1], axis=-1)  # [T, B, 2]
    seqs = chop_into_sequences({"x": x}, (state,), 2)
    np.testing.assert_array_equal(seqs.features["x"], [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 0, 0]])
    np.testing.assert_array_equal(seqs.seq_lens, [2, 2, 2, 2, 1, 1])
    np.testing.assert_array_equal(seqs.mask, [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    # Initial states: the state stored at steps 0, 2, 4 of each lane.
    np.testing.assert_array_equal(seqs.initial_state[0][:, 0], [0, 10, 40, 50, 80, 90])
    np.testing.assert_array_equal(unchop(chop(x, 2), 5), x)
    done = jnp.array([[0, 0], [1, 0], [0, 0], [0, 1], [0, 0]], bool)
    np.testing.assert_array_equal(episode_starts(done, jnp.zeros_like(done)),
                                  [[0, 0], [0, 0], [1, 0], [0, 0], [0, 1]])


def test_masked_ppo_loss_equals_the_unpadded_loss():
    key = jax.random.PRNGKey(0)
    n, pad = 7, 5
    k1, k2, k3, k4 = jax.random.split(key, 4)
    logits = jax.random.normal(k1, (n + pad, 3))
    batch = {"actions": jax.random.randint(k2, (n + pad,), 0, 3),
             "behaviour_logp": -jnp.abs(jax.random.normal(k3, (n + pad,))),
             "advantages": jax.random.normal(k4, (n + pad,)),
             "value_targets": jnp.arange(n + pad, dtype=jnp.float32),
             "old_values": jnp.zeros(n + pad)}
    value = jnp.linspace(-1.0, 1.0, n + pad)
    config = PPOConfig(vf_clip_param=0.5)
    # The padding holds garbage; the mask must keep it out of every term.
    garbage = {k: v.at[n:].set(1e3 if v.dtype == jnp.float32 else 0) for k, v in batch.items()}
    mask = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)])

    @jax.jit
    def losses(logits, value, garbage, batch, mask):
        padded = ppo_loss(Categorical(logits), value, garbage, Categorical(logits * 2),
                          config, jnp.float32(0.3), mask=mask)
        real = {k: v[:n] for k, v in batch.items()}
        plain = ppo_loss(Categorical(logits[:n]), value[:n], real, Categorical(logits[:n] * 2),
                         config, jnp.float32(0.3))
        return padded, plain

    (padded, padded_stats), (plain, plain_stats) = losses(logits, value, garbage, batch, mask)
    np.testing.assert_allclose(padded, plain, rtol=1e-5)
    for k in plain_stats:
        np.testing.assert_allclose(padded_stats[k], plain_stats[k], rtol=1e-5, atol=1e-6)


def test_gru_unrolls_and_resets_its_state_at_episode_starts():
    spec = EnvSpec(obs_shape=(3,), num_actions=2)
    model = jrl_config.parse(jrl_config.ModelConfig, {"use_gru": True, "lstm_cell_size": 5,
                                                      "fcnet_hiddens": [4]})
    fns = toolkit.make_recurrent_fns(spec, model, "NoFilter")
    params = jax.jit(fns.init_params)(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (4, 2, 3))
    zeros = {"prev_action": jnp.zeros((4, 2), jnp.int32), "prev_reward": jnp.zeros((4, 2))}
    resets = jnp.zeros((4, 2), bool).at[2, 0].set(True)

    @jax.jit
    def unrolls(params):
        full = fns.unroll(params, None, {"obs": obs, "resets": resets, **zeros},
                          fns.recurrent.initial_state(2))
        # Lane 0 restarts at step 2: its steps 2-3 equal an unroll from the zero state there.
        tail = fns.unroll(params, None, {"obs": obs[2:], "resets": resets[2:] & False,
                                         **{k: v[2:] for k, v in zeros.items()}},
                          fns.recurrent.initial_state(2))
        return full[1:], tail[1]

    (value, states), again = unrolls(params)
    np.testing.assert_allclose(value.reshape(4, 2)[2:, 0], again.reshape(2, 2)[:, 0], atol=1e-6)
    assert not np.allclose(value.reshape(4, 2)[2:, 1], again.reshape(2, 2)[:, 1])


def test_algorithms_without_recurrent_policies_reject_use_lstm():
    spec = EnvSpec(obs_shape=(4,), num_actions=2)
    for name in ("DQN", "MARWIL"):
        definition = get_algorithm_def(name)
        config = jrl_config.parse(definition.config_class, {"model": {"use_lstm": True}})
        with pytest.raises(ConfigError, match="no recurrent policies"):
            make_algorithm(definition, config, spec)
    with pytest.raises(ConfigError, match="pick one"):
        jrl_config.parse(jrl_config.ModelConfig, {"use_lstm": True, "use_gru": True})


@pytest.fixture(scope="module")
def trainer():
    from jrl.trainer import Trainer

    t = Trainer("PG", env="CartPole-v1", config={**CONFIG, "horizon": 5})
    yield t
    t.stop()


def test_worker_carries_state_and_resets_it_at_episode_starts(trainer):
    worker = trainer.workers.local_worker()
    worker.set_policy(trainer.get_policy().acting)
    batch = worker.sample()
    done = batch["terminateds"] | batch["truncateds"]
    starts = np.asarray(episode_starts(done, np.zeros_like(done)))
    h = batch["state_in_0"]
    assert h.shape == (12, 2, 8) and batch["state_in_1"].shape == (12, 2, 8)
    # horizon 5: every lane restarts at least twice in 12 steps.
    assert starts.sum() >= 4
    assert np.all(h[starts] == 0) and np.all(batch["prev_actions"][starts] == 0)
    assert np.all(batch["prev_rewards"][starts] == 0)
    inside = ~starts
    inside[0] = False  # the fragment's first step continues the last fragment's episode
    assert np.all(np.abs(h[inside]).sum(-1) > 0)
    np.testing.assert_array_equal(batch["prev_actions"][1:][inside[1:]],
                                  batch["actions"][:-1][inside[1:]])
    # The learner's sequence pass (chopped, reset at episode starts) reproduces the
    # behaviour's log-probabilities exactly.
    policy = worker.get_policy()
    fns = toolkit.make_recurrent_fns(policy.spec, policy.algo_config.model, "NoFilter")

    @jax.jit
    def sequence_logp(acting, transition):
        seqs, _, _, _ = fns.evaluate(acting.params, acting.obs_filter, transition)
        dist, _, _ = fns.unroll(acting.params, acting.obs_filter, seqs.features,
                                seqs.initial_state)
        actions = toolkit.flatten_time(chop(jnp.asarray(transition.action), 4))
        return unchop(dist.log_prob(actions).reshape(4, -1), 12)

    logp = sequence_logp(policy.acting, batch.to_transition())
    np.testing.assert_allclose(logp, batch["action_logp"], atol=1e-5)


def test_compute_action_state_round_trip(trainer):
    policy = trainer.get_policy()
    assert policy.is_recurrent()
    init = policy.get_initial_state()
    assert [s.shape for s in init] == [(8,), (8,)] and not np.any(init[0])
    obs = [np.array([0.1, -0.2, 0.03, 0.4], np.float32), np.array([0.2, 0.1, -0.1, 0.0],
                                                                  np.float32)]
    a0, s1, extras = trainer.compute_action(obs[0], state=init, prev_action=0, prev_reward=0.0)
    assert [s.shape for s in s1] == [(8,), (8,)] and np.any(s1[0]) and "vf_preds" in extras
    a1, s2, _ = trainer.compute_action(obs[1], state=s1, prev_action=a0, prev_reward=1.0)
    assert trainer.compute_action(obs[0]) in (0, 1)  # no state: just the action
    # The same two steps as one sequence through model(input_dict, state, seq_lens).
    model = policy.model
    out, state_out = model({"obs": np.stack(obs), "prev_actions": np.array([0, a0]),
                            "prev_rewards": np.array([0.0, 1.0])},
                           [s[None] for s in init], np.array([2]))
    assert out.shape == (2, 2)
    for got, want in zip(state_out, s2, strict=True):
        np.testing.assert_allclose(got[0], want, atol=1e-5)
    logits, _ = model.from_batch({"obs": np.stack(obs[1:]), "state_in_0": s1[0][None],
                                  "state_in_1": s1[1][None], "prev_actions": np.array([a0]),
                                  "prev_rewards": np.array([1.0])})
    np.testing.assert_allclose(logits[0], out[1], atol=1e-5)


def test_trainer_compute_actions_carries_each_keys_state(trainer):
    """RLlib's ``Algorithm.compute_actions(obs_dict, state=...)``: each key's state is carried
    (not the initial one), and the result is ``(actions, states, extras)``."""
    obs = {"a": np.array([0.1, -0.2, 0.03, 0.4], np.float32),
           "b": np.array([0.2, 0.1, -0.1, 0.0], np.float32)}
    init = trainer.get_policy().get_initial_state()
    _, s_a, _ = trainer.compute_action(obs["a"], state=init, prev_action=1, prev_reward=0.5)
    actions, states, extras = trainer.compute_actions(
        obs, state={"a": s_a}, prev_action={"a": 1, "b": 0}, prev_reward={"a": 0.5, "b": 0.0})
    assert set(actions) == set(states) == {"a", "b"} and extras["vf_preds"].shape == (2,)
    # "a" continues from its given state, "b" (no state given) starts from the initial one:
    # the same as one step each through compute_action.
    want_a = trainer.compute_action(obs["a"], state=s_a, prev_action=1, prev_reward=0.5)[1]
    want_b = trainer.compute_action(obs["b"], state=init, prev_action=0, prev_reward=0.0)[1]
    for key, want in (("a", want_a), ("b", want_b)):
        assert [s.shape for s in states[key]] == [(8,), (8,)]
        for got, w in zip(states[key], want, strict=True):
            np.testing.assert_allclose(got, w, atol=1e-5)
    assert not np.allclose(states["a"][0], want_b[0])  # the given state mattered
    # Lists work the same way; without state or full_fetch only the actions come back.
    acts, list_states, _ = trainer.compute_actions(
        [obs["a"], obs["b"]], state=[s_a, init], prev_action=[1, 0], prev_reward=[0.5, 0.0])
    np.testing.assert_allclose(list_states[0][0], want_a[0], atol=1e-5)
    assert set(trainer.compute_actions(obs)) == {"a", "b"}
    assert len(trainer.compute_actions(obs, full_fetch=True)) == 3


def test_recurrent_policy_survives_a_checkpoint(trainer, tmp_path):
    from jrl.trainer import Trainer

    trainer.train()
    path = trainer.save(str(tmp_path))
    restored = Trainer.from_checkpoint(path)
    try:
        jax.tree.map(np.testing.assert_array_equal, trainer.get_weights(),
                     restored.get_weights())
        state = trainer.get_policy().get_initial_state()
        obs = np.array([0.1, 0.0, -0.05, 0.2], np.float32)
        a, s, e = trainer.compute_action(obs, state=state, full_fetch=True)
        b, t, f = restored.compute_action(obs, state=state, full_fetch=True)
        assert a == b
        np.testing.assert_allclose(s[0], t[0], atol=1e-6)
        np.testing.assert_allclose(e["vf_preds"], f["vf_preds"], atol=1e-6)
        # Each sampler goes on from its running episodes' recurrent state.
        saved = trainer.workers.local_worker().get_sampler_state()["recurrent"]
        assert restored.workers.local_worker().get_sampler_state()["recurrent"] == saved
    finally:
        restored.stop()


def _stateless_cartpole(use_lstm: bool, steps: int = 300_000) -> float:
    """Best greedy 10-episode evaluation of the tuned stateless-CartPole PPO (evaluated every
    4 iterations), with or without its LSTM, within ``steps`` env steps."""
    import os

    from jrl.cli import load_experiments
    from jrl.trainer import Trainer

    path = os.path.join(os.path.dirname(__file__), os.pardir, "configs",
                        "stateless-cartpole-lstm-ppo.yaml")
    (spec,) = load_experiments(path).values()
    config = dict(spec["config"])
    config["model"] = {**config["model"], "use_lstm": use_lstm,
                       "lstm_use_prev_action": use_lstm}
    trainer = Trainer(spec["run"], env=spec["env"], config={**config, "seed": 0})
    best = float("-inf")
    try:
        while trainer.timesteps_total < steps and best < 475:
            result = trainer.train()
            if "evaluation" in result:
                best = max(best, result["evaluation"]["episode_reward_mean"])
    finally:
        trainer.stop()
    return best


@pytest.mark.slow
def test_lstm_ppo_solves_stateless_cartpole():
    assert _stateless_cartpole(True) >= 450


@pytest.mark.slow
def test_feed_forward_ppo_stays_below_on_stateless_cartpole():
    assert _stateless_cartpole(False) < 200


@pytest.mark.slow
def test_jitted_loop_trains_a_recurrent_policy():
    from jrl.trainer import Trainer

    trainer = Trainer("PPO", env="gymnax:CartPole-v1", config={
        **CONFIG, "train_batch_size": 256, "rollout_fragment_length": 64,
        "num_envs_per_worker": 4, "sgd_minibatch_size": 64, "lr": 1e-3,
        "model": {**LSTM, "max_seq_len": 16, "fcnet_hiddens": [32], "lstm_cell_size": 32}})
    try:
        first = trainer.train()["episode_reward_mean"]
        for _ in range(20):
            last = trainer.train()["episode_reward_mean"]
        assert last > first + 20
        state = trainer.get_policy().get_initial_state()
        _, state_out, _ = trainer.compute_action(np.zeros(4, np.float32), state=state)
        assert np.any(state_out[0])
        assert trainer.evaluate(2)["evaluation"]["episode_reward_mean"] > 9
    finally:
        trainer.stop()
