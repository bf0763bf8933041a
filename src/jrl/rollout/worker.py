"""The rollout worker: steps a vector env with the algorithm's ``act`` and returns fragments.

Side effects live here (envs, callbacks, files); the policy is a pytree of arrays set from outside
(``set_policy``) and ``act`` is the algorithm's pure function, jitted once.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import gymnasium as gym
import jax
import numpy as np

from jrl.callbacks import Episode, make_callbacks, overrides_hook
from jrl.errors import ConfigError, EnvError
from jrl.networks.custom import ModelCatalog
from jrl.registry import get_algorithm_def, make_algorithm
from jrl.rollout.atari import default_clip_rewards
from jrl.rollout.envs import (
    RESTARTED_KEY,
    EpisodeSeeds,
    RestartingEnv,
    env_spec,
    make_vector_env,
    unflatten_actions,
)
from jrl.rollout.external_env import ExternalEnvRunner
from jrl.rollout.policy import DEFAULT_POLICY_ID, Policy, PolicyMapAccess
from jrl.rollout.preprocessors import action_mask_slice, get_preprocessor
from jrl.types import AlgorithmDef, Transition

logger = logging.getLogger(__name__)


class SampleBatch(dict):
    """Columns of a sampled fragment, each ``[T, B, ...]`` (time-major)."""

    OBS, ACTIONS, REWARDS, NEW_OBS = "obs", "actions", "rewards", "new_obs"
    TERMINATEDS, TRUNCATEDS, DONES, ACTION_LOGP = "terminateds", "truncateds", "dones", "action_logp"

    @property
    def count(self) -> int:
        """Number of env steps in the batch (``T * B``)."""
        shape = self[self.REWARDS].shape
        return int(np.prod(shape))

    @staticmethod
    def concat_time(batches: list[SampleBatch]) -> SampleBatch:
        return SampleBatch({k: np.concatenate([b[k] for b in batches], axis=0) for k in batches[0]})

    PREV_ACTIONS, PREV_REWARDS = "prev_actions", "prev_rewards"

    def to_transition(self) -> Transition:
        recurrent = {}
        if "state_in_0" in self:  # a recurrent policy's batch
            n = sum(1 for k in self if k.startswith("state_in_"))
            recurrent = dict(state_in=tuple(self[f"state_in_{i}"] for i in range(n)),
                             prev_action=self[self.PREV_ACTIONS],
                             prev_reward=self[self.PREV_REWARDS].astype(np.float32))
        return Transition(obs=self[self.OBS], action=self[self.ACTIONS],
                          reward=self[self.REWARDS].astype(np.float32),
                          terminated=self[self.TERMINATEDS], truncated=self[self.TRUNCATEDS],
                          next_obs=self[self.NEW_OBS],
                          behaviour_logp=self[self.ACTION_LOGP].astype(np.float32), **recurrent)


_GYM_WRAPPERS = (gym.wrappers.TimeLimit, gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker,
                 RestartingEnv, EpisodeSeeds)

# Longest running episode whose actions a sampler keeps for an exact restore (longer ones are
# restarted from a fresh reset when restored).
MAX_REPLAY_STEPS = 100_000


def _user_env(env: gym.Env) -> gym.Env:
    """The env as the user's creator (or gymnasium's entry point) made it, without jrl's wrappers."""
    while isinstance(env, _GYM_WRAPPERS):
        env = env.env
    return env


def _clip_reward(reward: np.ndarray, clip: Any) -> np.ndarray:
    if clip is None or clip is False:
        return reward
    if clip is True:
        return np.sign(reward)
    return np.clip(reward, -float(clip), float(clip))


def acting_device(config: Any) -> jax.Device | None:
    """Where a rollout worker computes its actions; ``None`` for JAX's default device.

    As in RLlib, rollout workers act on the host unless given GPUs (``num_gpus_per_worker``):
    with an accelerator as JAX's default backend, each step's forward pass of a small network
    would otherwise pay a host-to-device round trip and a kernel launch per op.
    """
    if jax.default_backend() == "cpu" or getattr(config, "num_gpus_per_worker", 0) > 0:
        return None
    return jax.devices("cpu")[0]


def prepare_worker_process(env_id: str, worker_index: int, env_creator: Any = None,
                           model_registrations: dict | None = None) -> None:
    """What a rollout worker (single- or multi-agent) sets up in its process before it builds
    envs and policies: synchronous dispatch in remote workers, and the driver's env creator
    and ``ModelCatalog`` registrations."""
    if worker_index > 0:
        # A remote worker's process only acts: running each tiny XLA call on the calling
        # thread avoids a thread hand-off per step, which costs ~25% when workers share cores.
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    if env_creator is not None:
        from jrl.rollout.envs import register_env

        register_env(env_id, env_creator)
    if model_registrations:
        ModelCatalog.restore_registrations(model_registrations)


class WorkerBase(PolicyMapAccess):
    """What single- and multi-agent rollout workers share: RLlib's policy accessors over
    ``policy_map`` and the calls plans and ``WorkerSet`` make on any worker (subclasses define
    ``set_policy``)."""

    _completed: list[dict]
    _act_device: jax.Device | None = None  # from acting_device(config), set by subclasses

    def _on_acting_device(self, tree: Any) -> Any:
        """``tree`` placed where this worker acts (unchanged on JAX's default device)."""
        return tree if self._act_device is None else jax.device_put(tree, self._act_device)

    def apply(self, fn, *args: Any) -> Any:
        """``fn(self, *args)``: runs a function on this worker (plans' remote tasks)."""
        return fn(self, *args)

    def sync_and_apply(self, policy: Any, fn, *args: Any) -> Any:
        """Takes the driver's latest acting pytree (when given), then ``fn(self, *args)``: what
        ``WorkerSet.foreach_worker`` runs, so a worker looked at always holds the learner's
        current weights."""
        if policy is not None:
            self.set_policy(policy)
        return fn(self, *args)

    def pop_episodes(self) -> list[dict]:
        """Returns and clears the statistics of episodes completed since the last call."""
        done, self._completed = self._completed, []
        return done


class RolloutWorker(WorkerBase):
    """Samples fixed-length fragments from ``num_envs_per_worker`` envs.

    Args:
      env_id: gymnasium id or registered env name.
      config: the algorithm's frozen config.
      definition: the algorithm record (or its registered name); the worker builds the same
        ``Algorithm`` the learner
        uses (algorithms are pure, so building one per worker is cheap and keeps Ray free of
        closures).
      worker_index: 0 for the local worker, 1..N for remote ones.
      video_dir: record the first env's episodes there (``monitor``).
      env_creator: a creator registered in another process (remote workers get the driver's).
      model_registrations: ``ModelCatalog.registrations()`` of another process (likewise).
    """

    def __init__(self, env_id: str, config: Any, definition: AlgorithmDef | str,
                 worker_index: int = 0,
                 video_dir: str | None = None, env_creator: Any = None,
                 model_registrations: dict | None = None):
        from jrl.rollout.offline import JsonWriter

        prepare_worker_process(env_id, worker_index, env_creator, model_registrations)
        self.config = config
        self.worker_index = worker_index
        self.env_id = env_id
        self.num_envs = config.num_envs_per_worker
        self.fragment_length = config.rollout_fragment_length
        self.env = make_vector_env(env_id, self.num_envs, config.env_config,
                                   horizon=config.horizon, worker_index=worker_index,
                                   video_dir=video_dir, vectorization=config.vectorization,
                                   preprocessor_pref=config.preprocessor_pref, model=config.model,
                                   restart_failed=config.restart_failed_sub_environments)
        if config.nan_policy == "skip_episode" and not hasattr(self.env, "envs"):
            raise ConfigError(f"nan_policy: skip_episode resets one sub-env in place, which "
                              f"vectorization: {config.vectorization} cannot; use sync")
        # RLlib's clip_rewards=None: sign-clip Atari rewards (for training; returns stay raw).
        self._clip_rewards = default_clip_rewards(env_id, config.clip_rewards)
        single_obs_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self.preprocessor = get_preprocessor(single_obs_space, config.model)
        self.spec = env_spec(self.preprocessor.shape, self.preprocessor.dtype, self.action_space,
                             action_mask_slice(self.preprocessor))
        self.definition = (definition if isinstance(definition, AlgorithmDef)
                           else get_algorithm_def(definition))
        self.algorithm = make_algorithm(self.definition, config, self.spec)
        self.callbacks = make_callbacks(config.callbacks)
        self._act = jax.jit(self._act_and_split, static_argnums=3)
        self._recurrent = self.algorithm.recurrent
        if self._recurrent is not None:
            self._act_rnn = jax.jit(self._act_recurrent, static_argnums=6)
        self._policy = None
        seed = config.seed * 1000 + worker_index
        self.policy_map: dict[str, Policy] = {DEFAULT_POLICY_ID: Policy(
            self.definition, self.algorithm, config, self.spec, self.preprocessor,
            single_obs_space, self.action_space, seed=seed)}
        self._act_device = acting_device(config)
        self._key = self._on_acting_device(jax.random.PRNGKey(seed))
        # An ExternalEnv drives its own episodes: its runner answers actions and packs steps.
        self._external = self.env if isinstance(self.env, ExternalEnvRunner) else None
        if self._external is not None and self.spec.composite:
            raise ConfigError(f"{self.action_space} action spaces do not run with an "
                              "ExternalEnv yet; use a gymnasium env")
        if self._external is not None and self._recurrent is not None:
            raise ConfigError("recurrent policies (model.use_lstm/use_gru) do not run with an "
                              "ExternalEnv yet; use a gymnasium env")
        if self._external is not None:
            self._external.bind(self.policy_map[DEFAULT_POLICY_ID], self._act,
                                jax.random.PRNGKey(seed + 1), bool(config.explore),
                                max(2 * self.fragment_length * self.num_envs,
                                    getattr(config, "train_batch_size", 0)),
                                callbacks=self.callbacks, worker=self)
        else:
            raw_obs, _ = self.env.reset(seed=seed)
            self.action_space.seed(seed)
            self._raw_obs = raw_obs
            self._obs = self._preprocess_batch(raw_obs)
            self._episode_ids = np.zeros(self.num_envs, np.int64)
            self._episode_lens = np.zeros(self.num_envs, np.int64)
            self._episode_returns = np.zeros(self.num_envs, np.float64)
            self._step_hook = overrides_hook(self.callbacks, "on_episode_step")
            self._episodes = [self._start_episode(i) for i in range(self.num_envs)]
            if self._recurrent is not None:
                self._reset_recurrent()
        self._completed: list[dict] = []
        self._steps_sampled = 0
        self._action_log: list[np.ndarray] = []  # env actions of the running episodes' steps
        self._writer = (JsonWriter(config.output, tuple(config.output_compress_columns),
                                   worker_index, config.output_max_file_size,
                                   compress_codec=config.output_compress_codec)
                         if config.output else None)
        self.num_skipped_episodes = 0
        # Tuple/Dict actions: the log keeps the flat vectors; the env gets them unflattened.
        self._action_dtype = np.dtype(np.float32 if self.spec.composite else
                                      self.action_space.dtype or np.int64)
        self._no_action = np.zeros(self.spec.action_shape if self.spec.composite else
                                   self.action_space.shape, self._action_dtype)
        self._int_obs = not np.issubdtype(np.dtype(self.preprocessor.dtype), np.floating)
        box = isinstance(self.action_space, gym.spaces.Box)
        self._action_bounds = ((self.action_space.low, self.action_space.high)
                               if box and config.clip_actions else None)

    # -- policy ---------------------------------------------------------------------------------

    def _act_and_split(self, policy, obs, key, explore):
        key, act_key = jax.random.split(key)
        action, extras = self.algorithm.act(policy, obs, act_key, explore)
        # The batch keeps only what learners read (``compute_action`` returns every extra).
        # No placeholder output for algorithms without log-probs: a constant output costs more
        # than the whole forward pass on CPU.
        return action, extras.get(SampleBatch.ACTION_LOGP), key

    def _act_recurrent(self, policy, obs, state, prev_action, prev_reward, key, explore):
        key, act_key = jax.random.split(key)
        action, extras, state_out = self._recurrent.act(policy, obs, state, prev_action,
                                                        prev_reward, act_key, explore)
        return action, extras.get(SampleBatch.ACTION_LOGP), key, state_out

    def _reset_recurrent(self) -> None:
        """Every env lane starts from the initial state (and no previous action or reward)."""
        B = self.num_envs
        self._rnn_state = [np.array(s) for s in self._recurrent.initial_state(B)]
        self._prev_action = np.zeros((B, *self.spec.action_shape), self.spec.action_dtype)
        self._prev_reward = np.zeros((B,), np.float32)

    def set_policy(self, policy: Any) -> None:
        """Sets the acting pytree sampling reads (params, filter statistics, epsilon, ...)."""
        policy = self._on_acting_device(policy)
        self._policy = policy
        self.policy_map[DEFAULT_POLICY_ID].set_acting(policy)
        if self._external is not None:
            self._external.set_acting(policy)

    # -- envs -----------------------------------------------------------------------------------

    def foreach_env(self, fn) -> list:
        """Calls ``fn(env)`` on each env of this worker (e.g. to set a curriculum phase)."""
        self._require_local_envs()
        return [fn(_user_env(env)) for env in self.env.envs]

    def foreach_env_with_context(self, fn) -> list:
        """Calls ``fn(env, env_context)`` on each env of this worker."""
        from jrl.rollout.envs import EnvContext

        self._require_local_envs()
        return [fn(_user_env(env), EnvContext(self.config.env_config, self.worker_index, i))
                for i, env in enumerate(self.env.envs)]

    def _require_local_envs(self) -> None:
        if not hasattr(self.env, "envs"):
            raise ConfigError(f"foreach_env reaches envs in this process only; vectorization "
                              f"'{self.config.vectorization}' steps them elsewhere (use sync)")

    def _preprocess_batch(self, raw_obs: Any) -> np.ndarray:
        try:
            return self.preprocessor.transform_batch(raw_obs)
        except EnvError:
            raise
        except (ValueError, TypeError, IndexError) as e:
            raise EnvError(f"env '{self.env_id}' returned an observation that does not fit its "
                           f"observation space {self.env.single_observation_space}: {e}") from e

    def _start_episode(self, env_index: int) -> Episode:
        episode = Episode(env_index)
        episode.record_step(obs=self._obs[env_index])
        self._episode_ids[env_index] = episode.episode_id
        self._episode_lens[env_index] = 0
        self._episode_returns[env_index] = 0.0
        self.callbacks.on_episode_start(worker=self, base_env=self.env, policies=self.policy_map,
                                        episode=episode, env_index=env_index)
        return episode

    def _sync_episode(self, i: int) -> Episode:
        episode = self._episodes[i]
        episode.length = int(self._episode_lens[i])
        episode.total_reward = float(self._episode_returns[i])
        return episode

    def _episode_steps(self, next_obs, action, reward, terminated, truncated, info) -> None:
        """Per-env episode updates, only when the user's callbacks watch every step."""
        for i in range(self.num_envs):
            episode = self._sync_episode(i)
            episode.record_step(
                obs=next_obs[i], action=action[i], reward=reward[i], terminated=terminated[i],
                truncated=truncated[i],
                info={k: v[i] for k, v in info.items()
                      if not k.startswith("_") and k not in ("final_obs", "final_info")})
            self.callbacks.on_episode_step(worker=self, base_env=self.env, episode=episode,
                                           env_index=i)

    # -- sampling -------------------------------------------------------------------------------

    def sample(self) -> SampleBatch:
        """Steps every env ``rollout_fragment_length`` times; returns a ``[T, B]`` batch."""
        if self._policy is None:
            raise RuntimeError("RolloutWorker.sample() called before set_policy()")
        T, B = self.fragment_length, self.num_envs
        if self._external is not None:
            return self._sample_external(T, B)
        obs_buf = np.empty((T, B, *self.spec.obs_shape), self.preprocessor.dtype)
        next_buf = np.empty_like(obs_buf)
        rew_buf = np.empty((T, B), np.float32)
        term_buf = np.empty((T, B), bool)
        trunc_buf = np.empty((T, B), bool)
        eps_buf = np.empty((T, B), np.int64)
        t_buf = np.empty((T, B), np.int64)
        logp_buf = np.zeros((T, B), np.float32)
        actions = []
        infos: list[list[dict]] | None = [] if self._writer is not None else None
        segments = []  # (env_index, start, stop, episode) for on_postprocess_trajectory
        seg_start = np.zeros(B, np.int64)
        explore = bool(self.config.explore)
        clip_rewards = self._clip_rewards
        rnn = self._recurrent is not None
        if rnn:
            state_bufs = [np.empty((T, *s.shape), np.float32) for s in self._rnn_state]
            prev_action_buf = np.empty((T, *self._prev_action.shape), self._prev_action.dtype)
            prev_reward_buf = np.empty((T, B), np.float32)
        # The policy call for step t+1 is dispatched before step t's bookkeeping, so XLA
        # computes the next action while Python fills the buffers.
        pending = self._dispatch_act(self._obs, explore)
        for t in range(T):
            obs_buf[t] = self._obs
            if rnn:
                action, logp, self._key, state_out = pending
                for buf, s in zip(state_bufs, self._rnn_state, strict=True):
                    buf[t] = s
                prev_action_buf[t] = self._prev_action
                prev_reward_buf[t] = self._prev_reward
            else:
                action, logp, self._key = pending
            action = np.asarray(action)
            if logp is not None:
                logp_buf[t] = np.asarray(logp)
            actions.append(action)
            env_action = action
            if self._action_bounds is not None:
                env_action = np.clip(action, *self._action_bounds)
            self._action_log.append(env_action)
            if self.spec.composite:
                env_action = unflatten_actions(self.spec, env_action)
            raw_next, reward, terminated, truncated, info = self.env.step(env_action)
            next_obs = self._preprocess_batch(raw_next)
            if not (np.isfinite(reward).all() and (self._int_obs or np.isfinite(next_obs).all())):
                reward, terminated, truncated, next_obs, info = self._non_finite_step(
                    reward, terminated, truncated, next_obs, info, obs_buf[t],
                    self._steps_sampled + t * B)
            self._obs = next_obs
            if rnn:  # carry the state on; a lane whose episode ended starts afresh
                self._carry_recurrent(
                    state_out, action,
                    reward if clip_rewards is None else _clip_reward(reward, clip_rewards),
                    terminated | truncated)
            if t + 1 < T:
                pending = self._dispatch_act(next_obs, explore)
            done = terminated | truncated
            any_done = done.any()
            if any_done:
                next_obs = next_obs.copy()
                final_obs = info["final_obs"]
                for i in np.flatnonzero(done):
                    next_obs[i] = (final_obs[i].obs if isinstance(final_obs[i], _FinalObs)
                                   else self.preprocessor.transform(final_obs[i]))
            next_buf[t] = next_obs
            rew_buf[t] = reward if clip_rewards is None else _clip_reward(reward, clip_rewards)
            term_buf[t] = terminated
            trunc_buf[t] = truncated
            eps_buf[t] = self._episode_ids
            t_buf[t] = self._episode_lens
            self._episode_lens += 1
            self._episode_returns += reward
            if infos is not None:
                infos.append(_step_infos(info, done, B))
            if self._step_hook:
                self._episode_steps(next_obs, action, reward, terminated, truncated, info)
            if not any_done:
                continue
            for i in np.flatnonzero(done):
                if (info.get(SKIPPED_KEY) is not None and info[SKIPPED_KEY][i]) or \
                        _restarted(info, i):
                    segments.append((int(i), int(seg_start[i]), t + 1, self._episodes[i]))
                    seg_start[i] = t + 1
                    self._episodes[i] = self._start_episode(int(i))  # left out of the stats
                    continue
                episode = self._sync_episode(int(i))
                if "final_info" in info:
                    episode.record_step(info={k: v[i] for k, v in info["final_info"].items()
                                              if not k.startswith("_")})
                self.callbacks.on_episode_end(worker=self, base_env=self.env,
                                              policies=self.policy_map, episode=episode,
                                              env_index=int(i))
                self._completed.append({
                    "episode_reward": episode.total_reward, "episode_len": episode.length,
                    "custom_metrics": dict(episode.custom_metrics),
                    "hist_data": {k: list(v) for k, v in episode.hist_data.items()},
                })
                segments.append((int(i), int(seg_start[i]), t + 1, episode))
                seg_start[i] = t + 1
                self._episodes[i] = self._start_episode(int(i))
        for i, episode in enumerate(self._episodes):
            if seg_start[i] < T:
                segments.append((i, int(seg_start[i]), T, episode))
        batch = SampleBatch(obs=obs_buf, actions=np.stack(actions), rewards=rew_buf,
                            terminateds=term_buf, truncateds=trunc_buf, new_obs=next_buf,
                            action_logp=logp_buf, eps_id=eps_buf, t=t_buf)
        if rnn:
            batch.update({f"state_in_{i}": buf for i, buf in enumerate(state_bufs)})
            batch[SampleBatch.PREV_ACTIONS] = prev_action_buf
            batch[SampleBatch.PREV_REWARDS] = prev_reward_buf
        self._postprocess(batch, segments)
        self._steps_sampled += T * B
        keep = int(self._episode_lens.max(initial=0))
        self._action_log = self._action_log[-keep:] if 0 < keep <= MAX_REPLAY_STEPS else []
        self.callbacks.on_sample_end(worker=self, samples=batch)
        if self._writer is not None:
            self._writer.write(batch, infos)
        return batch

    def _dispatch_act(self, obs: np.ndarray, explore: bool) -> tuple:
        if self._recurrent is None:
            return self._act(self._policy, obs, self._key, explore)
        return self._act_rnn(self._policy, obs, tuple(self._rnn_state), self._prev_action,
                             self._prev_reward, self._key, explore)

    def _carry_recurrent(self, state_out: Any, action: np.ndarray, reward: np.ndarray,
                         done: np.ndarray) -> None:
        keep = ~np.asarray(done)
        self._rnn_state = [np.where(keep[:, None], np.asarray(s), 0.0).astype(np.float32)
                           for s in state_out]
        shape = (-1,) + (1,) * (action.ndim - 1)
        self._prev_action = np.where(keep.reshape(shape), action, 0).astype(
            self._prev_action.dtype)
        self._prev_reward = np.where(keep, reward, 0.0).astype(np.float32)

    def _non_finite_step(self, reward, terminated, truncated, next_obs, info, obs, steps):
        """A step where some env gave a NaN/inf reward or observation: ``nan_policy: raise``
        names the env, worker and step; ``skip_episode`` ends those envs' episodes there
        (reward 0, the last finite observation as the final one) and resets them."""
        bad_reward = ~np.isfinite(reward)
        bad_obs = (np.zeros_like(bad_reward) if self._int_obs else
                   ~np.isfinite(next_obs.reshape(len(next_obs), -1)).all(axis=1))
        bad = np.flatnonzero(bad_reward | bad_obs)
        i = int(bad[0])
        if self.config.nan_policy == "raise":
            what = (f"reward {float(reward[i])!r}" if bad_reward[i]
                    else "observation holding NaN/inf")
            raise EnvError(
                f"env '{self.env_id}' returned a non-finite {what} on worker "
                f"{self.worker_index}, sub-env {i}, at step {int(self._episode_lens[i]) + 1} of "
                f"episode {int(self._episode_ids[i])} (env steps sampled by this worker: {steps}); "
                "fix the env or set nan_policy: skip_episode")
        self.num_skipped_episodes += len(bad)
        log = logger.warning if self.num_skipped_episodes == len(bad) else logger.debug
        log("env '%s' returned a non-finite reward/observation on worker %d, sub-env(s) %s: "
            "skipping the episode (nan_policy: skip_episode; further skips are logged at DEBUG)",
            self.env_id, self.worker_index, bad.tolist())
        reward = np.where(bad_reward, 0.0, reward).astype(np.asarray(reward).dtype)
        terminated, truncated = terminated.copy(), truncated.copy()
        next_obs = next_obs.copy()
        final_obs = np.array(info["final_obs"], dtype=object) if "final_obs" in info else \
            np.full(self.num_envs, None, dtype=object)
        skipped = np.zeros(self.num_envs, bool)
        for j in bad:
            terminated[j], truncated[j], skipped[j] = False, True, True
            raw, _ = self.env.envs[j].reset()
            next_obs[j] = self.preprocessor.transform(raw)
            final_obs[j] = _FinalObs(obs[j])  # already preprocessed
        info = {**info, "final_obs": final_obs, SKIPPED_KEY: skipped}
        return reward, terminated, truncated, next_obs, info

    # -- state for checkpoints -------------------------------------------------------------------

    def get_sampler_state(self) -> dict[str, Any]:
        """What sampling needs to go on exactly after a restore, as JSON-able values: the
        acting key, the counters, each env's episode seed and the actions of its running
        episode (gymnasium envs cannot save themselves; ``set_sampler_state`` replays them).
        An ExternalEnv's episodes belong to its clients: only the counter is kept."""
        if self._external is not None:
            return {"steps_sampled": self._steps_sampled, "envs": []}
        lens = self._episode_lens
        envs = []
        # Sub-envs in other processes (async, envpool) cannot be replayed: they start fresh.
        for i, env in enumerate(getattr(self.env, "envs", [None] * self.num_envs)):
            n = int(lens[i])
            seeds = env if isinstance(env, EpisodeSeeds) else None
            exact = seeds is not None and n <= len(self._action_log)
            actions = [np.asarray(a[i]).tolist() for a in self._action_log[len(self._action_log) - n:]]
            envs.append({"base_seed": seeds.base_seed if seeds else None,
                         "episode": seeds.episode if seeds else 0,
                         "actions": actions if exact else None})
        key = self._key
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        out = {"key": np.asarray(key).tolist(), "steps_sampled": self._steps_sampled,
               "episode_lens": lens.tolist(), "episode_returns": self._episode_returns.tolist(),
               "envs": envs}
        if self._recurrent is not None:  # the running episodes' recurrent state
            out["recurrent"] = {"state": [s.tolist() for s in self._rnn_state],
                                "prev_action": self._prev_action.tolist(),
                                "prev_reward": self._prev_reward.tolist()}
        return out

    def set_sampler_state(self, state: dict[str, Any]) -> None:
        """Continues from ``get_sampler_state``'s output: each env is reset into its running
        episode's seed and steps through that episode's actions again."""
        envs = state.get("envs") or []
        if self._external is not None:
            self._steps_sampled = int(state.get("steps_sampled", self._steps_sampled))
            return
        if len(envs) != self.num_envs:
            logger.warning("checkpoint sampler has %d envs, this worker %d: envs start fresh",
                           len(envs), self.num_envs)
            return
        self._key = jax.device_put(np.asarray(state["key"], np.uint32), self._act_device)
        self._steps_sampled = int(state["steps_sampled"])
        log_len = 0
        local_envs = getattr(self.env, "envs", [None] * self.num_envs)
        saved_rnn = state.get("recurrent") if self._recurrent is not None else None
        for i, (env, saved) in enumerate(zip(local_envs, envs, strict=True)):
            if not isinstance(env, EpisodeSeeds) or saved["actions"] is None:
                continue  # this env starts a fresh episode
            if saved_rnn is not None:
                for s, saved_s in zip(self._rnn_state, saved_rnn["state"], strict=True):
                    s[i] = saved_s[i]
                self._prev_action[i] = saved_rnn["prev_action"][i]
                self._prev_reward[i] = saved_rnn["prev_reward"][i]
            raw, _ = env.reset_to(saved["base_seed"], saved["episode"])
            for action in saved["actions"]:
                action = np.asarray(action, self._action_dtype)
                raw, *_ = env.step(unflatten_actions(self.spec, action) if self.spec.composite
                                   else action)
            self._obs[i] = self.preprocessor.transform(raw)
            self._episodes[i] = self._start_episode(i)
            self._episode_lens[i] = len(saved["actions"])
            self._episode_returns[i] = state["episode_returns"][i]
            log_len = max(log_len, len(saved["actions"]))
        self._action_log = [np.stack([np.asarray(e["actions"][len(e["actions"]) - log_len + t],
                                                 self._action_dtype)
                                      if e["actions"] is not None and
                                      t >= log_len - len(e["actions"]) else self._no_action
                                      for e in envs])
                            for t in range(log_len)]
    def _sample_external(self, T: int, B: int) -> SampleBatch:
        """``T * B`` steps the ExternalEnv's episodes completed (waits for them)."""
        batch = SampleBatch(self._external.sample(T, B))
        self._completed.extend(self._external.pop_episodes())
        self._steps_sampled += T * B
        self.callbacks.on_sample_end(worker=self, samples=batch)
        if self._writer is not None:
            self._writer.write(batch, None)
        return batch

    def _postprocess(self, batch: SampleBatch, segments: list) -> None:
        hook = self.callbacks.on_postprocess_trajectory
        if not overrides_hook(self.callbacks, "on_postprocess_trajectory"):
            return
        for env_index, start, stop, episode in segments:
            view = SampleBatch({k: v[start:stop, env_index] for k, v in batch.items()})
            policy = self.policy_map[DEFAULT_POLICY_ID]
            original = {DEFAULT_POLICY_ID: (policy, SampleBatch(
                {k: v.copy() for k, v in view.items()}))}
            hook(worker=self, episode=episode, agent_id=0, policy_id=DEFAULT_POLICY_ID,
                 policies=self.policy_map, postprocessed_batch=view,
                 original_batches=original)
            for k, v in view.items():  # write back in case a column was replaced, not mutated
                if v is not batch[k][start:stop, env_index]:
                    batch[k][start:stop, env_index] = v

    def sample_with_episodes(self, policy: Any = None) -> tuple[SampleBatch, list[dict]]:
        """``set_policy(policy)`` (when given), ``sample()``, and the episodes completed so far:
        one round trip for remote workers."""
        if policy is not None:
            self.set_policy(policy)
        batch = self.sample()
        return batch, self.pop_episodes()

    def get_spec(self):
        return self.spec

    @property
    def num_env_restarts(self) -> int:
        """Sub-envs rebuilt after they raised (``restart_failed_sub_environments``)."""
        total = 0
        for env in getattr(self.env, "envs", ()):  # async/envpool sub-envs are not reachable
            while isinstance(env, gym.Wrapper):
                if isinstance(env, RestartingEnv):
                    total += env.num_restarts
                env = env.env
        return total

    @property
    def steps_sampled(self) -> int:
        return self._steps_sampled

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.env.close()


# Marks, in a vector step's info, the envs whose episode ``nan_policy: skip_episode`` dropped.
SKIPPED_KEY = "_jrl_skipped_episode"


class _FinalObs(NamedTuple):
    """A final observation that is already preprocessed (a skipped episode's last one)."""

    obs: np.ndarray


def _restarted(info: dict, i: int) -> bool:
    """Whether env ``i``'s episode ended because ``RestartingEnv`` rebuilt the env."""
    final = info.get("final_info") or {}
    flags = final.get(RESTARTED_KEY)
    return flags is not None and bool(flags[i]) and bool(final.get(f"_{RESTARTED_KEY}",
                                                                    flags)[i])


def _step_infos(info: dict, done: np.ndarray, num_envs: int) -> list[dict]:
    """Each env's info dict of one vector step (the episode's last info where it ended), with
    gymnasium's bookkeeping keys left out."""
    skip = ("final_obs", "final_info")
    rows: list[dict] = [{} for _ in range(num_envs)]
    for k, v in info.items():
        if k.startswith("_") or k in skip:
            continue
        present = info.get(f"_{k}")
        for i in range(num_envs):
            if present is None or present[i]:
                rows[i][k] = v[i]
    final = info.get("final_info")
    if final:
        for i in np.flatnonzero(done):
            rows[i].update({k: v[i] for k, v in final.items() if not k.startswith("_")
                            and (final.get(f"_{k}") is None or final[f"_{k}"][i])})
    return rows
