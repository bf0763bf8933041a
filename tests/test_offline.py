"""Offline data: the SampleBatch JSON-lines format, input readers, MARWIL/BC losses, IS/WIS."""

from __future__ import annotations

import base64
import json
import math
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrl
from jrl import registry
from jrl.algorithms.marwil import discounted_returns_of, marwil_loss, update_sqd_adv_norm
from jrl.errors import ConfigError, DataError
from jrl.execution.offline import (
    OfflinePlan,
    OffPolicyEstimation,
    dataset_transitions,
    fit_epochs,
)
from jrl.ops.estimators import episode_bounds, episode_estimates, wis_init
from jrl.rollout.offline import (
    COLUMNS,
    BatchAssembler,
    JsonReader,
    JsonWriter,
    MixedInput,
    ShuffledInput,
    complete_row,
    load_dataset,
    pack,
    read_json,
    unpack,
    write_episodes,
)
from jrl.types import Transition

# -- MARWIL by hand -----------------------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True])
def test_marwil_loss_matches_hand_computation(jit):
    logp = jnp.array([-0.5, -1.0])
    values = jnp.array([1.0, 2.0])
    returns = jnp.array([3.0, 1.0])  # advantages [2, -1]
    loss = (jax.jit(marwil_loss, static_argnames=("beta", "vf_coeff")) if jit else marwil_loss)
    total, stats = loss(logp, values, returns, jnp.float32(4.0), beta=1.0, vf_coeff=0.5)
    w = np.exp(np.array([2.0, -1.0]) / 2.0)  # exp(beta * A / sqrt(4))
    policy_loss = -(w[0] * -0.5 + w[1] * -1.0) / 2
    vf_loss = 0.5 * (4.0 + 1.0) / 2
    np.testing.assert_allclose(stats["policy_loss"], policy_loss, rtol=1e-6)
    np.testing.assert_allclose(stats["vf_loss"], vf_loss, rtol=1e-6)
    np.testing.assert_allclose(total, policy_loss + 0.5 * vf_loss, rtol=1e-6)
    # The weights are constants: d loss / d logp = -w / N, and the value gradient is the MSE's.
    g_logp, g_values = jax.grad(lambda lp, v: loss(lp, v, returns, jnp.float32(4.0), beta=1.0,
                                                   vf_coeff=0.5)[0], argnums=(0, 1))(logp, values)
    np.testing.assert_allclose(g_logp, -w / 2, rtol=1e-6)
    np.testing.assert_allclose(g_values, 0.5 * -(np.array([2.0, -1.0])) / 2, rtol=1e-6)


def test_bc_loss_is_the_mean_negative_log_likelihood_without_value_loss():
    total, stats = marwil_loss(jnp.array([-0.5, -1.0]), jnp.zeros(2), jnp.array([9.0, -9.0]),
                               jnp.float32(1.0), beta=0.0, vf_coeff=1.0)
    np.testing.assert_allclose(total, 0.75)
    assert float(stats["vf_loss"]) == 0.0


def test_squared_advantage_norm_moves_at_its_rate():
    np.testing.assert_allclose(update_sqd_adv_norm(jnp.float32(100.0), jnp.float32(2.5), 0.1),
                               100.0 + 0.1 * (2.5 - 100.0))
    assert float(update_sqd_adv_norm(jnp.float32(100.0), jnp.float32(2.5), 0.0)) == 100.0


def test_returns_bootstrap_at_truncation_and_batch_end_but_not_termination():
    batch = Transition(obs=None, action=None, reward=jnp.ones((4, 1)),
                       terminated=jnp.array([[0], [0], [1], [0]], bool),
                       truncated=jnp.array([[0], [1], [0], [0]], bool), next_obs=None,
                       behaviour_logp=None)
    # V(next_obs[t]) is V(obs[t + 1]) inside an episode (5); 7 is the truncated episode's
    # final observation's value, 100 follows a termination and must be ignored.
    values = jnp.array([[2.0], [5.0], [3.0], [4.0]])
    next_values = jnp.array([[5.0], [7.0], [100.0], [9.0]])
    returns = discounted_returns_of(batch, values, next_values, 0.5)
    # t=3: 1 + .5 * 9; t=2 terminated: 1; t=1 truncated: 1 + .5 * 7; t=0: 1 + .5 * R_1.
    np.testing.assert_allclose(returns[:, 0], [1 + 0.5 * 4.5, 4.5, 1.0, 5.5])


# -- IS / WIS by hand ---------------------------------------------------------------------------


# Episode A: mu = [.5, .5], pi = [.8, .25], r = [1, 2] -> p = [1.6, 1.6 * .5 = 0.8].
# Episode B: mu = [.5, .5], pi = [.2, .75], r = [1, 0] -> p = [0.4, 0.6].
EPISODE_A = dict(r=[1.0, 2.0], mu=np.log([0.5, 0.5]), pi=np.log([0.8, 0.25]))
EPISODE_B = dict(r=[1.0, 0.0], mu=np.log([0.5, 0.5]), pi=np.log([0.2, 0.75]))


def test_is_and_wis_on_one_two_step_episode_by_hand():
    a = EPISODE_A
    est, state = episode_estimates(a["r"], a["mu"], a["pi"], 0.9, wis_init())
    np.testing.assert_allclose(est["is"]["V_prev"], 1 + 0.9 * 2, rtol=1e-6)
    np.testing.assert_allclose(est["is"]["V_step_IS"], 1.6 * 1 + 0.9 * 0.8 * 2, rtol=1e-6)
    np.testing.assert_allclose(est["is"]["V_gain_est"], (1.6 + 1.44) / 2.8, rtol=1e-6)
    # One episode: the WIS weights are its own ratios, so WIS returns the behaviour's value.
    np.testing.assert_allclose(est["wis"]["V_step_WIS"], 2.8, rtol=1e-6)
    np.testing.assert_allclose(state.p_sum, [1.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(state.count, [1, 1])


def test_wis_weights_run_over_the_episodes_seen_so_far_episode_by_episode():
    a, b = EPISODE_A, EPISODE_B
    _, state = episode_estimates(a["r"], a["mu"], a["pi"], 0.9, wis_init())
    est, state = episode_estimates(b["r"], b["mu"], b["pi"], 0.9, state)
    # w_0 = (1.6 + .4) / 2 = 1, w_1 = (.8 + .6) / 2 = .7: B gives .4 / 1 * 1 + 0.
    np.testing.assert_allclose(est["wis"]["V_step_WIS"], 0.4, rtol=1e-6)
    np.testing.assert_allclose(est["is"]["V_step_IS"], 0.4, rtol=1e-6)
    np.testing.assert_allclose(state.p_sum, [2.0, 1.4], rtol=1e-6)
    np.testing.assert_allclose(state.count, [2, 2])
    # A longer episode extends the weights; a shorter one leaves the tail alone.
    est, state = episode_estimates([1.0, 1.0, 1.0], np.zeros(3), np.zeros(3), 0.9, state)
    np.testing.assert_allclose(state.count, [3, 3, 1])
    np.testing.assert_allclose(est["wis"]["V_step_WIS"], 1 / (3 / 3) + 0.9 / (2.4 / 3)
                               + 0.81 / 1.0, rtol=1e-6)


def test_episode_bounds_follow_eps_id_t_and_termination():
    eps_id = np.array([7, 7, 7, 8, 8, 8, 8, 9])
    t = np.array([3, 4, 5, 0, 1, 5, 6, 0])
    terminated = np.array([0, 1, 0, 0, 0, 0, 0, 0], bool)
    # 0 starts; 2 follows a terminal step; 3 new eps_id; 5 t jumps; 7 new eps_id.
    np.testing.assert_array_equal(episode_bounds(eps_id, t, terminated), [0, 2, 3, 5, 7])


def _lane_batch(steps: list[dict], T: int, B: int) -> dict[str, np.ndarray]:
    """A [T, B] batch laid lane after lane (as BatchAssembler lays rows) from step dicts; the
    target log-probability rides in obs[:, 0] for the fake policy below."""
    cols = {k: np.array([s[k] for s in steps]) for k in steps[0]}
    batch = {k: np.swapaxes(v.reshape(B, T, *v.shape[1:]), 0, 1) for k, v in cols.items()}
    batch["obs"] = batch.pop("pi")[..., None].astype(np.float32)
    batch["actions"] = np.zeros((T, B), np.int32)
    return batch


def _steps(episode: dict, eps_id: int, terminated_at_end: bool = True) -> list[dict]:
    n = len(episode["r"])
    return [dict(rewards=episode["r"][i], action_logp=episode["mu"][i], pi=episode["pi"][i],
                 eps_id=eps_id, t=i, terminateds=terminated_at_end and i == n - 1)
            for i in range(n)]


def test_estimation_stitches_episodes_across_lanes_and_batches():
    estimation = OffPolicyEstimation(lambda policy, obs, actions: obs[:, 0], ("is", "wis"), 0.9)
    long_episode = dict(r=[1.0] * 5, mu=np.log([0.5] * 5), pi=np.log([0.6, 0.4, 0.5, 0.7, 0.5]))
    # Batch 1 (T=3, B=2): A's two steps, then the long episode's first 4 steps over 2 lanes;
    # batch 2 (T=3, B=1): its last step, then B.
    stream = _steps(EPISODE_A, 0) + _steps(long_episode, 1) + _steps(EPISODE_B, 2)
    estimation.add(None, _lane_batch(stream[:6], 3, 2))
    first = estimation.pop()["off_policy_estimator"]
    np.testing.assert_allclose(first["is"]["V_step_IS"], 1.6 + 0.9 * 0.8 * 2, rtol=1e-5)
    estimation.add(None, _lane_batch(stream[6:], 3, 1))
    second = estimation.pop()["off_policy_estimator"]
    expected, state = [], wis_init()
    for episode in (EPISODE_A, long_episode, EPISODE_B):
        est, state = episode_estimates(episode["r"], episode["mu"], episode["pi"], 0.9, state)
        expected.append(est)
    for name, metric in (("is", "V_step_IS"), ("wis", "V_step_WIS"), ("is", "V_prev")):
        want = np.mean([e[name][metric] for e in expected[1:]])
        np.testing.assert_allclose(second[name][metric], want, rtol=1e-5)
    assert estimation.pop() == {}


# -- the format ---------------------------------------------------------------------------------


def _fragment(T=6, B=2, seed=0):
    rng = np.random.default_rng(seed)
    terminated = np.zeros((T, B), bool)
    terminated[2, 0] = True
    truncated = np.zeros((T, B), bool)
    truncated[4, 1] = True
    return {
        "obs": rng.normal(size=(T, B, 4)).astype(np.float32),
        "new_obs": rng.normal(size=(T, B, 4)).astype(np.float32),
        "actions": rng.integers(0, 2, (T, B)).astype(np.int32),
        "rewards": rng.normal(size=(T, B)).astype(np.float32),
        "terminateds": terminated, "truncateds": truncated,
        "action_logp": -rng.random((T, B)).astype(np.float32),
        "eps_id": np.repeat(np.arange(B)[None], T, 0).astype(np.int64),
        "t": np.repeat(np.arange(T)[:, None], B, 1).astype(np.int64),
    }


@pytest.mark.parametrize("compress", [(), ("obs", "new_obs", "actions", "rewards",
                                           "action_logp")], ids=["plain", "compressed"])
def test_output_then_input_round_trip_is_bit_identical(tmp_path, compress):
    batch = _fragment()
    writer = JsonWriter(str(tmp_path), compress, worker_index=1)
    writer.write(batch)
    writer.close()
    rows = list(read_json(str(tmp_path)))
    assert len(rows) == 2
    for b, row in enumerate(rows):
        assert set(COLUMNS) <= set(row)
        for key, value in batch.items():
            got = row[key]
            if key in compress:  # dtype and shape travel with the column
                assert got.dtype == value.dtype
            got = got.astype(value.dtype)
            assert got.tobytes() == np.ascontiguousarray(value[:, b]).tobytes(), key
    line = json.loads(open(writer.paths[0]).readline())
    assert line["type"] == "SampleBatch"
    for key in compress:
        assert isinstance(line[key], str)  # base64 text, not a list
    if not compress:
        assert isinstance(line["obs"], list) and len(line["obs"]) == 6


def test_derived_columns_follow_rllib():
    batch = _fragment()
    row = complete_row({k: v[:, 0] for k, v in batch.items()})
    np.testing.assert_array_equal(row["dones"], batch["terminateds"][:, 0])
    np.testing.assert_allclose(row["action_prob"], np.exp(batch["action_logp"][:, 0]))
    np.testing.assert_array_equal(row["prev_actions"][1:], batch["actions"][:-1, 0])
    assert row["prev_actions"][0] == 0 and row["prev_rewards"][0] == 0.0
    np.testing.assert_array_equal(row["agent_index"], 0)
    assert row["infos"] == [{}] * 6


def test_packed_columns_are_npy_bytes_and_refuse_pickles():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(unpack(pack(array)), array)
    assert unpack(pack(array)).dtype == np.uint8
    objects = np.array([{"a": 1}], dtype=object)
    import base64
    import io
    import zlib

    buf = io.BytesIO()
    np.save(buf, objects, allow_pickle=True)
    text = base64.b64encode(zlib.compress(buf.getvalue())).decode()
    with pytest.raises(ValueError):
        unpack(text)


def test_output_files_are_named_per_worker_and_roll_over_at_the_size_cap(tmp_path):
    writer = JsonWriter(str(tmp_path), (), worker_index=3, max_file_size=2000)
    for seed in range(4):
        writer.write(_fragment(seed=seed))
    writer.close()
    names = sorted(os.listdir(tmp_path))
    assert len(names) > 1
    pattern = re.compile(r"output-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_worker-3_(\d+)\.json")
    assert all(pattern.fullmatch(n) for n in names), names
    sizes = [os.path.getsize(tmp_path / n) for n in writer.paths]
    line = max(len(x) for p in writer.paths for x in open(p))
    assert all(s < 2000 + line for s in sizes)
    assert len(list(read_json(str(tmp_path)))) == 8


def test_trainer_output_to_logdir_writes_the_format(make_trainer):
    trainer = make_trainer("PPO", output="logdir", output_compress_codec="zlib")
    trainer.train()
    files = [f for f in os.listdir(trainer.logdir) if f.startswith("output-")]
    assert files and all(f.endswith(".json") for f in files)
    rows = list(read_json(os.path.join(trainer.logdir, "output-*.json")))
    assert rows and set(COLUMNS) <= set(rows[0])
    assert rows[0]["obs"].dtype == np.float32  # compressed by default
    line = json.loads(open(os.path.join(trainer.logdir, files[0])).readline())
    assert base64.b64decode(line["obs"])[:1] == b"\x78"  # the config's codec: a zlib stream
    np.testing.assert_allclose(rows[0]["action_prob"], np.exp(rows[0]["action_logp"]), rtol=1e-6)


# -- reading ------------------------------------------------------------------------------------


def _write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def _good_line(n=3):
    return json.dumps({"type": "SampleBatch", "obs": [[0.0] * 4] * n,
                       "new_obs": [[0.0] * 4] * n, "actions": [0] * n, "rewards": [1.0] * n,
                       "dones": [False] * (n - 1) + [True]})


@pytest.mark.parametrize("bad,message", [
    ("{not json", "malformed"),
    (json.dumps({"type": "SampleBatch", "obs": [[0.0] * 4]}), "missing column"),
    (json.dumps({"obs": [[0.0] * 4] * 2, "new_obs": [[0.0] * 4] * 2, "actions": [0] * 2,
                 "rewards": [1.0]}), "has 2 steps"),
    (json.dumps({"obs": "@@not base64@@", "new_obs": [[0.0] * 4], "actions": [0],
                 "rewards": [1.0]}), "cannot be decoded"),
    (json.dumps({"obs": [[0.0] * 4, [0.0]], "new_obs": [[0.0] * 4] * 2, "actions": [0, 0],
                 "rewards": [1.0, 1.0]}), "column 'obs'"),
    (json.dumps({"type": "MultiAgentBatch"}), "needs a 'policy_batches' object"),
    (json.dumps({"type": "Batch", "obs": [[0.0] * 4], "new_obs": [[0.0] * 4], "actions": [0],
                 "rewards": [1.0]}), "only SampleBatch"),
    ("[1, 2]", "JSON object"),
])
def test_a_malformed_line_names_its_file_and_line(tmp_path, bad, message):
    path = _write_lines(tmp_path / "data.json", [_good_line(), bad, _good_line()])
    with pytest.raises(DataError, match=rf"data\.json, line 2: .*{re.escape(message)}"):
        list(read_json(path))


def test_non_strict_json_numbers_of_python_writers_are_read(tmp_path):
    """RLlib writes with ``json.dumps``, which may emit -Infinity (log 0) or NaN: the fast
    strict parser falls back to the standard library's for such lines."""
    line = json.dumps({"obs": [[0.0] * 4] * 2, "new_obs": [[0.0] * 4] * 2, "actions": [0, 1],
                       "rewards": [1.0, 1.0], "action_logp": [float("-inf"), -0.5],
                       "infos": [{"x": float("nan")}, {}]})
    (row,) = read_json(_write_lines(tmp_path / "d.json", [line]))
    assert row["action_logp"][0] == -np.inf and row["action_logp"][1] == np.float32(-0.5)
    assert math.isnan(row["infos"][0]["x"])


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not a file, directory or glob"):
        list(read_json(str(tmp_path / "nope")))
    with pytest.raises(DataError, match="holds no .json files"):
        list(read_json(str(tmp_path)))


def test_rllib_rows_with_only_dones_read_as_terminations(tmp_path):
    path = _write_lines(tmp_path / "rllib.json", [_good_line(3)])
    (row,) = read_json(path)
    np.testing.assert_array_equal(row["terminateds"], [False, False, True])
    np.testing.assert_array_equal(row["truncateds"], False)
    np.testing.assert_array_equal(row["action_logp"], 0.0)


def test_directory_glob_and_list_inputs_resolve_to_the_same_rows(tmp_path):
    for i in range(3):
        _write_lines(tmp_path / f"part-{i}.json", [_good_line(i + 2)])
    (tmp_path / "notes.txt").write_text("not data")
    lengths = lambda rows: [len(r["rewards"]) for r in rows]  # noqa: E731
    assert lengths(read_json(str(tmp_path))) == [2, 3, 4]
    assert lengths(read_json(str(tmp_path / "part-*.json"))) == [2, 3, 4]
    assert lengths(read_json([str(tmp_path / "part-2.json"), str(tmp_path / "part-0.json")])
                   ) == [4, 2]


def test_assembler_lays_rows_end_to_end_and_cuts_at_row_ends():
    asm = BatchAssembler(T=3, B=2, obs_dtype="float32", action_dtype="int32", obs_shape=(1,))

    def row(values, terminated_last):
        n = len(values)
        return {"obs": np.array(values, np.float64)[:, None], "new_obs": np.zeros((n, 1)),
                "actions": np.zeros(n, np.int64), "rewards": np.ones(n, np.float32),
                "terminateds": np.array([False] * (n - 1) + [terminated_last]),
                "truncateds": np.zeros(n, bool), "action_logp": np.zeros(n, np.float32)}

    asm.add(row([0, 1], terminated_last=False))  # a row cut before its episode ended
    asm.add(row([2, 3, 4, 5, 6], terminated_last=True))
    assert asm.ready
    batch = asm.pop()
    assert batch["obs"].dtype == np.float32 and batch["actions"].dtype == np.int32
    np.testing.assert_array_equal(batch["obs"][..., 0], [[0, 3], [1, 4], [2, 5]])  # lanes
    np.testing.assert_array_equal(batch["truncateds"], [[False, False], [True, False],
                                                        [False, False]])
    np.testing.assert_array_equal(batch["episode_start"], [[True, True], [False, False],
                                                           [True, False]])
    assert not asm.ready  # step 6 waits for more rows


def test_reader_loops_over_files_and_shuffles_rows(tmp_path):
    path = _write_lines(tmp_path / "d.json", [_good_line(2)] * 5)
    reader = JsonReader(path, BatchAssembler(4, 1, "float32", "int32", (4,)))
    for _ in range(10):  # 40 steps from a 10-step file
        assert reader.next()["rewards"].shape == (4, 1)
    rows = [{"i": i} for i in range(20)]
    shuffled = [r["i"] for r in ShuffledInput(iter(rows), 8, seed=0)]
    assert sorted(shuffled) == list(range(20)) and shuffled != list(range(20))
    with pytest.raises(DataError, match="recorded on another env"):
        JsonReader(path, BatchAssembler(4, 1, "float32", "int32", (3,))).next()


def test_mixed_input_draws_sources_at_their_rates():
    rates = {"sampler": 0.2, "a/": 0.3, "b/": 0.5}
    mixed = MixedInput(rates, {k: (lambda k=k: k) for k in rates}, seed=1)
    n = 3000
    for _ in range(n):
        name, value = mixed.next()
        assert name == value
    # Pearson's chi-square, 2 degrees of freedom: 13.8 is the 0.1% critical value.
    chi2 = sum((mixed.counts[k] - n * p) ** 2 / (n * p) for k, p in rates.items())
    assert chi2 < 13.8, mixed.counts


@pytest.mark.parametrize("value,match", [
    ({"sampler": 0.5, "data/": 0.6}, "sum to 1"),
    ({"sampler": -1.0, "x": 2.0}, "probability"),
    (["sampler", "x.json"], "as a dict"),
    (3, "must be"),
])
def test_bad_input_configs_are_refused(value, match):
    with pytest.raises(ConfigError, match=match):
        jrl.Trainer("MARWIL", env="CartPole-v1", config={"input": value}, log_to_disk=False)


def test_bc_refuses_a_nonzero_beta_and_unknown_estimators():
    with pytest.raises(ConfigError, match="beta"):
        jrl.Trainer("BC", env="CartPole-v1", config={"beta": 1.0}, log_to_disk=False)
    with pytest.raises(ConfigError, match="input_evaluation"):
        jrl.Trainer("MARWIL", env="CartPole-v1", config={"input_evaluation": ["dm"]},
                    log_to_disk=False)


# -- learning from files ------------------------------------------------------------------------


@pytest.fixture
def recorded(tmp_path, make_trainer):
    """A directory of episodes recorded by a (random) PPO policy through ``output``."""
    out = str(tmp_path / "recorded")
    trainer = make_trainer("PPO", output=out)
    for _ in range(3):
        trainer.train()
    return out


def test_marwil_learns_from_files_and_reports_off_policy_estimates(recorded, make_trainer):
    trainer = make_trainer("MARWIL", input=recorded, shuffle_buffer_size=4)
    result = trainer.train()
    assert result["timesteps_total"] >= 64
    estimates = result["off_policy_estimator"]
    assert set(estimates) == {"is", "wis"}
    assert set(estimates["is"]) == {"V_prev", "V_step_IS", "V_gain_est"}
    assert set(estimates["wis"]) == {"V_prev", "V_step_WIS", "V_gain_est"}
    # Every recorded step has reward 1: V_prev is a discounted episode length.
    assert 1.0 <= estimates["is"]["V_prev"] <= 1 / (1 - trainer.algo_config.gamma)
    assert all(math.isfinite(v) for e in estimates.values() for v in e.values())
    assert int(trainer.state.num_updates) >= 1


def test_mixed_sampler_and_file_input_share_one_compiled_update(recorded, make_trainer):
    trainer = make_trainer("BC", input={"sampler": 0.5, recorded: 0.5})
    definition = registry.get_algorithm_def("BC")
    algorithm = trainer.algorithm._replace(
        update=chex.assert_max_traces(trainer.algorithm.update, n=1))
    plan = OfflinePlan(definition, algorithm, trainer.workers, trainer.algo_config, trainer.spec)
    state = trainer.state
    for _ in range(12):
        state, metrics, steps = plan.step(state)
        assert steps == 64
    assert set(plan.input.counts) == {"sampler", recorded}
    assert all(c > 0 for c in plan.input.counts.values()), plan.input.counts


def test_fit_epochs_trains_on_a_whole_data_set_inside_one_jit(recorded, make_trainer):
    trainer = make_trainer("MARWIL")
    spec = trainer.spec
    dataset = load_dataset(recorded, 32, 2, spec.obs_dtype, spec.action_dtype, spec.obs_shape)
    batches = dataset_transitions(dataset)
    K = batches.reward.shape[0]
    assert K >= 2
    algorithm = trainer.algorithm._replace(
        update=chex.assert_max_traces(trainer.algorithm.update, n=1))
    state, metrics = fit_epochs(algorithm, num_epochs=3)(trainer.state, batches,
                                                        jax.random.PRNGKey(0))
    assert int(state.num_updates) == 3 * K
    assert metrics["total_loss"].shape == (3,)
    assert np.all(np.isfinite(np.asarray(metrics["total_loss"])))


def test_evaluate_out_episodes_read_back_as_training_input(tmp_path, make_trainer):
    trainer = make_trainer("PPO")
    episodes = trainer.rollout_episodes(3, explore=True, record=True)
    path = str(tmp_path / "episodes.json")
    write_episodes(path, episodes, ("obs",))
    rows = list(read_json(path))
    assert [len(r["rewards"]) for r in rows] == [e["episode_len"] for e in episodes]
    for row, episode in zip(rows, episodes, strict=True):
        assert row["dones"][-1] and not row["dones"][:-1].any()
        np.testing.assert_array_equal(row["obs"], episode["obs"])
        np.testing.assert_array_equal(row["new_obs"][:-1], row["obs"][1:])
        np.testing.assert_array_equal(row["t"], np.arange(len(row["t"])))
        assert (row["action_logp"] < 0).all()  # exploring: the sampled actions' log-probs


@pytest.mark.parametrize("algo", ["DQN", "SAC"])
def test_off_policy_algorithms_learn_from_files_without_sampling(recorded, make_trainer, algo):
    trainer = make_trainer(algo, input=recorded)
    trainer.train()
    assert int(trainer.state.num_updates) > 0
    assert trainer.workers.local_worker().steps_sampled == 0  # every fragment came from files


def test_estimators_and_distributed_replay_refuse_what_they_cannot_do(recorded, make_trainer):
    with pytest.raises(ConfigError, match="action_logp"):
        make_trainer("DQN", input=recorded, input_evaluation=["is"])
    with pytest.raises(ConfigError, match="'input' must be 'sampler'"):
        make_trainer("APEX", input=recorded)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cartpole-bc.yaml", "cartpole-marwil.yaml"])
def test_tuned_offline_example_reaches_nine_tenths_of_the_expert(name, tmp_path):
    """The README's recipe: a PPO expert (configs/cartpole-ppo.yaml), its greedy episodes
    recorded in jrl evaluate --out's format, then the tuned BC / MARWIL example on them."""
    from jrl.cli import load_experiments

    configs = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
    (ppo,) = load_experiments(os.path.join(configs, "cartpole-ppo.yaml")).values()
    expert = jrl.Trainer("PPO", env="CartPole-v1", config=ppo["config"], log_to_disk=False)
    while expert.timesteps_total < 200_000:
        if expert.train().get("evaluation", {}).get("episode_reward_mean", 0) >= 475:
            break
    episodes = expert.rollout_episodes(100, record=True)
    expert.stop()
    data = str(tmp_path / "expert" / "expert.json")
    write_episodes(data, episodes, ("obs", "new_obs"))
    target = 0.9 * float(np.mean([e["episode_reward"] for e in episodes]))
    (spec,) = load_experiments(os.path.join(configs, name)).values()
    trainer = jrl.Trainer(spec["run"], env="CartPole-v1",
                          config={**spec["config"], "input": os.path.dirname(data)},
                          log_to_disk=False)
    try:
        best = 0.0
        for _ in range(100):
            best = max(best, trainer.train()["evaluation"]["episode_reward_mean"])
            if best >= target:
                break
        assert best >= target, f"{spec['run']}: best {best:.1f} < 0.9x expert ({target:.1f})"
    finally:
        trainer.stop()


TWO_DEVICE_SCRIPT = '''
import jax, numpy as np
import jrl
from jrl.registry import make_algorithm

trainer = jrl.Trainer("MARWIL", env="CartPole-v1", log_to_disk=False, config={
    "num_envs_per_worker": 4, "rollout_fragment_length": 16, "train_batch_size": 64,
    "moving_average_sqd_adv_norm_update_rate": 0.5, "observation_filter": "MeanStdFilter",
    "model": {"fcnet_hiddens": [16, 16]}})
plan = trainer.backend.plan
assert plan.learner.num_devices == 2
worker = trainer.workers.local_worker()
worker.set_policy(trainer.algorithm.policy(trainer.state))
batch = worker.sample().to_transition()
one = jax.jit(make_algorithm("MARWIL", trainer.algo_config, trainer.spec).update)
for a, b in zip(jax.tree.leaves(one(trainer.state, batch)),
                jax.tree.leaves(plan.learner.update(trainer.state, batch)), strict=True):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=2e-4, atol=2e-5)
trainer.stop()
print("OK")
'''


def test_marwil_two_device_update_equals_one_device_update(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "JRL_RESULTS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", TWO_DEVICE_SCRIPT], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")


def test_dqn_records_its_epsilon_greedy_behaviour_probability():
    from jrl.types import EnvSpec

    spec = EnvSpec(obs_shape=(3,), action_kind="discrete", num_actions=4)
    algo = registry.make_algorithm("DQN", registry.parse_config("DQN"), spec)
    policy = algo.policy(algo.init(jax.random.PRNGKey(0)))._replace(epsilon=jnp.float32(0.4))
    obs = jnp.ones((512, 3))
    greedy, _ = algo.act(policy, obs, jax.random.PRNGKey(1), False)
    action, extras = jax.jit(algo.act, static_argnums=3)(policy, obs, jax.random.PRNGKey(2), True)
    prob = np.exp(np.asarray(extras["action_logp"]))
    # eps / n = 0.1 on every action, plus 1 - eps = 0.6 on the greedy one.
    np.testing.assert_allclose(prob, np.where(action == greedy, 0.7, 0.1), rtol=1e-6)
    assert 0 < (action != greedy).sum() < 512


# -- codecs of compressed columns -----------------------------------------------------------------


def _payload(text):
    import base64

    return base64.b64decode(text)


@pytest.mark.parametrize("codec", ["lz4", "zlib"])
def test_round_trip_per_codec_is_bit_identical_and_the_value_names_its_codec(tmp_path, codec):
    batch = _fragment()
    writer = JsonWriter(str(tmp_path), [c for c in COLUMNS if c != "infos"], worker_index=0,
                        compress_codec=codec)
    writer.write(batch)
    writer.close()
    rows = list(read_json(str(tmp_path)))
    for b, row in enumerate(rows):
        for key, value in batch.items():
            assert row[key].dtype == value.dtype, key
            assert row[key].tobytes() == np.ascontiguousarray(value[:, b]).tobytes(), key
    line = json.loads(open(writer.paths[0]).readline())
    magic = _payload(line["obs"])[:4]
    if codec == "lz4":
        assert magic == b"\x04\x22\x4d\x18"  # an LZ4 frame
    else:
        assert magic[0] == 0x78  # a zlib stream
    # load_dataset's batches do not depend on the codec
    expected = load_dataset(str(tmp_path), 3, 2, np.float32, np.int32, (4,))
    other = tmp_path / "other"
    writer = JsonWriter(str(other), ["obs"], compress_codec="zlib" if codec == "lz4" else "lz4")
    writer.write(batch)
    writer.close()
    got = load_dataset(str(other), 3, 2, np.float32, np.int32, (4,))
    for key in expected:
        assert got[key].tobytes() == expected[key].tobytes(), key


def test_old_zlib_files_and_files_mixing_codecs_still_read(tmp_path):
    import base64
    import io
    import zlib

    obs = np.arange(12, dtype=np.float32).reshape(3, 4)

    def zlib_value(array, level):  # what earlier versions wrote (level 1), or another writer's
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        return base64.b64encode(zlib.compress(buf.getvalue(), level)).decode()

    lines = [json.dumps({"type": "SampleBatch", "obs": zlib_value(obs, 1),
                         "new_obs": zlib_value(obs + 1, 9), "actions": [0, 1, 0],
                         "rewards": [1.0, 1.0, 1.0]}),
             json.dumps({"type": "SampleBatch", "obs": pack(obs, "lz4"),
                         "new_obs": pack(obs + 1, "zlib"), "actions": [0, 1, 0],
                         "rewards": [1.0, 1.0, 1.0]})]
    rows = list(read_json(_write_lines(tmp_path / "old.json", lines)))
    for row in rows:
        assert row["obs"].dtype == np.float32
        np.testing.assert_array_equal(row["obs"], obs)
        np.testing.assert_array_equal(row["new_obs"], obs + 1)
    with pytest.raises(ValueError, match="unknown codec"):
        JsonWriter(str(tmp_path / "w"), ["obs"], compress_codec="gzip")


def _lz4_frame(raw):
    import base64

    import lz4.frame

    return base64.b64encode(lz4.frame.compress(raw)).decode()


@pytest.mark.parametrize("value,message", [
    (pack(np.zeros((3, 4), np.float32), "lz4")[:-12], "column 'obs' cannot be decoded"),
    (_lz4_frame(b"\x93NUMPY" + b"\x00" * 40)[:24] + "AAAA" * 8, "column 'obs' cannot be decoded"),
    (pack(np.zeros((3, 4), np.float32), "zlib")[:-8], "column 'obs' cannot be decoded"),
    ("QUJDRA==", "not an LZ4 frame or zlib stream"),
    # RLlib's compressed columns: base64 of an LZ4 frame of a pickle, never loaded
    (_lz4_frame(b"\x80\x04\x95" + b"\x00" * 20), "pickle"),
], ids=["lz4-truncated", "lz4-corrupt", "zlib-truncated", "unknown-codec", "rllib-pickle"])
def test_a_corrupt_compressed_value_is_one_data_error_naming_file_line_and_column(
        tmp_path, value, message):
    bad = json.dumps({"type": "SampleBatch", "obs": value, "new_obs": [[0.0] * 4] * 3,
                      "actions": [0] * 3, "rewards": [1.0] * 3})
    path = _write_lines(tmp_path / "data.json", [_good_line(), bad])
    with pytest.raises(DataError, match=rf"data\.json, line 2: .*{re.escape(message)}") as info:
        list(read_json(path))
    assert "\n" not in str(info.value) and "column 'obs'" in str(info.value)
    with pytest.raises(DataError, match=r"data\.json, line 2: "):
        load_dataset(path, 2, 1, np.float32, np.int32, (4,))


def test_the_codec_is_a_validated_config_key():
    with pytest.raises(ConfigError, match="output_compress_codec"):
        jrl.Trainer("PG", env="CartPole-v1", config={"output_compress_codec": "gzip"},
                    log_to_disk=False)


def test_pop_stacked_equals_batches_popped_one_by_one():
    rng = np.random.default_rng(0)
    rows = []
    for i, n in enumerate((5, 9, 2, 13, 7)):
        rows.append({"obs": rng.random((n, 4)).astype(np.float32),
                     "new_obs": rng.random((n, 4)).astype(np.float32),
                     "actions": rng.integers(0, 2, n), "rewards": rng.random(n),
                     "terminateds": np.arange(n) == n - 1 if i % 2 else np.zeros(n, bool),
                     "truncateds": np.zeros(n, bool), "action_logp": -rng.random(n),
                     "eps_id": np.full(n, i), "t": np.arange(n)})
    one, many = (BatchAssembler(3, 2, np.float32, np.int32, (4,)) for _ in range(2))
    for row in rows:
        one.add(row)
        many.add(row)
    singles = []
    while one.ready:
        singles.append(one.pop())
    stacked = many.pop_stacked()
    assert len(singles) == 6 and stacked["obs"].shape == (6, 3, 2, 4)
    for key in stacked:
        assert stacked[key].tobytes() == np.stack([b[key] for b in singles]).tobytes(), key
    assert not many.ready and not one.ready
    with pytest.raises(ValueError, match="batches of 6 steps asked"):
        many.pop_stacked(1)


def test_readers_skip_empty_infos_without_parsing_and_keep_the_rest():
    from jrl.rollout.offline import drop_empty_infos

    line = b'{"obs": [1], "infos": [{}, {}, {}]}\n'
    assert drop_empty_infos(line) == b'{"obs": [1]}'
    for kept in (b'{"obs": [1], "infos": [{}, {"a": {}}]}\n', b'{"obs": [1], "infos": [{},{}]}\n',
                 b'{"obs": [1], "infos": []}\n', b'{"obs": [1], "infos": [{}, {}, {}]}',
                 b'{"obs": [1], "infos": [{}{}, {}]}\n', b'{"infos": [{}], "obs": [1]}\n'):
        assert drop_empty_infos(kept) is kept


def test_infos_are_read_back_and_batches_ignore_them(tmp_path):
    batch = _fragment()
    infos = [[{"step": t} if b else {} for b in range(2)] for t in range(6)]
    writer = JsonWriter(str(tmp_path), ["obs"])
    writer.write(batch, infos)
    writer.close()
    rows = list(read_json(str(tmp_path)))
    assert rows[0]["infos"] == [{}] * 6 and rows[1]["infos"] == [{"step": t} for t in range(6)]
    got = load_dataset(str(tmp_path), 3, 2, np.float32, np.int32, (4,))
    flat = np.concatenate([batch["rewards"][:, 0], batch["rewards"][:, 1]]).astype(np.float32)
    np.testing.assert_array_equal(got["rewards"], flat.reshape(2, 2, 3).swapaxes(1, 2))
    np.testing.assert_array_equal(got["obs"][1, :, 1], batch["obs"][3:, 1])
