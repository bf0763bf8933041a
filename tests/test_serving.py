"""ExternalEnv, PolicyServer/PolicyClient and ``jrl serve``: training on external episodes,
the JSON protocol's answers to bad input, tokens, concurrency and server restarts."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import gymnasium as gym
import numpy as np
import pytest

import jrl
from jrl.errors import ConfigError, EnvError
from jrl.rollout.external_env import ExternalEnvClosed, UnknownEpisodeError
from jrl.serving import PolicyClient, PolicyServer, ServerError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "s3cret-token-for-tests"
# One small PPO setup for every trainer here, so later trainers load the compiled programs.
PPO_SMALL = {"num_workers": 0, "rollout_fragment_length": 10, "num_envs_per_worker": 2,
             "train_batch_size": 20, "sgd_minibatch_size": 20, "num_sgd_iter": 1,
             "model": {"fcnet_hiddens": [16]}}


class CartPoleSim(jrl.ExternalEnv):
    """Runs CartPole episodes itself (no HTTP); ``marker`` episodes are not trained on."""

    def __init__(self, off_policy: bool = False, disabled_every: int = 0):
        env = gym.make("CartPole-v1")
        super().__init__(env.action_space, env.observation_space)
        self.env, self.off_policy, self.disabled_every = env, off_policy, disabled_every

    def run(self):
        try:
            self._episodes_forever()
        except ExternalEnvClosed:  # the trainer stopped
            pass

    def _episodes_forever(self):
        n = 0
        while True:
            n += 1
            disabled = bool(self.disabled_every) and n % self.disabled_every == 0
            eid = self.start_episode(training_enabled=not disabled)
            obs, _ = self.env.reset(seed=n)
            while True:
                if disabled:
                    obs = obs.copy()
                    obs[0] = 9.0  # marks the disabled episodes' observations
                if self.off_policy:
                    action = int(self.env.action_space.sample())
                    self.log_action(eid, obs, action)
                else:
                    action = self.get_action(eid, obs)
                obs, reward, terminated, truncated, _ = self.env.step(action)
                self.log_returns(eid, reward)
                if terminated or truncated:
                    self.end_episode(eid, obs, truncated=truncated and not terminated)
                    break


class ServingEnv(jrl.ExternalEnv):
    """Serves its episodes with a PolicyServer on ``port`` (0: any free one)."""

    def __init__(self, port: int = 0, token: str | None = None, **limits):
        super().__init__(gym.spaces.Discrete(2),
                         gym.spaces.Box(-10.0, 10.0, (4,), np.float32), max_concurrent=64)
        self.port, self.token, self.limits = port, token, limits
        self.server: PolicyServer | None = None
        self.ready = threading.Event()

    def run(self):
        self.server = PolicyServer(self, "127.0.0.1", self.port, token=self.token, **self.limits)
        self.ready.set()
        self.server.serve_forever()


class Batches(jrl.DefaultCallbacks):
    seen: list = []
    episodes: list = []  # (event, episode length) from the episode callbacks

    def on_sample_end(self, *, samples, **kwargs):
        Batches.seen.append({k: np.array(v) for k, v in samples.items()})

    def on_episode_start(self, *, episode, env_index, **kwargs):
        episode.user_data["steps"] = 0
        Batches.episodes.append(("start", episode.length))

    def on_episode_step(self, *, episode, **kwargs):
        episode.user_data["steps"] += 1
        assert episode.last_observation_for() is not None

    def on_episode_end(self, *, episode, **kwargs):
        assert episode.user_data["steps"] == episode.length
        episode.custom_metrics["steps_seen"] = episode.user_data["steps"]
        Batches.episodes.append(("end", episode.length))


def _train_in_background(trainer):
    stop = threading.Event()
    results: list = []

    def loop():
        while not stop.is_set():
            try:
                results.append(trainer.train())
            except Exception as e:  # the trainer was stopped under us
                results.append(e)
                return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return stop, thread, results


@pytest.fixture(scope="module")
def served():
    """A PPO trainer training on a ServingEnv with a token, in a background thread."""
    jrl.register_env("serving-test", lambda ctx: ServingEnv(token=TOKEN, max_body_bytes=4096,
                                                             request_timeout=10.0))
    trainer = jrl.Trainer("PPO", env="serving-test", config=PPO_SMALL, log_to_disk=False)
    env = trainer.workers.local_worker().foreach_env(lambda e: e)[0]
    stop, thread, results = _train_in_background(trainer)
    assert env.ready.wait(60), "the policy server did not start"
    yield env, results
    stop.set()
    trainer.stop()
    thread.join(timeout=30)


def _post(port, path, body, token=TOKEN, raw=None, method="POST"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, payload


# -- in-process ExternalEnv -------------------------------------------------------------------


def test_ppo_trains_on_an_external_env_and_skips_disabled_episodes():
    Batches.seen, Batches.episodes = [], []
    jrl.register_env("sim-disabled", lambda ctx: CartPoleSim(disabled_every=2))
    trainer = jrl.Trainer("PPO", env="sim-disabled",
                          config={**PPO_SMALL, "callbacks": Batches}, log_to_disk=False)
    try:
        results = [trainer.train() for _ in range(5)]
    finally:
        trainer.stop()
    assert results[-1]["timesteps_total"] == 100
    assert results[-1]["episodes_total"] > 0
    # Episode callbacks fire for external episodes as for env episodes; their custom metrics
    # reach the results.
    ends = [n for event, n in Batches.episodes if event == "end"]
    assert ends and all(n > 0 for n in ends)
    assert Batches.episodes[0] == ("start", 0)
    assert any(r["custom_metrics"].get("steps_seen_mean", 0) > 0 for r in results)
    for batch in Batches.seen:
        assert batch["obs"].shape == (10, 2, 4)
        assert not np.any(batch["obs"][..., 0] == 9.0)  # training_enabled=False never trains
        # Where a column switches episodes, the earlier one ends or bootstraps (truncated).
        switch = batch["eps_id"][1:] != batch["eps_id"][:-1]
        ended = batch["terminateds"][:-1] | batch["truncateds"][:-1]
        assert np.all(ended[switch])
        # Consecutive steps of one episode chain: next_obs[t] == obs[t + 1].
        same = ~switch
        np.testing.assert_array_equal(batch["new_obs"][:-1][same], batch["obs"][1:][same])


def test_dqn_trains_on_logged_off_policy_actions():
    jrl.register_env("sim-off", lambda ctx: CartPoleSim(off_policy=True))
    trainer = jrl.Trainer("DQN", env="sim-off", config={
        "num_workers": 0, "learning_starts": 32, "timesteps_per_iteration": 64,
        "rollout_fragment_length": 4, "train_batch_size": 32, "model": {"fcnet_hiddens": [16]}},
        log_to_disk=False)
    try:
        result = trainer.train()
    finally:
        trainer.stop()
    assert result["timesteps_total"] >= 64 and result["episodes_total"] > 0
    assert result["info"]["num_steps_trained"] > 0
    assert np.isfinite(result["info"]["learner"]["default_policy"]["loss"])


@pytest.mark.slow
def test_ppo_trains_on_external_envs_in_ray_workers(ray_cluster):
    jrl.register_env("sim-ray", lambda ctx: CartPoleSim())
    trainer = jrl.Trainer("PPO", env="sim-ray", config={**PPO_SMALL, "num_workers": 2},
                          log_to_disk=False)
    try:
        result = trainer.train()
    finally:
        trainer.stop()
    assert result["timesteps_total"] == 40 and result["episodes_total"] > 0


def test_external_env_rejects_bad_calls(served):
    env, _ = served
    eid = env.start_episode()
    with pytest.raises(UnknownEpisodeError):
        env.log_returns("nope", 1.0)
    with pytest.raises(EnvError, match="not in the action space"):
        env.log_action(eid, [0.0, 0.0, 0.0, 0.0], 5)
    with pytest.raises(EnvError, match="NaN or inf"):
        env.get_action(eid, [0.0, float("nan"), 0.0, 0.0])
    with pytest.raises(EnvError):
        env.get_action(eid, [0.0, 0.0])
    with pytest.raises(EnvError, match="already started"):
        env.start_episode(eid)
    assert env.get_action(eid, [0.0, 0.1, 0.0, -0.1]) in (0, 1)
    env.end_episode(eid, [0.0, 0.1, 0.0, -0.1])
    assert not env.has_episode(eid)


# -- HTTP: the protocol -------------------------------------------------------------------------


def test_remote_client_runs_episodes(served):
    env, results = served
    client = PolicyClient(f"http://127.0.0.1:{env.server.port}", token=TOKEN)
    sim = gym.make("CartPole-v1")
    deadline, episode = time.time() + 60, 0
    # Episodes until the trainer reports some of them (a train batch is 20 steps).
    while not any(isinstance(r, dict) and r["episodes_total"] >= 3 for r in results):
        assert time.time() < deadline, "the trainer never trained on the client's episodes"
        eid = client.start_episode()
        obs, _ = sim.reset(seed=episode)
        episode += 1
        done = False
        while not done:
            action = client.get_action(eid, obs)
            assert action in (0, 1)
            obs, reward, terminated, truncated, _ = sim.step(action)
            client.log_returns(eid, reward, info={"note": "x"})
            done = terminated or truncated
        client.end_episode(eid, obs)
    client.close()
    status, body = _post(env.server.port, "/healthz", None, token=None, method="GET")
    assert status == 200 and json.loads(body)["status"] == "ok"


def _started(port):
    status, body = _post(port, "/v1/start_episode", {})
    assert status == 200
    return json.loads(body)["episode_id"]


BAD_INPUTS = [
    ("malformed JSON", "/v1/get_action", None, b"{not json", 400),
    ("not an object", "/v1/get_action", None, b"[1, 2]", 400),
    ("NaN literal", "/v1/get_action", None, b'{"episode_id": "E", "observation": [NaN, 0, 0, 0]}',
     400),
    ("overflowing number", "/v1/get_action", None,
     b'{"episode_id": "E", "observation": [1e999, 0, 0, 0]}', 400),
    ("wrong shape", "/v1/get_action", {"episode_id": "E", "observation": [0.0, 0.0]}, None, 400),
    ("wrong type", "/v1/get_action", {"episode_id": "E", "observation": "abc"}, None, 400),
    ("unknown field", "/v1/log_returns", {"episode_id": "E", "reward": 1, "rewrd": 1}, None, 400),
    ("missing field", "/v1/log_returns", {"episode_id": "E"}, None, 400),
    ("reward not a number", "/v1/log_returns", {"episode_id": "E", "reward": "1"}, None, 400),
    ("out-of-space action", "/v1/log_action",
     {"episode_id": "E", "observation": [0, 0, 0, 0], "action": 7}, None, 400),
    ("fractional action", "/v1/log_action",
     {"episode_id": "E", "observation": [0, 0, 0, 0], "action": 0.5}, None, 400),
    ("unknown episode", "/v1/get_action", {"episode_id": "nope", "observation": [0, 0, 0, 0]},
     None, 404),
    ("unknown path", "/v1/unknown", {}, None, 404),
    ("bad batch command", "/v1/batch", {"commands": [{"command": "explode"}]}, None, 400),
    ("body over the cap", "/v1/log_returns", None,
     json.dumps({"episode_id": "E", "reward": 1, "info": {"x": "y" * 5000}}).encode(), 413),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_one_line_json_4xx(served, case):
    env, _ = served
    _, path, body, raw, expected = case
    eid = _started(env.server.port)
    if body is not None:
        body = json.loads(json.dumps(body).replace('"E"', json.dumps(eid)))
    if raw is not None:
        raw = raw.replace(b'"E"', json.dumps(eid).encode())
    status, payload = _post(env.server.port, path, body, raw=raw)
    assert status == expected, payload
    answer = json.loads(payload)
    assert set(answer) <= {"error", "index"} and "\n" not in answer["error"] and answer["error"]
    # The episode still works after the bad request.
    status, _ = _post(env.server.port, "/v1/get_action",
                      {"episode_id": eid, "observation": [0, 0, 0, 0]})
    assert status == 200


def test_idle_episodes_time_out_with_a_clear_404(served):
    env, _ = served
    server = PolicyServer(env, "127.0.0.1", 0, token=TOKEN, episode_timeout_s=0.3).start()
    try:
        idle, busy = _started(server.port), _started(server.port)
        deadline = time.time() + 1.0
        while time.time() < deadline:  # calls keep `busy` alive
            status, _ = _post(server.port, "/v1/log_returns", {"episode_id": busy, "reward": 1})
            assert status == 200
            time.sleep(0.05)
        status, body = _post(server.port, "/v1/log_returns", {"episode_id": idle, "reward": 1})
        assert status == 404 and "without calls" in json.loads(body)["error"]
        assert env.has_episode(busy) and not env.has_episode(idle)
        assert _post(server.port, "/v1/end_episode",
                     {"episode_id": busy, "observation": [0, 0, 0, 0]})[0] == 200
    finally:
        server.shutdown()
    with pytest.raises(ConfigError, match="episode_timeout_s"):
        PolicyServer(env, "127.0.0.1", 0, token=TOKEN, episode_timeout_s=-1)


def test_wrong_method_gets_405_json(served):
    env, _ = served
    status, payload = _post(env.server.port, "/v1/get_action", None, method="GET")
    assert status == 405 and "error" in json.loads(payload)


def test_token_is_required_and_checked(served):
    env, _ = served
    for token in (None, "wrong-token-123"):
        status, payload = _post(env.server.port, "/v1/start_episode", {}, token=token)
        assert status == 401 and "token" in json.loads(payload)["error"]
    with pytest.raises(ServerError) as err:
        PolicyClient(f"http://127.0.0.1:{env.server.port}").start_episode()
    assert err.value.status == 401


def test_refuses_to_bind_beyond_loopback_without_a_token():
    env = ServingEnv()
    with pytest.raises(ConfigError, match="without a token"):
        PolicyServer(env, "0.0.0.0", 0)
    from jrl.cli import main

    assert main(["serve", "/nonexistent/checkpoint", "--host", "0.0.0.0"]) == 2


def test_repeated_request_id_is_applied_once(served):
    env, _ = served
    port = env.server.port
    first = _post(port, "/v1/start_episode", {"episode_id": "dup-1", "request_id": "r-1"})
    again = _post(port, "/v1/start_episode", {"episode_id": "dup-1", "request_id": "r-1"})
    assert first == again and first[0] == 200
    status, _ = _post(port, "/v1/start_episode", {"episode_id": "dup-1", "request_id": "r-2"})
    assert status == 409


def test_held_back_action_times_out_and_its_retry_gets_it():
    """Training episodes' actions wait while the learner is a batch behind; the 503 retry with
    the same request_id gets the action once the learner catches up."""
    jrl.register_env("serving-held", lambda ctx: ServingEnv(request_timeout=1.0))
    trainer = jrl.Trainer("PPO", env="serving-held", config=PPO_SMALL, log_to_disk=False)
    try:
        trainer.workers.set_policy(trainer.get_policy().acting)
        runner = trainer.workers.local_worker().env
        runner.start()  # serving, but nobody trains yet
        env = runner.external_env
        assert env.ready.wait(60)
        port = env.server.port
        env.get_action(env.start_episode(training_enabled=False), np.zeros(4))  # compiles act
        eid = _started(port)
        step = {"episode_id": eid, "observation": [0, 0, 0, 0]}
        for i in range(runner.max_ahead_steps):  # the last one fills the allowance
            status = 503
            for _ in range(20):  # (a loaded machine: repeat on 503, as the client does)
                status, _ = _post(port, "/v1/get_action", {**step, "request_id": f"a{i}"})
                if status != 503:
                    break
            assert status == 200
        held = {**step, "request_id": "held"}
        status, payload = _post(port, "/v1/get_action", held)
        assert status == 503 and "timed out" in json.loads(payload)["error"]
        assert trainer.train()["timesteps_total"] == 20  # the learner takes a batch
        status, payload = _post(port, "/v1/get_action", held)
        assert status == 200 and json.loads(payload)["action"] in (0, 1)
        status, _ = _post(port, "/v1/get_action", {**step, "request_id": "next"})
        assert status == 200  # one action per step: the held one was applied once
    finally:
        trainer.stop()


def test_sixteen_concurrent_clients(served):
    env, _ = served
    errors, actions = [], []

    def run_client():
        try:
            client = PolicyClient(f"http://127.0.0.1:{env.server.port}", token=TOKEN)
            eid = client.start_episode(training_enabled=False)
            for _ in range(5):
                actions.append(client.get_action(eid, np.random.uniform(-0.05, 0.05, 4)))
                client.log_returns(eid, 1.0)
            client.end_episode(eid, np.zeros(4))
            client.close()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=run_client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert len(actions) == 16 * 5 and set(actions) <= {0, 1}


def test_local_inference_client_ships_batches(served):
    env, results = served
    before = sum(r["episodes_this_iter"] for r in results if isinstance(r, dict))
    client = PolicyClient(f"http://127.0.0.1:{env.server.port}", token=TOKEN,
                          inference_mode="local", update_interval=0.2)
    sim = gym.make("CartPole-v1")
    for episode in range(2):
        eid = client.start_episode()
        obs, _ = sim.reset(seed=100 + episode)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = sim.step(client.get_action(eid, obs))
            client.log_returns(eid, reward)
            done = terminated or truncated
        client.end_episode(eid, obs)
    time.sleep(0.5)
    assert client.update_policy_weights() in (True, False)
    client.close()
    deadline = time.time() + 30
    while sum(r["episodes_this_iter"] for r in results if isinstance(r, dict)) < before + 2:
        assert time.time() < deadline, "the local client's episodes never reached the trainer"
        time.sleep(0.2)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_reconnects_after_a_server_restart():
    port = _free_port()
    jrl.register_env("serving-restart", lambda ctx: ServingEnv(port=port))
    episodes_seen = []

    class Count(jrl.DefaultCallbacks):
        def on_train_result(self, *, result, **kwargs):
            episodes_seen.append(result["episodes_this_iter"])

    def start():
        trainer = jrl.Trainer("PPO", env="serving-restart",
                              config={**PPO_SMALL, "callbacks": Count}, log_to_disk=False)
        env = trainer.workers.local_worker().foreach_env(lambda e: e)[0]
        stop, thread, results = _train_in_background(trainer)
        assert env.ready.wait(60)
        return trainer, stop, thread, results

    trainer, stop, thread, _ = start()
    client = PolicyClient(f"http://127.0.0.1:{port}", retry_timeout=60)
    eid = client.start_episode()
    for _ in range(5):
        client.get_action(eid, np.zeros(4))
        client.log_returns(eid, 1.0)
    stop.set()
    trainer.stop()
    thread.join(timeout=30)
    trainer, stop, thread, results = start()  # a new server on the same port
    try:
        for _ in range(40):  # the old episode id goes on (started again on the new server)
            client.get_action(eid, np.zeros(4))
            client.log_returns(eid, 1.0)
        client.end_episode(eid, np.zeros(4))
        deadline = time.time() + 30
        while not any(isinstance(r, dict) and r["episodes_this_iter"] for r in results):
            assert time.time() < deadline
            time.sleep(0.2)
        episode = next(r for r in results if isinstance(r, dict) and r["episodes_this_iter"])
        # Only what the new server saw: 40 steps, 40 reward; nothing logged twice.
        assert episode["episode_len_mean"] == 40 and episode["episode_reward_mean"] == 40.0
    finally:
        stop.set()
        trainer.stop()
        thread.join(timeout=30)


# -- the examples and jrl serve -------------------------------------------------------------------


def _python(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src"), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def test_cartpole_examples_end_to_end():
    # (Local inference mode runs end to end in the slow test and in-process above.)
    port = _free_port()
    server = _python("examples/serving/cartpole_server.py", "--port", str(port),
                     "--stop-iters", "2", "--config",
                     json.dumps({"train_batch_size": 200, "rollout_fragment_length": 200,
                                 "sgd_minibatch_size": 100, "num_sgd_iter": 2}))
    client = None
    try:
        client = _python("examples/serving/cartpole_client.py", "--port", str(port),
                         "--stop-at-reward", "0", "--max-episodes", "1000")
        out, _ = server.communicate(timeout=180)
    finally:
        for p in (server, client):
            if p is not None and p.poll() is None:
                p.kill()
    assert server.returncode == 0, out
    assert "iter 2 timesteps 400" in out, out
    client_out = client.communicate()[0]
    assert "episode 1 reward" in client_out, client_out


def test_jrl_serve_answers_actions(tmp_path):
    """A checkpoint of a registered env is served from the spaces in its metadata: the env's
    creator (which fails by then, as in a process that never registered it) is not called."""
    from jrl.serving.inference import serve_checkpoint

    trained = []

    def creator(env_config):
        if trained:
            raise RuntimeError("jrl serve must not make the env")
        return gym.make("CartPole-v1")

    jrl.register_env("serve-test-cartpole", creator)
    trainer = jrl.Trainer("PPO", env="serve-test-cartpole", config=PPO_SMALL, log_to_disk=False)
    checkpoint = trainer.save(str(tmp_path))
    trained.append(True)
    server = serve_checkpoint(checkpoint, "127.0.0.1", 0, TOKEN).start()
    assert server.trainer is None
    try:
        obs = [[0.0, 0.1, 0.0, -0.1], [0.01, 0.0, 0.02, 0.0]]
        status, body = _post(server.port, "/v1/actions", {"observations": obs, "extras": True})
        answer = json.loads(body)
        assert status == 200 and len(answer["actions"]) == 2
        assert set(answer["actions"]) <= {0, 1} and len(answer["action_logp"]) == 2
        expected = trainer.compute_actions({i: o for i, o in enumerate(obs)})
        assert answer["actions"] == [int(expected[0]), int(expected[1])]
        for bad, code in ((b'{"observations": [[0, 0]]}', 400), (b'{"observations": []}', 400),
                          (b'{"observations": [[0, 0, 0, NaN]]}', 400), (b"nope", 400)):
            status, body = _post(server.port, "/v1/actions", None, raw=bad)
            assert status == code and "error" in json.loads(body)
        assert _post(server.port, "/v1/actions", {"observations": obs}, token=None)[0] == 401
        status, body = _post(server.port, "/healthz", None, token=None, method="GET")
        assert status == 200 and json.loads(body)["algo"] == "PPO"
        assert json.loads(body)["env"] == "serve-test-cartpole"
    finally:
        server.shutdown()
        trainer.stop()


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("run,mode", [("PPO", "local"), ("DQN", "remote")])
def test_cartpole_examples_train_to_475(run, mode):
    port = _free_port()
    server = _python("examples/serving/cartpole_server.py", "--run", run, "--port", str(port))
    client = None
    try:
        client = _python("examples/serving/cartpole_client.py", "--port", str(port),
                         "--stop-at-reward", "475", "--inference-mode", mode)
        out, _ = client.communicate(timeout=1400)
    finally:
        for p in (server, client):
            if p is not None and p.poll() is None:
                p.kill()
    assert client.returncode == 0, out[-2000:]


class _ScriptedHttpPeer:
    """A loopback TCP peer that reads one request at a time and answers each with the next
    scripted list of byte chunks (sent apart, to split the answer across packets)."""

    def __init__(self, answers):
        self.answers, self.requests, self.connections = list(answers), [], 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            conn, _ = self.sock.accept()
            self.connections += 1
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = b""
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buf += data
                    if b"\r\n\r\n" not in buf:
                        break  # the client closed: accept the next connection
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(buf) < length:
                        buf += conn.recv(65536)
                    self.requests.append((head, json.loads(buf[:length])))
                    buf = buf[length:]
                    if not self.answers:
                        break
                    chunks = self.answers.pop(0)
                    for chunk in chunks:
                        conn.sendall(chunk)
                        time.sleep(0.01)
                    if chunks and b"connection: close" in chunks[0].lower():
                        break


def test_client_reads_answers_split_across_packets_and_reconnects_on_close():
    peer = _ScriptedHttpPeer([
        # head and body in three pieces, the head split mid-line; then a 100 Continue first
        [b"HTTP/1.1 200 OK\r\nContent-Ty", b"pe: application/json\r\nContent-Length: 19\r\n\r\n"
         b'{"episode_id"', b': "e"}'],
        [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 12\r\n"
         b"Connection: close\r\n\r\n", b'{"action":1}'],
        # a new connection: an answer without Content-Length runs to the end of it
        [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"action\": [0.5, 2]}"],
        [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 24\r\n\r\n{\"error\": \"bad reward\"}\n"],
    ])
    client = PolicyClient(f"http://127.0.0.1:{peer.port}", token=TOKEN, retry_timeout=5)
    assert client.start_episode(training_enabled=False) == "e"
    assert client.get_action("e", np.zeros(4, np.float32)) == 1
    np.testing.assert_allclose(client.get_action("e", np.ones(4, np.float32)), [0.5, 2])
    with pytest.raises(ServerError, match="400 bad reward") as e:
        client.log_returns("e", 1.0)
    assert e.value.status == 400
    client.close()
    assert peer.connections == 3
    heads = [head.decode() for head, _ in peer.requests]
    assert heads[0].startswith("POST /v1/start_episode HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{peer.port}" in heads[0]
    assert all(f"Authorization: Bearer {TOKEN}" in h for h in heads)
    assert [body["observation"] for _, body in peer.requests[1:3]] == [[0.0] * 4, [1.0] * 4]
    # each request carries its own id; none was repeated
    assert len({body["request_id"] for _, body in peer.requests}) == 4


def test_client_refuses_chunked_answers():
    peer = _ScriptedHttpPeer([[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"2\r\n{}\r\n0\r\n\r\n"]])
    client = PolicyClient(f"http://127.0.0.1:{peer.port}", retry_timeout=5)
    with pytest.raises(EnvError, match="Content-Length framed"):
        client.start_episode()
