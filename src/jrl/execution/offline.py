"""Offline plan (MARWIL, BC): learn from recorded episodes, freshly sampled ones, or a mix.

Each ``step`` takes one time-major ``[T, B]`` batch from the configured ``input`` and runs the
algorithm's ``update`` once. ``T`` and ``B`` are those of the on-policy plan
(``B = workers.num_envs``, ``T`` = enough fragments of ``rollout_fragment_length`` to cover
``train_batch_size``), whatever the source, so a mixed input never retraces the update:

- ``"sampler"``: the rollout workers sample with the current policy (RLlib's MARWIL allows it);
- files (a directory, glob, file or list): streamed with ``jrl.rollout.offline.JsonReader``;
- ``{source: probability}``: each batch from one source drawn by probability.

On every batch read from files, the estimators named in ``input_evaluation`` (``is``, ``wis``)
estimate the current policy's value before it learns from the batch; the iteration's mean
estimates appear in the results as ``off_policy_estimator/<name>/<metric>``.

``fit_epochs`` trains on a whole in-memory data set inside one jit (epochs of all batches in
shuffled order, ``lax.scan``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrl.errors import ConfigError
from jrl.execution.learner import Learner
from jrl.ops.estimators import episode_bounds, episode_estimates, wis_init
from jrl.rollout.offline import BatchAssembler, JsonReader, MixedInput
from jrl.rollout.worker import SampleBatch
from jrl.rollout.worker_set import WorkerSet
from jrl.types import Algorithm, AlgorithmDef, Transition

SAMPLER = "sampler"


def batch_shape(config: Any, num_envs: int) -> tuple[int, int]:
    """``(T, B)`` of the offline plan's batches."""
    rounds = max(1, math.ceil(config.train_batch_size
                              / (config.rollout_fragment_length * num_envs)))
    return config.rollout_fragment_length * rounds, num_envs


class OfflinePlan:
    """One ``[T, B]`` batch from ``config.input`` per step, one ``update`` on it."""

    def __init__(self, definition: AlgorithmDef, algorithm: Algorithm, workers: WorkerSet,
                 config: Any, spec: Any):
        self.algorithm = algorithm
        self.workers = workers
        self.config = config
        self.T, self.B = batch_shape(config, workers.num_envs)
        self._rounds = self.T // config.rollout_fragment_length
        self.learner = Learner.for_algorithm(definition, algorithm, config, spec, self.B)
        self._policy = jax.jit(algorithm.policy)
        self._state: Any = None
        self.input, self.estimation = make_input(definition, config, spec, self.T, self.B,
                                                 self._sample,
                                                 policy_id=getattr(workers, "policy_id", None))

    def _sample(self) -> dict[str, np.ndarray]:
        self.workers.set_policy(self._policy(self._state))
        return SampleBatch.concat_time([self.workers.sample() for _ in range(self._rounds)])

    def step(self, state: Any) -> tuple[Any, dict, int]:
        self._state = state
        source, batch = self.input.next()
        if source != SAMPLER and self.estimation is not None:
            self.estimation.add(self._policy(state), batch)
        state, metrics = self.learner.update(state, SampleBatch(batch).to_transition())
        self._state = None
        return state, metrics, int(np.prod(batch["rewards"].shape))

    def stats(self) -> dict[str, Any]:
        """The iteration's mean off-policy estimates (``off_policy_estimator/<name>/...``)."""
        return self.estimation.pop() if self.estimation is not None else {}


class OffPolicyEstimation:
    """Runs ``input_evaluation``'s estimators on the episodes of batches read from files and
    averages them over an iteration.

    Batches from ``BatchAssembler`` lay rows end to end, lane after lane, so read lane by lane
    they are one stream of steps; episodes are cut from it by ``eps_id``, ``t`` and termination
    (``episode_bounds``), and an episode still open at a batch's end continues in the next
    batch. Each episode is estimated when it is complete (RLlib's per-episode estimates, WIS
    weights running over every episode seen), with ``pi``'s log-probabilities computed by the
    policy current when each of its steps was read.

    Args:
      logp: ``logp(policy, obs [N], actions [N]) -> [N]`` of the policy being learned.
      estimators: names out of ``("is", "wis")``.
      gamma: discount.
    """

    def __init__(self, logp: Callable, estimators: tuple[str, ...], gamma: float):
        self.estimators = estimators
        self.gamma = gamma
        self._logp = jax.jit(logp)
        self._wis = wis_init()
        self._open: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._last: tuple[int, int, bool] | None = None  # eps_id, t, terminated of the open end
        self._estimates: list[dict] = []

    def add(self, policy: Any, batch: dict[str, np.ndarray]) -> None:
        """Estimates the episodes ``batch`` completes (``[T, B]`` columns ``obs``, ``actions``,
        ``rewards``, ``action_logp``, ``eps_id``, ``t``, ``terminateds``)."""
        T, B = batch["rewards"].shape

        def stream(x):
            x = np.asarray(x)
            return np.swapaxes(x, 0, 1).reshape(T * B, *x.shape[2:])

        obs, actions = stream(batch["obs"]), stream(batch["actions"])
        target = np.asarray(self._logp(policy, obs, actions)).reshape(-1)
        rewards, behaviour = stream(batch["rewards"]), stream(batch["action_logp"])
        eps_id, t = stream(batch["eps_id"]), stream(batch["t"])
        terminated = stream(batch["terminateds"]).astype(bool)
        starts = [*episode_bounds(eps_id, t, terminated), T * B]
        for begin, end in zip(starts[:-1], starts[1:], strict=True):
            continues = (begin == 0 and self._last is not None and not self._last[2]
                         and int(eps_id[0]) == self._last[0] and int(t[0]) == self._last[1] + 1)
            if not continues:
                self._close()
            self._open.append((rewards[begin:end], behaviour[begin:end], target[begin:end]))
            self._last = (int(eps_id[end - 1]), int(t[end - 1]), bool(terminated[end - 1]))
        if self._last is not None and self._last[2]:
            self._close()

    def _close(self) -> None:
        if not self._open:
            return
        r, mu, pi = (np.concatenate(parts) for parts in zip(*self._open, strict=True))
        self._open, self._last = [], None
        estimates, self._wis = episode_estimates(r, mu, pi, self.gamma, self._wis)
        self._estimates.append({k: estimates[k] for k in self.estimators})

    def pop(self) -> dict[str, Any]:
        """``{"off_policy_estimator": {name: {metric: mean over episodes}}}`` of the episodes
        completed since the last call ({} when none was)."""
        if not self._estimates:
            return {}
        estimates = jax.tree.map(lambda *xs: float(np.mean(xs)), *self._estimates)
        self._estimates = []
        return {"off_policy_estimator": estimates}


def make_input(definition: AlgorithmDef, config: Any, spec: Any, T: int, B: int,
               sample: Callable[[], Any], policy_id: str | None = None
               ) -> tuple[MixedInput, OffPolicyEstimation | None]:
    """The batch source of ``config.input`` (``[T, B]`` batches; ``sample()`` serves
    ``"sampler"``) and the off-policy estimation of its file batches (None without files or
    estimators). ``policy_id``: a multi-agent trainer's policy, which reads its own batches of
    ``MultiAgentBatch`` lines."""
    sources = config.input if isinstance(config.input, dict) else {
        config.input if isinstance(config.input, str) else "__files__": 1.0}
    readers: dict[str, Callable[[], Any]] = {}
    for index, name in enumerate(sources):
        if name == SAMPLER:
            readers[name] = sample
        else:
            files = list(config.input) if name == "__files__" else name
            assembler = BatchAssembler(T, B, spec.obs_dtype, spec.action_dtype, spec.obs_shape,
                                       episode_cuts=bool(getattr(config, "postprocess_inputs",
                                                                 False)))
            readers[name] = JsonReader(files, assembler, config.shuffle_buffer_size,
                                       seed=config.seed + index, policy_id=policy_id).next
    estimation = None
    if config.input_evaluation and any(name != SAMPLER for name in sources):
        logp = definition.require("action_logp")(config, spec)
        estimation = OffPolicyEstimation(logp, tuple(config.input_evaluation), config.gamma)
    return MixedInput(sources, readers, seed=config.seed), estimation


def fit_epochs(algorithm: Algorithm, num_epochs: int) -> Callable:
    """``fit(state, batches [K, T, B, ...], key) -> (state, metrics [num_epochs])``: every one
    of the ``K`` batches once per epoch, in a new random order each epoch, all inside one jit.

    ``batches`` is a ``Transition`` of stacked batches (``dataset_transitions``)."""
    if num_epochs < 1:
        raise ConfigError(f"num_epochs must be >= 1, got {num_epochs}")

    def fit(state, batches: Transition, key: jax.Array):
        num_batches = batches.reward.shape[0]

        def epoch(state, epoch_key):
            order = jax.random.permutation(epoch_key, num_batches)
            state, metrics = jax.lax.scan(
                lambda s, i: algorithm.update(s, jax.tree.map(lambda x: x[i], batches)),
                state, order)
            return state, jax.tree.map(jnp.mean, metrics)

        return jax.lax.scan(epoch, state, jax.random.split(key, num_epochs))

    return jax.jit(fit)


def dataset_transitions(dataset: dict[str, np.ndarray]) -> Transition:
    """The ``Transition`` ``[K, T, B]`` of ``jrl.rollout.offline.load_dataset``'s batches."""
    return Transition(obs=dataset["obs"], action=dataset["actions"],
                      reward=dataset["rewards"].astype(np.float32),
                      terminated=dataset["terminateds"], truncated=dataset["truncateds"],
                      next_obs=dataset["new_obs"],
                      behaviour_logp=dataset["action_logp"].astype(np.float32))
