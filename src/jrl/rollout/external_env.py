"""External environments (RLlib's ``ExternalEnv``): the simulator drives the episodes.

A user subclasses ``ExternalEnv`` and implements ``run()``; jrl starts it in a thread when the
rollout worker first samples. ``run()`` (or a ``jrl.serving.PolicyServer`` it starts) calls
``start_episode`` / ``get_action`` / ``log_action`` / ``log_returns`` / ``end_episode``. Actions
come from the worker's current policy: one inference thread batches every episode's pending
observations into one jitted ``act`` call (padded to a power of two, so it compiles once per
size class). Completed steps wait, per episode, until the worker's ``sample()`` packs
``rollout_fragment_length × num_envs_per_worker`` of them into a ``[T, B]`` fragment.

How a fragment is packed: each column holds consecutive steps of one episode, then of the next.
Where a column switches episodes before the first one ended, the step is marked ``truncated``
(it bootstraps from its next observation, exactly like a step cut off by a fragment's end).
"""

from __future__ import annotations

import abc
import collections
import concurrent.futures
import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from jrl.callbacks import DefaultCallbacks, Episode
from jrl.errors import EnvError

logger = logging.getLogger(__name__)

_WAIT_LOG_S = 30.0
_REMEMBERED_TIMEOUTS = 4096


class UnknownEpisodeError(EnvError):
    """An episode id that was never started here (or already ended)."""


class EpisodeConflictError(EnvError):
    """An episode id that is already in use, or an episode with a request still in flight."""


class TooManyEpisodesError(EnvError):
    """``max_concurrent`` episodes are already running."""


class ExternalEnvClosed(RuntimeError):
    """The env was closed (its trainer stopped); no more actions are served."""


class ExternalEnv(threading.Thread, metaclass=abc.ABCMeta):
    """An environment that runs on its own and asks the policy for actions (RLlib's API).

    Subclass it, pass the spaces to ``__init__`` and implement ``run()``; register a creator
    with ``jrl.register_env("srv", lambda env_config: MyServing())`` and train on ``"srv"`` with
    any worker-based algorithm (PPO, DQN, SAC, ...). Each rollout worker builds its own instance
    (``env_config.worker_index`` tells them apart, e.g. to pick a port).

    Args:
      action_space: the action space (``Discrete`` or ``Box``).
      observation_space: the raw observation space.
      max_concurrent: the most episodes that may run at once (more: ``TooManyEpisodesError``).
    """

    def __init__(self, action_space: gym.Space, observation_space: gym.Space,
                 max_concurrent: int = 100):
        threading.Thread.__init__(self, daemon=True, name=type(self).__name__)
        self.action_space = action_space
        self.observation_space = observation_space
        self.max_concurrent = int(max_concurrent)
        self._runner: ExternalEnvRunner | None = None
        self._lock = threading.Lock()
        self._episodes: dict[str, _EpisodeState] = {}
        self._timed_out: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._close_callbacks: list[Callable[[], Any]] = []
        self._closed = False

    @abc.abstractmethod
    def run(self) -> None:
        """Drives the episodes (loops forever, or serves clients: ``PolicyServer(self, ...)``)."""

    # -- RLlib's episode API --------------------------------------------------------------------

    def start_episode(self, episode_id: str | None = None, training_enabled: bool = True) -> str:
        """Starts an episode; returns its id (a new unique one when ``episode_id`` is None).
        With ``training_enabled=False`` its steps are acted on but never trained on."""
        if episode_id is not None and (not isinstance(episode_id, str) or not episode_id
                                       or len(episode_id) > 128):
            raise EnvError("episode_id must be a non-empty string of at most 128 characters")
        with self._lock:
            self._check_open()
            if episode_id is None:
                episode_id = uuid.uuid4().hex
            if episode_id in self._episodes:
                raise EpisodeConflictError(f"episode {episode_id} has already started")
            if len(self._episodes) >= self.max_concurrent:
                raise TooManyEpisodesError(
                    f"too many concurrent episodes (max_concurrent={self.max_concurrent}); end "
                    "some episodes first")
            episode = self._episodes[episode_id] = _EpisodeState(episode_id,
                                                                 bool(training_enabled))
            self._timed_out.pop(episode_id, None)
        if self._runner is not None:
            self._runner.episode_started(episode)
        return episode_id

    def get_action(self, episode_id: str, observation: Any) -> Any:
        """The policy's action for ``observation`` (blocks until the policy computed it)."""
        return self.get_action_async(episode_id, observation).result()

    def get_action_async(self, episode_id: str, observation: Any, *, inline: bool = False
                         ) -> concurrent.futures.Future:
        """``get_action`` without blocking: a future that the inference thread completes (or
        fails with ``ExternalEnvClosed``). With ``inline=True`` the inference thread is not
        woken: the caller answers the queued observations itself with
        ``self.runner.answer_pending()`` (a server's event loop, once per round of requests)."""
        runner = self._require_runner()
        obs = runner.preprocess(observation)
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            episode = self._episode(episode_id)
            if episode.pending is not None:
                raise EpisodeConflictError(f"episode {episode_id} already waits for an action")
            step = episode.observe(obs, False, False, runner)
            episode.pending = future
        runner.request(episode, obs, future, wake=not inline)
        if step is not None:
            runner.episode_stepped(episode, step)
        return future

    def log_action(self, episode_id: str, observation: Any, action: Any,
                   action_logp: float | None = None) -> None:
        """Records an action taken off-policy (by someone else) for ``observation``.
        ``action_logp`` is its log-probability when known (a local client's own policy); else the
        trainer's policy scores it when the fragment is packed."""
        runner = self._require_runner()
        obs = runner.preprocess(observation)
        action = self._check_action(action)
        if action_logp is not None and not math.isfinite(float(action_logp)):
            raise EnvError("action_logp must be a finite number")
        with self._lock:
            episode = self._episode(episode_id)
            if episode.pending is not None:
                raise EpisodeConflictError(f"episode {episode_id} already waits for an action")
            step = episode.observe(obs, False, False, runner)
            episode.act(action, action_logp, logged=True)
        if step is not None:
            runner.episode_stepped(episode, step)

    def log_returns(self, episode_id: str, reward: float, info: dict | None = None) -> None:
        """Adds ``reward`` to the current step (several calls add up)."""
        try:
            reward = float(reward)
        except (TypeError, ValueError):
            raise EnvError(f"reward must be a number, got {type(reward).__name__}") from None
        if not math.isfinite(reward):
            raise EnvError("reward must be finite (got NaN or inf)")
        if info is not None and not isinstance(info, dict):
            raise EnvError(f"info must be a dict, got {type(info).__name__}")
        with self._lock:
            episode = self._episode(episode_id)
            episode.reward += reward
            episode.total_reward += reward
            if info:
                episode.info = info

    def end_episode(self, episode_id: str, observation: Any, truncated: bool = False) -> None:
        """Ends the episode at its last ``observation`` (terminated; ``truncated=True`` when a
        time limit cut it, so learners bootstrap from it)."""
        runner = self._require_runner()
        obs = runner.preprocess(observation)
        with self._lock:
            episode = self._episode(episode_id)
            if episode.pending is not None:
                raise EpisodeConflictError(f"episode {episode_id} still waits for an action")
            step = episode.observe(obs, not truncated, bool(truncated), runner)
            del self._episodes[episode_id]
        if step is not None:
            runner.episode_stepped(episode, step)
        runner.episode_ended(episode)

    def end_idle_episodes(self, timeout_s: float) -> list[str]:
        """Ends the episodes that had no call for ``timeout_s`` seconds (clients that went away)
        and returns their ids. Their completed steps stay for the learner (the last one
        bootstraps, like a step cut off by a fragment's end); the open step, whose outcome
        never came, is dropped, and they are not counted as finished episodes. Calls for them
        afterwards get ``UnknownEpisodeError`` saying they timed out."""
        now = time.monotonic()
        with self._lock:
            idle = [e for e in self._episodes.values()
                    if e.pending is None and now - e.last_call >= timeout_s]
            for episode in idle:
                del self._episodes[episode.episode_id]
                self._timed_out[episode.episode_id] = now - episode.last_call
                while len(self._timed_out) > _REMEMBERED_TIMEOUTS:
                    self._timed_out.popitem(last=False)
        if idle:
            logger.info("external env: ended %d episode(s) idle for over %g s", len(idle),
                        timeout_s)
        return [e.episode_id for e in idle]

    # -- for servers and the sampler ------------------------------------------------------------

    def has_episode(self, episode_id: str) -> bool:
        with self._lock:
            return episode_id in self._episodes

    @property
    def runner(self) -> ExternalEnvRunner:
        """The sampler this env feeds (policy and spaces; set once its worker samples)."""
        return self._require_runner()

    def add_close_callback(self, fn: Callable[[], Any]) -> None:
        """Calls ``fn()`` when the env closes (a ``PolicyServer`` shuts itself down)."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._close_callbacks.append(fn)
        if closed:
            fn()

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            callbacks, self._close_callbacks = self._close_callbacks, []
            pending = [e.pending for e in self._episodes.values() if e.pending is not None]
        for future in pending:
            if not future.done():
                future.set_exception(ExternalEnvClosed("the external env was closed"))
        for fn in callbacks:
            try:
                fn()
            except Exception:  # a server that failed to stop must not block the trainer's stop
                logger.exception("close callback of %s failed", type(self).__name__)

    def _check_open(self) -> None:
        if self._closed:
            raise ExternalEnvClosed("the external env was closed")

    def _require_runner(self) -> ExternalEnvRunner:
        runner = self._runner
        if runner is None:
            raise ExternalEnvClosed("the external env has no policy yet (its rollout worker "
                                    "has not started sampling)")
        self._check_open()
        return runner

    def _episode(self, episode_id: str) -> _EpisodeState:
        episode = self._episodes.get(episode_id) if isinstance(episode_id, str) else None
        if episode is None:
            idle = self._timed_out.get(episode_id) if isinstance(episode_id, str) else None
            if idle is not None:
                raise UnknownEpisodeError(f"episode {episode_id[:128]!r} was ended after "
                                          f"{idle:.0f} s without calls (episode_timeout_s); "
                                          "start a new episode")
            raise UnknownEpisodeError(f"unknown episode id {str(episode_id)[:128]!r} (start it "
                                      "with start_episode first)")
        episode.last_call = time.monotonic()
        return episode

    def _check_action(self, action: Any) -> Any:
        space = self.action_space
        try:
            if isinstance(space, gym.spaces.Discrete):
                value = np.asarray(action)
                if value.shape != () or value.dtype.kind not in "iub" and not (
                        value.dtype.kind == "f" and float(value) == int(value)):
                    raise ValueError
                action = int(value)
                ok = space.contains(action)
            else:
                action = np.asarray(action, dtype=space.dtype)
                ok = action.shape == space.shape and bool(np.all(np.isfinite(action))) and \
                    space.contains(action)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise EnvError(f"action {_short(action)} is not in the action space {space}")
        return action


class _EpisodeState:
    """One running episode: the open step (observation, action) and completed steps."""

    def __init__(self, episode_id: str, training_enabled: bool):
        self.episode_id = episode_id
        self.training_enabled = training_enabled
        self.number = -1  # the int eps_id of the fragment columns, set by the runner
        self.obs: np.ndarray | None = None
        self.action: Any = None
        self.logp: float | None = None
        self.logged = False
        self.reward = 0.0
        self.total_reward = 0.0
        self.length = 0
        self.info: dict | None = None
        self.pending: concurrent.futures.Future | None = None
        self.last_call = time.monotonic()
        self.callback_episode: Episode | None = None  # for the worker's episode callbacks

    def observe(self, obs: np.ndarray, terminated: bool, truncated: bool,
                runner: ExternalEnvRunner) -> _Step | None:
        """A new observation: it closes the open step (when there is one) and returns it."""
        step = None
        if self.action is not None:
            step = _Step(self.obs, self.action, self.logp, self.logged, self.reward, obs,
                         terminated, truncated, self.length)
            if self.training_enabled:
                runner.add_step(self, step)
            self.length += 1
        self.obs, self.action, self.logp, self.reward = obs, None, None, 0.0
        return step

    def act(self, action: Any, logp: float | None, logged: bool) -> None:
        self.action, self.logp, self.logged = action, logp, logged


class _Step(collections.namedtuple("_Step", "obs action logp logged reward next_obs terminated "
                                            "truncated t")):
    pass


class ExternalEnvRunner:
    """The rollout worker's side of an ``ExternalEnv``: an inference thread that answers every
    episode's ``get_action`` in batches, and a buffer of completed steps that ``sample()`` packs
    into ``[T, B]`` fragments.

    It stands in for the worker's vector env (``single_observation_space``, ``envs``,
    ``close``).

    Args:
      external_env: the user's env (started on the first ``sample()``).
      max_buffered_steps: completed steps kept for the learner; beyond it the oldest are
        dropped (with a warning), so an idle trainer never grows memory without bound.
    """

    def __init__(self, external_env: ExternalEnv, max_buffered_steps: int = 100_000):
        if not isinstance(external_env.action_space, gym.spaces.Space) or \
                not isinstance(external_env.observation_space, gym.spaces.Space):
            raise EnvError(f"{type(external_env).__name__} must pass gymnasium spaces to "
                           "ExternalEnv.__init__(action_space, observation_space)")
        self.external_env = external_env
        self.envs = [external_env]
        self.single_observation_space = external_env.observation_space
        self.single_action_space = external_env.action_space
        self.max_buffered_steps = max_buffered_steps
        self._cond = threading.Condition()
        self._answering = threading.Lock()
        self._requests: collections.deque = collections.deque()
        self._ready: collections.OrderedDict[int, list[_Step]] = collections.OrderedDict()
        self._num_ready = 0
        self._num_dropped = 0
        self._completed: list[dict] = []
        self._numbers = itertools.count()
        self._acting: Any = None
        self.acting_version = 0
        self.policy: Any = None
        self._preprocessor: Any = None
        self._act: Any = None
        self._score: Any = None
        self._explore = True
        self._key: Any = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.max_ahead_steps = 10_000
        self._callbacks: DefaultCallbacks | None = None
        self._worker: Any = None
        self._step_hook = False

    # -- setup ----------------------------------------------------------------------------------

    def bind(self, policy: Any, act: Callable, key: Any, explore: bool,
             max_ahead_steps: int = 10_000, callbacks: DefaultCallbacks | None = None,
             worker: Any = None) -> None:
        """Sets how observations become actions: ``act(acting, obs [N, ...], key, explore) ->
        (action, logp or None, key)``. ``policy`` (a ``jrl.Policy``) preprocesses observations,
        scores logged actions and describes itself to local-inference clients. ``callbacks``
        (the worker's) get ``on_episode_start/step/end`` for the external episodes. While
        ``max_ahead_steps`` completed steps wait for the learner, training episodes' actions
        wait too (so the data stays close to the learner's policy and its replay ratio)."""
        self.max_ahead_steps = int(max_ahead_steps)
        self.policy, self._preprocessor = policy, policy.preprocessor
        self._act, self._key, self._explore = act, key, explore
        self._score = logp_scorer(policy)
        self._callbacks, self._worker = callbacks, worker
        self._step_hook = callbacks is not None and \
            type(callbacks).on_episode_step is not DefaultCallbacks.on_episode_step

    def set_acting(self, acting: Any) -> None:
        """The acting pytree (weights, filter statistics, epsilon) the inference thread uses
        from its next batch on."""
        self._acting = acting
        self.acting_version += 1

    @property
    def acting(self) -> Any:
        return self._acting

    def start(self) -> None:
        """Starts the inference thread and the user's ``run()`` (once)."""
        if self._thread is not None:
            return
        self.external_env._runner = self
        self._thread = threading.Thread(target=self._serve_actions, daemon=True,
                                        name="jrl-external-inference")
        self._thread.start()
        self.external_env.start()

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            requests, self._requests = list(self._requests), collections.deque()
            self._cond.notify_all()
        for _, _, future in requests:
            if not future.done():
                future.set_exception(ExternalEnvClosed("the external env was closed"))
        self.external_env._close()

    # -- called by ExternalEnv ------------------------------------------------------------------

    def preprocess(self, observation: Any) -> np.ndarray:
        """The network input for one raw observation; ``EnvError`` when it does not fit the
        space or is not finite."""
        try:
            obs = self._preprocessor.transform(observation)
        except EnvError:
            raise
        except (ValueError, TypeError, IndexError, OverflowError) as e:
            raise EnvError(f"observation does not fit the observation space "
                           f"{self.single_observation_space}: {e}") from None
        if obs.dtype.kind == "f" and not np.all(np.isfinite(obs)):
            raise EnvError("observation has NaN or inf entries")
        return obs

    def request(self, episode: _EpisodeState, obs: np.ndarray,
                future: concurrent.futures.Future, wake: bool = True) -> None:
        with self._cond:
            if self._stopped:
                future.set_exception(ExternalEnvClosed("the external env was closed"))
                return
            self._requests.append((episode, obs, future))
            if wake:
                self._cond.notify_all()

    def answer_pending(self) -> int:
        """Answers the queued observations in the calling thread, in one batched ``act`` call;
        returns how many. A server calls it on its event loop after queueing a round of
        requests with ``inline=True``: no hand-over to the inference thread and back, each of
        which waits for the GIL. Requests held back for the learner stay queued for the
        inference thread."""
        with self._cond:
            if self._stopped:
                return 0
            requests = self._take_requests()
        if requests:
            self._answer_safely(requests)
        return len(requests)

    def add_step(self, episode: _EpisodeState, step: _Step) -> None:
        with self._cond:
            if episode.number < 0:
                episode.number = next(self._numbers)
            self._ready.setdefault(episode.number, []).append(step)
            self._num_ready += 1
            if self._num_ready > self.max_buffered_steps:
                self._drop_oldest()
            self._cond.notify_all()

    def episode_started(self, episode: _EpisodeState) -> None:
        """``on_episode_start`` (in the caller's thread, outside the env's lock)."""
        if self._callbacks is None:
            return
        cb_episode = episode.callback_episode = Episode(0)
        self._callbacks.on_episode_start(worker=self._worker, base_env=self,
                                         policies=self._policies(), episode=cb_episode,
                                         env_index=0)

    def episode_stepped(self, episode: _EpisodeState, step: _Step) -> None:
        """``on_episode_step`` for a completed step (when the callbacks override it)."""
        cb_episode = episode.callback_episode
        if cb_episode is None:
            return
        cb_episode.length, cb_episode.total_reward = episode.length, episode.total_reward
        cb_episode.record_step(obs=step.next_obs, action=step.action, reward=step.reward,
                               terminated=step.terminated, truncated=step.truncated,
                               info=episode.info or {})
        if self._step_hook:
            self._callbacks.on_episode_step(worker=self._worker, base_env=self,
                                            episode=cb_episode, env_index=0)

    def episode_ended(self, episode: _EpisodeState) -> None:
        cb_episode = episode.callback_episode
        if cb_episode is not None:
            cb_episode.length, cb_episode.total_reward = episode.length, episode.total_reward
            self._callbacks.on_episode_end(worker=self._worker, base_env=self,
                                           policies=self._policies(), episode=cb_episode,
                                           env_index=0)
        with self._cond:
            self._completed.append({
                "episode_reward": episode.total_reward, "episode_len": episode.length,
                "custom_metrics": dict(cb_episode.custom_metrics) if cb_episode else {},
                "hist_data": {k: list(v) for k, v in cb_episode.hist_data.items()}
                if cb_episode else {}})
            self._cond.notify_all()

    def _policies(self) -> dict[str, Any]:
        policy_map = getattr(self._worker, "policy_map", None)
        return policy_map if policy_map is not None else {"default_policy": self.policy}

    def _drop_oldest(self) -> None:
        number = next(iter(self._ready))
        steps = self._ready[number]
        steps.pop(0)
        if not steps:
            del self._ready[number]
        self._num_ready -= 1
        self._num_dropped += 1
        if self._num_dropped in (1, 10, 100) or self._num_dropped % 10_000 == 0:
            logger.warning("external env: %d completed steps dropped (more than %d waited for "
                           "the learner; call train() more often)", self._num_dropped,
                           self.max_buffered_steps)

    # -- inference thread -----------------------------------------------------------------------

    def _serve_actions(self) -> None:
        while True:
            with self._cond:
                requests = self._take_requests()
                while not requests and not self._stopped:
                    self._cond.wait()
                    requests = self._take_requests()
                if self._stopped:
                    return
            self._answer_safely(requests)

    def _answer_safely(self, requests: list) -> None:
        with self._answering:  # one batch at a time: the key and the episodes' steps
            try:
                self._answer(requests)
            except Exception as e:  # fail these requests, keep serving the next ones
                logger.exception("external env: computing actions failed")
                for episode, _, future in requests:
                    episode.pending = None
                    if not future.done():
                        future.set_exception(e)

    def _take_requests(self) -> list:
        """The pending requests to answer now (lock held): all of them, or only those of
        episodes that do not train while the learner is ``max_ahead_steps`` behind."""
        if self._num_ready < self.max_ahead_steps:
            requests = list(self._requests)
            self._requests.clear()
            return requests
        requests = [r for r in self._requests if not r[0].training_enabled]
        if requests:
            self._requests = collections.deque(
                r for r in self._requests if r[0].training_enabled)
        return requests

    def _answer(self, requests: list) -> None:
        n = len(requests)
        size = 1 << (n - 1).bit_length()  # pad: one compiled act per power of two
        obs = np.stack([r[1] for r in requests])
        if size > n:
            obs = np.concatenate([obs, np.repeat(obs[:1], size - n, axis=0)])
        action, logp, self._key = self._act(self._acting, obs, self._key, self._explore)
        action = np.asarray(action)[:n]
        logp = None if logp is None else np.asarray(logp)[:n]
        space = self.single_action_space
        discrete = isinstance(space, gym.spaces.Discrete)
        # The env gets actions inside the Box with clip_actions; the batch keeps the sampled ones.
        env_action = action
        if not discrete and self.policy.algo_config.clip_actions:
            env_action = np.clip(action, space.low, space.high)
        for i, (episode, _, future) in enumerate(requests):
            value = int(action[i]) if discrete else action[i]
            with self.external_env._lock:
                episode.act(value, None if logp is None else float(logp[i]), logged=False)
                episode.pending = None
            if not future.done():  # (closed meanwhile)
                future.set_result(value if discrete else env_action[i])

    # -- sampling -------------------------------------------------------------------------------

    def sample(self, T: int, B: int) -> dict[str, np.ndarray]:
        """Waits for ``T * B`` completed steps and packs them into ``[T, B]`` columns."""
        self.start()
        need = T * B
        waited_since = last_log = time.monotonic()
        with self._cond:
            while self._num_ready < need:
                if not self.external_env.is_alive():
                    raise EnvError(f"{type(self.external_env).__name__}.run() returned or "
                                   "failed (see the log); no more experiences will come")
                self._cond.wait(timeout=1.0)
                now = time.monotonic()
                if now - last_log >= _WAIT_LOG_S:
                    last_log = now
                    logger.info("external env: waiting for experiences (%d of %d steps after "
                                "%.0f s)", self._num_ready, need, now - waited_since)
            steps = self._take(need)
            self._cond.notify_all()  # actions held back for the learner may go now
        return self._columns(steps, T, B)

    def _take(self, need: int) -> list[tuple[int, _Step]]:
        """The oldest episodes' steps first, each episode's consecutively (lock held)."""
        out: list[tuple[int, _Step]] = []
        for number in list(self._ready):
            steps = self._ready[number]
            k = min(len(steps), need - len(out))
            out.extend((number, s) for s in steps[:k])
            if k == len(steps):
                del self._ready[number]
            else:
                self._ready[number] = steps[k:]
            if len(out) == need:
                break
        self._num_ready -= len(out)
        return out

    def _columns(self, steps: list[tuple[int, _Step]], T: int, B: int) -> dict[str, np.ndarray]:
        obs = np.stack([s.obs for _, s in steps])
        next_obs = np.stack([s.next_obs for _, s in steps])
        discrete = isinstance(self.single_action_space, gym.spaces.Discrete)
        actions = np.asarray([s.action for _, s in steps],
                             np.int32 if discrete else np.float32)
        logp = np.array([0.0 if s.logp is None else s.logp for _, s in steps], np.float32)
        unscored = [i for i, (_, s) in enumerate(steps) if s.logp is None and s.logged]
        if unscored and self._score is not None:
            logp[unscored] = self._score(obs[unscored], actions[unscored])
        terminated = np.array([s.terminated for _, s in steps])
        truncated = np.array([s.truncated for _, s in steps])
        numbers = np.array([n for n, _ in steps], np.int64)
        t = np.array([s.t for _, s in steps], np.int64)
        # A column that switches episodes mid-episode: the earlier one bootstraps there.
        switch = np.zeros(len(steps), bool)
        switch[:-1] = numbers[1:] != numbers[:-1]
        switch[T - 1::T] = False
        truncated |= switch & ~terminated

        def tb(x: np.ndarray) -> np.ndarray:  # [B * T, ...] column-major -> [T, B, ...]
            return np.swapaxes(x.reshape(B, T, *x.shape[1:]), 0, 1).copy()

        return {"obs": tb(obs), "actions": tb(actions),
                "rewards": tb(np.array([s.reward for _, s in steps], np.float32)),
                "terminateds": tb(terminated), "truncateds": tb(truncated),
                "new_obs": tb(next_obs), "action_logp": tb(logp), "eps_id": tb(numbers),
                "t": tb(t)}

    def pop_episodes(self) -> list[dict]:
        with self._cond:
            done, self._completed = self._completed, []
        return done

    @property
    def num_dropped_steps(self) -> int:
        return self._num_dropped


def _short(value: Any) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def logp_scorer(policy: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """``score(obs [N, ...], actions [N]) -> logp [N]`` under ``policy``'s current weights
    (preprocessed observations), or None when the policy has no action distribution."""
    if policy.model.dist_class is None:  # Q-value or deterministic policies
        return None
    import jax

    from jrl.networks import catalog
    from jrl.ops.filters import get_filter

    network, spec = policy.model.network, policy.spec
    obs_filter = get_filter(policy.algo_config.observation_filter)

    @jax.jit
    def logp(params, filter_state, obs, actions):
        dist_params, _ = network.apply(params, obs_filter.apply(filter_state, obs))
        return catalog.make_distribution(spec, dist_params, policy.algo_config.model
                                         ).log_prob(actions)

    def score(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        acting = policy.acting
        return np.asarray(logp(acting.params, acting.obs_filter, obs, actions))

    return score
