"""Core types shared by algorithms, rollouts and the trainer.

Everything here is either static Python data describing an environment (``EnvSpec``) or a pytree of
arrays (``Transition``). Algorithms are ``Algorithm`` tuples of pure functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from jrl.errors import ConfigError

PRNGKey = jax.Array
Params = Any
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Static description of an environment as the learner sees it (after preprocessing).

    Attributes:
      obs_shape: shape of one preprocessed observation.
      obs_dtype: numpy dtype name of the preprocessed observation.
      action_kind: ``"discrete"``, ``"continuous"``, ``"multi_discrete"`` (MultiDiscrete) or
        ``"multi_binary"`` (MultiBinary).
      num_actions: number of discrete actions (0 for continuous).
      action_shape: shape of one action (``()`` for discrete, ``(K,)`` for multi-discrete and
        multi-binary).
      action_nvec: values of each component of a multi-discrete action (``None`` otherwise).
      action_low: lower bounds of a Box action space (``None`` for discrete).
      action_high: upper bounds of a Box action space (``None`` for discrete).
      max_episode_steps: the time limit, set only when the env truncates episodes there and
        nowhere else (learners then reuse ``V(obs[t + 1])`` for ``V(next_obs[t])``, see
        ``jrl.ops.bootstrap``); ``None`` when unknown.
      action_mask: ``(start, stop)`` of the ``action_mask`` entry of Dict observations in the
        flattened observation (1 allows an action, 0 forbids it); ``None`` without a mask.
    """

    obs_shape: tuple[int, ...]
    obs_dtype: str = "float32"
    action_kind: str = "discrete"
    num_actions: int = 0
    action_shape: tuple[int, ...] = ()
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    action_nvec: tuple[int, ...] | None = None
    max_episode_steps: int | None = None
    action_mask: tuple[int, int] | None = None

    @property
    def discrete(self) -> bool:
        return self.action_kind == "discrete"

    @property
    def continuous(self) -> bool:
        return self.action_kind == "continuous"

    @property
    def action_dtype(self) -> str:
        return "float32" if self.continuous else "int32"


class Transition(NamedTuple):
    """One step (or a batch of steps) of experience.

    Shapes are ``[T, B, ...]`` for on-policy fragments (time-major) or ``[N, ...]`` for replay samples.
    ``terminated`` and ``truncated`` are kept apart: a truncated step bootstraps from the value of
    ``next_obs``, a terminated one does not. ``next_obs`` is the true next observation (the final
    observation of an episode at its last step, not the reset observation).

    Recurrent policies (``model.use_lstm``) also fill ``state_in`` (the state each step was acted
    with, a tuple of ``[T, B, H]``), ``prev_action`` ``[T, B, ...]`` and ``prev_reward``
    ``[T, B]`` (zeros at an episode's first step); they are ``None`` otherwise (no leaves, so
    feed-forward programs do not change).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    behaviour_logp: jax.Array
    state_in: Any = None
    prev_action: Any = None
    prev_reward: Any = None


class ReplayBatch(NamedTuple):
    """Replay items ``[N, ...]`` for off-policy learners (DQN, DDPG, TD3, SAC, APEX).

    ``reward`` is the n-step discounted return, ``discount`` the bootstrap factor
    (``gamma**m``, or 0 after termination), ``next_obs`` the observation to bootstrap from.
    ``weight`` is the importance-sampling weight of each sample: 1 from uniform replay,
    ``(N * P(i))**-beta`` normalized from prioritized replay; losses average
    ``weight * per_sample_loss``.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array
    next_obs: jax.Array
    weight: jax.Array


class LearnerState(NamedTuple):
    """Learner state of algorithms with one network and one optimizer (PG, A2C, A3C, IMPALA,
    ES): arrays only.

    Attributes:
      params: the network's parameters (a pytree of float32 arrays).
      opt_state: the optimizer's optax state (e.g. Adam's int32 ``[]`` step count and float32
        moments shaped like ``params``).
      key: PRNG key, ``uint32 [2]``.
      obs_filter: observation statistics, ``jrl.ops.filters.FilterState`` (float32 ``[]``
        count, float32 ``[*obs_shape]`` mean and m2).
      num_updates: learner updates so far, int32 ``[]``.
      env_steps: env steps trained on so far, int32 ``[]``.
    """

    params: Any
    opt_state: Any
    key: jax.Array
    obs_filter: Any
    num_updates: jax.Array
    env_steps: jax.Array


class NetworkPolicy(NamedTuple):
    """What most algorithms' ``act`` needs: network params and observation-filter statistics.

    Attributes:
      params: the network's parameters (a pytree of float32 arrays).
      obs_filter: observation statistics, ``jrl.ops.filters.FilterState``.
    """

    params: Any
    obs_filter: Any


class Algorithm(NamedTuple):
    """An algorithm as pure, jittable functions over its ``TrainState`` pytree.

    Attributes:
      init: ``init(key) -> TrainState`` builds a fresh state.
      update: ``update(state, batch) -> (state, metrics)`` runs one learner step.
      act: ``act(policy, obs, key, explore) -> (action, extras)`` for a batch of observations
        ``[B, ...]``; ``extras`` holds e.g. ``behaviour_logp``, ``vf_preds``, ``q_values``.
      policy: ``policy(state) -> Policy`` the pytree ``act`` needs (params, filter statistics,
        exploration parameters), small enough to ship to rollout workers.
      name: the registered algorithm name (``"PPO"``, ``"DQN"``).
      recurrent: ``RecurrentFns`` when the policy carries state between steps
        (``model.use_lstm``), else ``None``; ``act`` then acts from the initial state.
    """

    init: Callable[[PRNGKey], Any]
    update: Callable[[Any, Transition], tuple[Any, Metrics]]
    act: Callable[[Any, jax.Array, PRNGKey, bool], tuple[jax.Array, dict[str, jax.Array]]]
    policy: Callable[[Any], Any]
    name: str = ""
    recurrent: Any = None


class RecurrentFns(NamedTuple):
    """How a recurrent policy acts, one step at a time.

    Attributes:
      initial_state: ``initial_state(n) -> state``: the zero state of ``n`` lanes (a tuple of
        float32 ``[n, H]`` arrays: ``(h, c)`` for an LSTM, ``(h,)`` for a GRU).
      act: ``act(policy, obs [N, ...], state, prev_action [N, ...], prev_reward [N], key,
        explore) -> (action, extras, state_out)``.
    """

    initial_state: Callable[[int], Any]
    act: Callable[..., tuple[jax.Array, dict[str, jax.Array], Any]]


@dataclasses.dataclass(frozen=True)
class AlgorithmDef:
    """Everything about one algorithm besides its pure functions: the algorithm record.

    Each ``jrl/algorithms/<algo>.py`` exports one as ``ALGORITHM_DEF``; ``jrl.registry`` maps names
    to the modules holding them (imports stay lazy) and hands the records out. Plans, the jitted
    loop, the Trainer and the tests read an algorithm's hooks from here and nowhere else.

    Attributes:
      name: registered name, upper case as in RLlib (``"PPO"``).
      config_class: the frozen config dataclass (RLlib key names).
      make: ``make(config, networks, spec, axis_name=None) -> Algorithm``; with ``axis_name`` the
        update averages its gradients over that mapped device axis.
      plan: execution plan, a name in ``jrl.registry.plan_names()`` (``"on_policy"``,
        ``"off_policy"``, ``"async_samples"``, ``"async_gradients"``, ``"distributed_replay"``,
        ``"evolution"``, ``"offline"``).
      example_batch: ``example_batch(config, spec, key) -> batch``: random data of exactly the
        structure, shapes and dtypes the plan feeds ``update`` (for tests and compile checks).
      model: what ``get_policy().model`` exposes: ``"actor_critic"`` (distribution and value
        function), ``"q"`` (Q-values), ``"deterministic"`` (a policy network whose output is the
        action or its logits) or ``"actor_q"`` (a policy plus critics, see ``q_function``).
      trainer_class_name: RLlib's name of the trainer class (``"ImpalaTrainer"``); empty means
        ``"<name>Trainer"``.
      postprocess: ``postprocess(config, fragment [T, B]) -> ReplayBatch [T * B]``: replay items
        (n-step returns) of a sampled fragment; replay-based plans need it.
      q_function: ``q_function(config, spec) -> q(params, obs, actions)``: the critic's forward
        pass (``actor_q`` models).
      worker_policy: ``worker_policy(config, policy, worker_index, num_workers) -> policy``: the
        acting pytree of one rollout worker (Ape-X's per-worker exploration).
      gradient_fns: ``gradient_fns(config, spec, networks=None) -> GradientFns``: the update split
        into ``compute`` (on a rollout worker) and ``apply`` (on the learner), for A3C.
      noise_rows: ``noise_rows(indices [N], dim) -> [N, dim]``: rows of the shared noise table
        (ES).
      batch_type: the NamedTuple the plan builds ``update``'s batch with, where that is not a
        ``Transition`` or ``ReplayBatch`` (ES's ``ESBatch``).
      action_logp: ``action_logp(config, spec) -> logp(policy, obs [N], actions [N]) -> [N]``:
        the policy's log-probability of given actions, for off-policy estimation
        (``input_evaluation``) of recorded data.
      recurrent: whether ``make`` builds recurrent policies for ``model.use_lstm``/``use_gru``
        (the others reject those keys).
    """

    name: str
    config_class: type
    make: Callable[..., Algorithm]
    plan: str
    example_batch: Callable[[Any, EnvSpec, PRNGKey], Any]
    model: str = "actor_critic"
    trainer_class_name: str = ""
    postprocess: Callable[[Any, Transition], ReplayBatch] | None = None
    q_function: Callable[[Any, EnvSpec], Callable] | None = None
    worker_policy: Callable[[Any, Any, int, int], Any] | None = None
    gradient_fns: Callable[..., Any] | None = None
    noise_rows: Callable[[jax.Array, int], jax.Array] | None = None
    batch_type: type | None = None
    action_logp: Callable[[Any, EnvSpec], Callable] | None = None
    recurrent: bool = False

    @property
    def trainer_name(self) -> str:
        """The trainer class name RLlib users know: ``PPOTrainer``, ``ImpalaTrainer``, ..."""
        return self.trainer_class_name or f"{self.name}Trainer"

    @property
    def jittable(self) -> bool:
        """Whether the algorithm runs in the fully-jitted loop (JAX envs)."""
        return self.plan in ("on_policy", "off_policy")

    def require(self, hook: str) -> Callable:
        """The hook ``hook``, or a clear error naming the algorithm that lacks it."""
        fn = getattr(self, hook)
        if fn is None:
            raise ConfigError(f"{self.name} has no '{hook}' (its algorithm record does not "
                              f"define it; the '{self.plan}' plan needs it)")
        return fn
