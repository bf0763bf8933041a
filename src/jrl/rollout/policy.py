"""Policies as RLlib users know them: ``get_weights``, ``compute_actions``, ``model``, ...

A ``Policy`` pairs an algorithm record's pure functions with its own acting state, preprocessor
and observation filter. Every rollout worker (local or a Ray actor) holds ``policy_map:
{policy_id: Policy}`` (one ``"default_policy"`` for single-agent runs). The trainer's policy is its
local worker's, bound to the learner: its weights are the learner's, and ``set_weights`` writes
into the learner state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from jrl.config import to_dict
from jrl.errors import ConfigError, EnvError
from jrl.networks import catalog
from jrl.networks.heads import QHead
from jrl.networks.recurrent import make_recurrent_actor_critic
from jrl.ops.filters import get_filter
from jrl.rollout.action_dist import dist_class_for, flat_inputs
from jrl.rollout.envs import flatten_actions, unflatten_actions
from jrl.rollout.preprocessors import Preprocessor
from jrl.types import Algorithm, AlgorithmDef, EnvSpec

DEFAULT_POLICY_ID = "default_policy"



class Policy:
    """One policy: acting, weights and the model's forward passes on raw observations.

    Args:
      definition: the algorithm record.
      algorithm: the ``Algorithm`` built from it (``act`` and ``policy`` are used).
      config: the algorithm's frozen config.
      spec: the env spec the network sees (after preprocessing).
      preprocessor: turns raw observations into network inputs (and checks them).
      observation_space: the raw observation space (what ``compute_actions`` takes).
      action_space: the env's action space.
      seed: seed of the keys exploring actions are drawn with.
    """

    def __init__(self, definition: AlgorithmDef, algorithm: Algorithm, config: Any,
                 spec: EnvSpec, preprocessor: Preprocessor, observation_space: gym.Space,
                 action_space: gym.Space, seed: int = 0):
        self.definition = definition
        self.algorithm = algorithm
        self.algo_config = config
        self.spec = spec
        self.preprocessor = preprocessor
        self.observation_space = observation_space
        self.action_space = action_space
        self.act_fn = jax.jit(algorithm.act, static_argnums=3)
        self._policy_fn = jax.jit(algorithm.policy)
        self._acting: Any = None
        self._get_learner_state: Callable[[], Any] | None = None
        self._set_learner_state: Callable[[Any], None] | None = None
        self._key = jax.random.PRNGKey(seed + 7919)
        self._model: PolicyModel | None = None
        self._recurrent = algorithm.recurrent
        if self._recurrent is not None:
            self.recurrent_act_fn = jax.jit(self._recurrent.act, static_argnums=6)

    @property
    def config(self) -> dict:
        """The config as a dict of RLlib keys."""
        return to_dict(self.algo_config)

    # -- state ----------------------------------------------------------------------------------

    def bind_learner(self, get_state: Callable[[], Any], set_state: Callable[[Any], None]
                     ) -> None:
        """Makes the learner's ``TrainState`` this policy's source of truth (the trainer's
        policy): weights, actions and the model read it, ``set_weights`` writes it."""
        self._get_learner_state, self._set_learner_state = get_state, set_state

    @property
    def learner_state(self) -> Any:
        """The bound learner's ``TrainState``, or None on a rollout worker."""
        return None if self._get_learner_state is None else self._get_learner_state()

    def set_acting(self, acting: Any) -> None:
        """Sets the acting pytree (``algorithm.policy(state)``: params, filter statistics,
        exploration) that sampling uses."""
        self._acting = acting

    @property
    def acting(self) -> Any:
        """The acting pytree: from the learner state when bound, else the one last set."""
        state = self.learner_state
        if state is not None:
            return self._policy_fn(state)
        if self._acting is None:
            raise RuntimeError("this policy has no weights yet (set_weights or sync from the "
                               "trainer first)")
        return self._acting

    def get_weights(self) -> Any:
        """The network params as a nested dict of NumPy arrays (the learner's when bound; a
        rollout worker holds the params it acts with)."""
        state = self.learner_state
        return jax.device_get(state.params if state is not None else self.acting.params)

    def set_weights(self, weights: Any) -> None:
        """Replaces the network params (structure, shapes and dtypes must match)."""
        state = self.learner_state
        current = state.params if state is not None else self.acting.params
        try:
            new = jax.tree.map(lambda c, w: jnp.asarray(w, c.dtype).reshape(c.shape), current,
                               weights)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"set_weights: weights do not match the policy's params: {e}"
                              ) from None
        if state is not None:
            self._set_learner_state(state._replace(params=new))
        else:
            self._acting = self._acting._replace(params=new)

    def get_state(self) -> dict:
        """``{"weights": ..., "acting": ...}``: what ``set_state`` restores."""
        return {"weights": self.get_weights(), "acting": jax.device_get(self.acting)}

    def set_state(self, state: Mapping) -> None:
        if "acting" in state and self.learner_state is None:
            self._acting = jax.tree.map(jnp.asarray, state["acting"])
        self.set_weights(state["weights"])

    # -- acting ---------------------------------------------------------------------------------

    def preprocess(self, obs_batch: Any) -> np.ndarray:
        """Raw observations -> the network's input batch (each checked against the space)."""
        obs_list = list(obs_batch)
        for obs in obs_list:
            self.preprocessor.check(obs)
        return np.stack([self.preprocessor.transform(o) for o in obs_list])

    def act_on(self, obs: np.ndarray, explore: bool) -> tuple[np.ndarray, dict]:
        """Actions and extras for preprocessed observations ``[N, ...]`` (clipped to the Box
        bounds with ``clip_actions``)."""
        self._key, key = jax.random.split(self._key)
        action, extras = self.act_fn(self.acting, obs, key, bool(explore))
        action = np.asarray(action)
        spec = self.spec
        if spec.continuous and self.algo_config.clip_actions:
            action = np.clip(action, np.reshape(spec.action_low, spec.action_shape),
                             np.reshape(spec.action_high, spec.action_shape))
        return action, {k: np.asarray(v) for k, v in extras.items()}

    def compute_actions(self, obs_batch: Any, state_batches: Any = None,
                        prev_action_batch: Any = None, prev_reward_batch: Any = None,
                        info_batch: Any = None, episodes: Any = None,
                        explore: bool | None = None, timestep: int | None = None,
                        **kwargs: Any) -> tuple[np.ndarray, list, dict]:
        """Actions for a batch of raw observations: ``(actions, state_outs, extras)`` as in
        RLlib. A recurrent policy reads ``state_batches`` (a list of ``[N, cell_size]`` arrays;
        default: the initial state), ``prev_action_batch`` and ``prev_reward_batch`` (default:
        zeros) and returns the next state in ``state_outs``; other policies return ``[]``.
        Tuple/Dict action spaces get the space's nested structure of batches ``[N, ...]``."""
        explore = self.algo_config.explore if explore is None else explore
        obs = self.preprocess(obs_batch)
        if self._recurrent is None:
            actions, extras = self.act_on(obs, explore)
            if self.spec.composite:
                actions = unflatten_actions(self.spec, actions)
            return actions, [], extras
        n = len(obs)
        state = self._recurrent.initial_state(n) if not state_batches else tuple(
            jnp.asarray(s, jnp.float32).reshape(n, -1) for s in state_batches)
        spec = self.spec
        if spec.composite and prev_action_batch is not None:
            prev_action_batch = flatten_actions(spec, _stack_nested(prev_action_batch))
        prev_action = (np.zeros((n, *spec.action_shape), spec.action_dtype)
                       if prev_action_batch is None else
                       np.asarray(prev_action_batch, spec.action_dtype).reshape(
                           (n, *spec.action_shape)))
        prev_reward = (np.zeros((n,), np.float32) if prev_reward_batch is None else
                       np.asarray(prev_reward_batch, np.float32).reshape(n))
        action, extras, state_out = self.recurrent_act_fn(
            self.acting, obs, state, prev_action, prev_reward, self.next_key(), bool(explore))
        action = np.asarray(action)
        if spec.continuous and self.algo_config.clip_actions:
            action = np.clip(action, np.reshape(spec.action_low, spec.action_shape),
                             np.reshape(spec.action_high, spec.action_shape))
        if spec.composite:
            action = unflatten_actions(spec, action)
        return (action, [np.asarray(s) for s in state_out],
                {k: np.asarray(v) for k, v in extras.items()})

    def compute_single_action(self, obs: Any, state: Any = None, prev_action: Any = None,
                              prev_reward: Any = None, info: Any = None,
                              explore: bool | None = None, **kwargs: Any
                              ) -> tuple[Any, list, dict]:
        """``(action, state_out, extras)`` for one raw observation; a recurrent policy takes
        ``state`` (``get_initial_state()`` or the last ``state_out``: a list of
        ``[cell_size]`` arrays), ``prev_action`` and ``prev_reward``."""
        batched = lambda x: None if x is None else [x]  # noqa: E731
        states = None if not state else [np.asarray(s)[None] for s in state]
        actions, state_out, extras = self.compute_actions(
            [obs], states, batched(prev_action), batched(prev_reward), explore=explore)
        return (index_actions(actions, 0), [s[0] for s in state_out],
                {k: v[0] for k, v in extras.items()})

    def get_initial_state(self) -> list:
        """The recurrent state a new episode starts with: a list of zero ``[cell_size]`` arrays
        (``[h, c]`` for an LSTM, ``[h]`` for a GRU), or ``[]`` for a feed-forward model."""
        if self._recurrent is None:
            return []
        return [np.asarray(s)[0] for s in self._recurrent.initial_state(1)]

    def is_recurrent(self) -> bool:
        """Whether the model carries state between steps (``model.use_lstm``/``use_gru``)."""
        return self._recurrent is not None

    def episode_actor(self) -> Callable:
        """What evaluation loops call as ``act(acting, obs, key, explore)``: ``act_fn`` for a
        feed-forward policy; for a recurrent one a stateful stepper (``RecurrentStepper``)
        that carries each env's state and is told rewards and episode ends with
        ``observe(reward, done)``."""
        return self.act_fn if self._recurrent is None else RecurrentStepper(self)

    # -- model ----------------------------------------------------------------------------------

    @property
    def model(self) -> PolicyModel:
        if self._model is None:
            self._model = PolicyModel(self)
        return self._model

    @property
    def dist_class(self) -> type:
        """The action distribution class (RLlib's): ``policy.dist_class(inputs, policy.model)``
        with ``inputs`` from ``policy.model.from_batch``; actor-critic algorithms only."""
        if self.model.dist_class is None:
            raise ConfigError(f"{self.definition.name}'s policy has no action distribution "
                              "class (it acts on Q-values or a deterministic network); use "
                              "policy.model.q_values(obs) or policy.model.actions(obs)")
        return self.model.dist_class

    def next_key(self) -> jax.Array:
        """A fresh key from this policy's exploration key stream."""
        self._key, key = jax.random.split(self._key)
        return key

    def __repr__(self) -> str:
        return f"Policy({self.definition.name}, obs={self.observation_space}, " \
               f"actions={self.action_space})"


def index_actions(actions: Any, i: int) -> Any:
    """Row ``i`` of a batch of actions: an array's, or every leaf's of a Tuple/Dict action's
    nested batches."""
    if isinstance(actions, tuple):
        return tuple(index_actions(a, i) for a in actions)
    if isinstance(actions, Mapping):
        return {k: index_actions(a, i) for k, a in actions.items()}
    return actions[i]


def _stack_nested(actions: Any) -> Any:
    """A list of nested actions (one per row) as nested batches; nested batches or a flat
    ``[N, D]`` array pass through."""
    if not isinstance(actions, list) or not actions or \
            not isinstance(actions[0], (tuple, Mapping)):
        return np.asarray(actions) if isinstance(actions, list) else actions
    first = actions[0]
    if isinstance(first, tuple):
        return tuple(_stack_nested([a[j] for a in actions]) for j in range(len(first)))
    return {k: _stack_nested([a[k] for a in actions]) for k in first}


class RecurrentStepper:
    """Acts with a recurrent policy on a batch of envs, step after step, carrying each env's
    state, previous action and reward; ``observe(reward, done)`` after each step (a done env's
    lane starts again from the initial state)."""

    def __init__(self, policy: Policy):
        self._policy = policy
        self._state: Any = None

    def _reset(self, n: int) -> None:
        spec = self._policy.spec
        self._state = tuple(np.asarray(s) for s in self._policy.algorithm.recurrent
                            .initial_state(n))
        self._prev_action = np.zeros((n, *spec.action_shape), spec.action_dtype)
        self._prev_reward = np.zeros((n,), np.float32)

    def __call__(self, acting: Any, obs: Any, key: jax.Array, explore: bool) -> tuple:
        if self._state is None or len(self._state[0]) != len(obs):
            self._reset(len(obs))
        action, extras, state = self._policy.recurrent_act_fn(
            acting, obs, self._state, self._prev_action, self._prev_reward, key, bool(explore))
        self._state = tuple(np.asarray(s) for s in state)
        self._prev_action = np.asarray(action).astype(self._prev_action.dtype)
        return action, extras

    def observe(self, reward: Any, done: Any) -> None:
        keep = ~np.asarray(done, bool)
        self._state = tuple(np.where(keep[:, None], s, 0.0).astype(np.float32)
                            for s in self._state)
        self._prev_reward = np.where(keep, np.asarray(reward, np.float32), 0.0).astype(
            np.float32)
        shape = (-1,) + (1,) * (self._prev_action.ndim - 1)
        self._prev_action = np.where(keep.reshape(shape), self._prev_action, 0).astype(
            self._prev_action.dtype)


class PolicyModel:
    """A policy's network as RLlib's model API exposes it, on raw (or preprocessed)
    observations: ``from_batch({"obs": ...}) -> (outputs, state)``, ``value_function()``,
    ``base_model.summary()``, ``variables()``; DQN's ``get_q_value_distributions``,
    ``get_state_value``, ``q_value_head`` and ``state_value_head``. Also explicit helpers:
    ``actions``, ``value_function(obs)``, ``q_values``, ``distribution``, ``logp``."""

    def __init__(self, policy: Policy):
        self._policy = policy
        spec, algo_config = policy.spec, policy.algo_config
        self.kind = policy.definition.model
        self.dist_class = None
        self.network = None
        self._q_function = None
        self._last_values = None
        obs_filter = get_filter(algo_config.observation_filter)
        if self.kind == "actor_q":
            # A policy plus critics (DDPG, TD3, SAC): the record gives the critic's forward.
            q_fn = policy.definition.require("q_function")(algo_config, spec)
            self._q_function = jax.jit(lambda params, fstate, obs, actions: q_fn(
                params, obs_filter.apply(fstate, obs), actions))
            return
        if self.kind == "q":
            self.network = catalog.make_q_network(spec, algo_config.model,
                                                  dueling=algo_config.dueling,
                                                  hiddens=tuple(algo_config.hiddens))
        elif self.kind == "deterministic":
            self.network = catalog.make_deterministic_policy(spec, algo_config.model)
        elif algo_config.model.recurrent:
            self.network = make_recurrent_actor_critic(spec, algo_config.model)
            self.dist_class = dist_class_for(spec, algo_config.model)

            def unroll(params, fstate, obs, state, resets, prev_action, prev_reward):
                dist_params, value, states = self.network.apply(
                    params, obs_filter.apply(fstate, obs), state, resets, prev_action,
                    prev_reward)
                if spec.action_mask is not None:
                    flat_obs = obs.reshape((-1, *obs.shape[2:]))
                    dist_params = catalog.mask_logits(dist_params,
                                                      catalog.action_mask(spec, flat_obs))
                return dist_params, value, states

            self._unroll = jax.jit(unroll)
            initial = policy.algorithm.recurrent.initial_state

            def one_step(params, fstate, obs):  # from the initial state (no memory)
                n = obs.shape[0]
                dist_params, value, _ = unroll(
                    params, fstate, obs[None], initial(n), jnp.zeros((1, n), bool),
                    jnp.zeros((1, n, *spec.action_shape), spec.action_dtype),
                    jnp.zeros((1, n), jnp.float32))
                return dist_params, value

            self._forward = jax.jit(one_step)
            return
        else:
            self.network = catalog.make_actor_critic(spec, algo_config.model)
            self.dist_class = dist_class_for(spec, algo_config.model)

        def forward(params, fstate, obs):
            out = self.network.apply(params, obs_filter.apply(fstate, obs))
            if self.dist_class is not None:
                logits = catalog.mask_logits(out[0], catalog.action_mask(spec, obs)) \
                    if spec.action_mask is not None else out[0]
                return logits, out[1]
            return out

        self._forward = jax.jit(forward)
        if self.kind == "q":
            def torso(params, fstate, obs):
                _, found = self.network.apply(
                    params, obs_filter.apply(fstate, obs), mutable=["intermediates"],
                    capture_intermediates=lambda module, _: module.name == "torso")
                return found["intermediates"]["torso"]["__call__"][0]

            def head(params, features):
                q, found = self._q_head.apply({"params": params["params"]["q_head"]}, features,
                                              mutable=["intermediates"])
                return q, found.get("intermediates", {})

            self._torso = jax.jit(torso)
            self._head = jax.jit(head)

    @property
    def policy(self) -> Policy:
        """The policy this model belongs to."""
        return self._policy

    @property
    def _name(self) -> str:
        return self._policy.definition.name

    def _params_and_filter(self) -> tuple[Any, Any]:
        state = self._policy.learner_state
        source = state if state is not None else self._policy.acting
        return source.params, source.obs_filter

    def _inputs(self, obs_batch: Any) -> np.ndarray:
        """Raw observations, or an array already shaped like the network's input."""
        try:
            return self._policy.preprocess(obs_batch)
        except EnvError:
            spec = self._policy.spec
            if isinstance(obs_batch, (np.ndarray, jax.Array)) and \
                    tuple(np.shape(obs_batch)[1:]) == tuple(spec.obs_shape):
                return np.asarray(obs_batch, spec.obs_dtype)
            raise

    def _run(self, obs_batch: Any) -> Any:
        params, fstate = self._params_and_filter()
        return self._forward(params, fstate, self._inputs(obs_batch))

    def _no(self, what: str) -> ConfigError:
        return ConfigError(f"{self._name}'s policy network has no {what}; use actions()")

    # -- RLlib's model API ----------------------------------------------------------------------

    def from_batch(self, train_batch: Mapping, is_training: bool = False) -> tuple[Any, list]:
        """``(outputs, state_out)`` for ``train_batch["obs"]``: the action distribution's inputs
        (actor-critics: logits ``[N, A]``, or means and log-stds ``[N, 2 * action_dim]``), the
        features the Q head reads (DQN: ``model_out`` ``[N, F]``) or the policy's outputs (ES).
        jrl's models keep no recurrent state, so ``state_out`` is ``[]``. Actor-critics keep
        the values of this pass for ``value_function()``."""
        if not isinstance(train_batch, Mapping) or "obs" not in train_batch:
            raise ConfigError("from_batch takes a dict with an 'obs' batch, e.g. "
                              "{'obs': np.array([[0.1, 0.2, 0.3, 0.4]])}")
        if self.kind == "actor_q":
            raise ConfigError(f"{self._name}'s model is an actor plus critics with no single "
                              "forward pass; use policy.model.actions(obs) and q_values(obs, "
                              "actions)")
        obs = train_batch["obs"]
        if self._policy.is_recurrent():
            return self._recurrent_pass(train_batch, train_batch.get("state_in"),
                                        train_batch.get("seq_lens"))
        if self.kind == "q":
            params, fstate = self._params_and_filter()
            return np.asarray(self._torso(params, fstate, self._inputs(obs))), []
        out = self._run(obs)
        if self.dist_class is None:
            return np.asarray(out), []
        self._last_values = np.asarray(out[1])
        return np.asarray(flat_inputs(self._policy.spec, out[0],
                                      self._policy.algo_config.model)), []

    def __call__(self, input_dict: Mapping, state: Any = None, seq_lens: Any = None
                 ) -> tuple[Any, list]:
        """RLlib's ``model(input_dict, state, seq_lens)``: ``from_batch`` with the recurrent
        ``state`` (a list of ``[B, cell_size]`` arrays) and ``seq_lens`` ``[B]`` of a
        recurrent model."""
        if self._policy.is_recurrent() and (state is not None or seq_lens is not None):
            if not isinstance(input_dict, Mapping) or "obs" not in input_dict:
                raise ConfigError("model(input_dict, state, seq_lens) takes a dict with an "
                                  "'obs' batch")
            return self._recurrent_pass(input_dict, state, seq_lens)
        return self.from_batch(input_dict)

    def _recurrent_pass(self, batch: Mapping, state: Any, seq_lens: Any) -> tuple[Any, list]:
        """A recurrent model over ``batch["obs"]`` ``[B * T, ...]`` (batch-major, ``T =
        max(seq_lens)``; without ``seq_lens`` one step of ``B`` lanes), from ``state`` (default
        the initial state); returns the outputs ``[B * T, ...]`` and the state after each
        lane's last valid step."""
        obs = self._inputs(batch["obs"])
        n = len(obs)
        if seq_lens is None:
            seq_lens = np.ones(n, np.int64)
        seq_lens = np.asarray(seq_lens, np.int64).reshape(-1)
        B = len(seq_lens)
        if B == 0 or n % B:
            raise ConfigError(f"from_batch: {n} observations do not split into {B} sequences "
                              "(seq_lens); pass B * max_seq_len observations, batch-major")
        T = n // B
        if state is None:
            state = [batch[k] for k in sorted(batch) if str(k).startswith("state_in_")] or None
        spec = self._policy.spec
        state = (self._policy.algorithm.recurrent.initial_state(B) if not state else
                 tuple(jnp.asarray(s, jnp.float32).reshape(B, -1) for s in state))
        time_major = lambda x: np.swapaxes(  # noqa: E731
            np.asarray(x).reshape((B, T, *np.shape(x)[1:])), 0, 1)
        prev_action = batch.get("prev_actions")
        prev_action = (np.zeros((n, *spec.action_shape), spec.action_dtype)
                       if prev_action is None else np.asarray(prev_action, spec.action_dtype))
        prev_reward = batch.get("prev_rewards")
        prev_reward = np.zeros(n, np.float32) if prev_reward is None else np.asarray(
            prev_reward, np.float32)
        params, fstate = self._params_and_filter()
        dist_params, value, states = self._unroll(
            params, fstate, time_major(obs), state, np.zeros((T, B), bool),
            time_major(prev_action.reshape((n, *spec.action_shape))),
            time_major(prev_reward.reshape(n)))
        batch_major = lambda x: np.swapaxes(  # noqa: E731
            np.asarray(x).reshape((T, B, *np.shape(x)[1:])), 0, 1).reshape(
            (n, *np.shape(x)[1:]))
        self._last_values = batch_major(value)
        outputs = jax.tree.map(batch_major, dist_params)
        last = np.clip(seq_lens - 1, 0, T - 1)
        state_out = [np.asarray(s)[last, np.arange(B)] for s in states]
        return np.asarray(flat_inputs(spec, outputs, self._policy.algo_config.model)), state_out

    @property
    def base_model(self) -> LayerTable:
        """The whole network: ``base_model.summary()`` prints a Keras-like layer table."""
        if self.network is None:
            raise ConfigError(f"{self._name}'s actor and critics are separate networks; use "
                              "policy.model.summary() for their parameters")
        if self._policy.is_recurrent():
            raise ConfigError("base_model.summary() traces feed-forward models only; use "
                              "policy.model.summary() for a recurrent model's parameters")
        return LayerTable(self, self.network, self._policy.spec.obs_shape,
                          self._policy.spec.obs_dtype, lambda params: params, "model")

    def variables(self, as_dict: bool = False) -> list | dict:
        """The network's arrays: a list, or ``{"path/to/kernel": array}`` with ``as_dict``."""
        return _variables(self._params_and_filter()[0], as_dict)

    def trainable_variables(self, as_dict: bool = False) -> list | dict:
        """Same as ``variables`` (every jrl parameter is trained)."""
        return self.variables(as_dict)

    def _require_q(self, what: str) -> None:
        if self.kind != "q":
            raise ConfigError(f"{self._name}'s model has no {what} (DQN-style Q models do)")

    @property
    def _q_head(self) -> Any:
        return QHead(self._policy.spec.num_actions, self._dueling,
                     tuple(int(h) for h in self._policy.algo_config.hiddens))

    @property
    def _dueling(self) -> bool:
        cfg = self._policy.algo_config
        return cfg.dueling if cfg.model.dueling is None else cfg.model.dueling

    def get_q_value_distributions(self, model_out: Any) -> tuple[np.ndarray, ...]:
        """``(action_scores [N, A], logits [N, A, 1], probs [N, A, 1])`` of ``model_out`` as
        RLlib returns them without distributional atoms: the advantage stream (dueling) or the
        Q-values, then ones."""
        self._require_q("Q-value head")
        q, found = self._head(self._params_and_filter()[0], jnp.asarray(model_out))
        scores = np.asarray(found["advantages"][0] if self._dueling else q)
        ones = np.ones((*scores.shape, 1), np.float32)
        return scores, ones, ones

    def get_state_value(self, model_out: Any) -> np.ndarray:
        """The state-value stream ``[N, 1]`` of a dueling Q model."""
        self._require_q("state-value head")
        if not self._dueling:
            raise ConfigError(f"{self._name} runs without dueling, so its Q model has no "
                              "state-value stream (set dueling: true)")
        _, found = self._head(self._params_and_filter()[0], jnp.asarray(model_out))
        return np.asarray(found["value"][0])[:, None]

    def _head_table(self, prefixes: tuple[str, ...], title: str) -> LayerTable:
        params = self._params_and_filter()[0]
        features = np.shape(self._torso(params, self._params_and_filter()[1], np.zeros(
            (1, *self._policy.spec.obs_shape), self._policy.spec.obs_dtype)))[1:]
        return LayerTable(self, self._q_head, features, "float32",
                          lambda p: {"params": p["params"]["q_head"]}, title, prefixes)

    @property
    def q_value_head(self) -> LayerTable:
        """The Q (advantage) stream on top of ``model_out``; ``.summary()`` prints it."""
        self._require_q("Q-value head")
        return self._head_table(("advantage",) if self._dueling else ("q_",), "q_value_head")

    @property
    def state_value_head(self) -> LayerTable:
        """The state-value stream on top of ``model_out``; ``.summary()`` prints it."""
        self._require_q("state-value head")
        if not self._dueling:
            raise ConfigError(f"{self._name} runs without dueling, so its Q model has no "
                              "state-value head (set dueling: true)")
        return self._head_table(("value",), "state_value_head")

    # -- explicit helpers -----------------------------------------------------------------------

    def actions(self, obs_batch: Any) -> np.ndarray:
        """Greedy actions ``[N, ...]`` for a batch of raw observations."""
        return self._policy.compute_actions(obs_batch, explore=False)[0]

    def _critic(self, obs_batch: Any, actions: Any = None) -> np.ndarray:
        obs_list = list(obs_batch)
        if actions is None and not self._policy.spec.discrete:
            actions = self.actions(obs_list)
        params, fstate = self._params_and_filter()
        return np.asarray(self._q_function(
            params, fstate, self._policy.preprocess(obs_list),
            None if actions is None else jnp.asarray(actions, jnp.float32)))

    def value_function(self, obs_batch: Any = None) -> np.ndarray:
        """Without arguments (RLlib's call): the state values ``[N]`` of the last
        ``from_batch`` pass. With raw observations: state values ``[N]`` (actor-critic
        algorithms), max Q-values (DQN) or the critic's Q-values of the greedy actions (DDPG,
        TD3, SAC)."""
        if self.kind == "deterministic":
            raise self._no("value function")
        if obs_batch is None:
            if self.dist_class is None:
                raise ConfigError(f"{self._name}'s model has no value function of the last "
                                  "forward pass; call value_function(obs) or q_values(obs)")
            if self._last_values is None:
                raise ConfigError("value_function() gives the values of the last forward "
                                  "pass: call policy.model.from_batch({'obs': ...}) first")
            return self._last_values
        if self._q_function is not None:
            q = self._critic(obs_batch)
            if not self._policy.spec.discrete:
                return q
            greedy = self.actions(obs_batch)
            return np.take_along_axis(q, greedy[:, None].astype(np.int64), axis=-1)[:, 0]
        out = self._run(obs_batch)
        if self.dist_class is None:
            return np.asarray(out).max(axis=-1)
        return np.asarray(out[1])

    def q_values(self, obs_batch: Any, actions: Any = None) -> np.ndarray:
        """Q-values ``[N, num_actions]`` (DQN, discrete SAC), or the first critic's ``Q(s, a)``
        ``[N]`` of ``actions`` (default: the greedy ones) for DDPG, TD3 and box-action SAC."""
        if self.kind == "deterministic":
            raise self._no("Q-values")
        if self._q_function is not None:
            return self._critic(obs_batch, actions)
        if self.dist_class is not None:
            raise ConfigError(f"{self._name} has no Q-values; use value_function")
        return np.asarray(self._run(obs_batch))

    def distribution(self, obs_batch: Any):
        """The action distribution for a batch of raw observations (actor-critic algorithms)."""
        if self.dist_class is None:
            raise ConfigError(f"{self._name} has no action distribution")
        dist_params, _ = self._run(obs_batch)
        return catalog.make_distribution(self._policy.spec, dist_params,
                                         self._policy.algo_config.model)

    def logp(self, obs_batch: Any, actions: Any) -> np.ndarray:
        """Log-probabilities ``[N]`` of ``actions`` under the policy."""
        return np.asarray(self.distribution(obs_batch).log_prob(jnp.asarray(actions)))

    def summary(self) -> str:
        """Parameter paths, shapes and the total count."""
        return catalog.param_summary(self._params_and_filter()[0])

    def num_params(self) -> int:
        return catalog.count_params(self._params_and_filter()[0])


class LayerTable:
    """A network (or part of one) whose ``summary()`` prints a Keras-like table of its layers
    with output shapes and parameter counts, and whose ``variables()`` lists its arrays."""

    def __init__(self, model: PolicyModel, module: Any, input_shape: tuple[int, ...],
                 input_dtype: str, select: Callable[[Any], Any], title: str,
                 only: tuple[str, ...] | None = None):
        self._model, self._module, self._select = model, module, select
        self._input = (tuple(input_shape), input_dtype)
        self._title, self._only = title, only

    def _params(self) -> Any:
        return self._select(self._model._params_and_filter()[0])

    def summary(self) -> None:
        """Prints the table (as Keras's ``summary()``); returns nothing."""
        print(catalog.layer_summary(
            self._module, self._params(), *self._input, title=self._title, only=self._only,
            input_name="observations" if self._only is None else "model_out"))

    def variables(self, as_dict: bool = False) -> list | dict:
        found = _variables(self._params(), True)
        if self._only is not None:
            found = {k: v for k, v in found.items()
                     if k.split("/", 1)[-1].startswith(self._only)}
        return found if as_dict else list(found.values())


def _variables(params: Any, as_dict: bool) -> list | dict:
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
    named = {catalog.path_name(path): np.asarray(leaf) for path, leaf in leaves}
    return named if as_dict else list(named.values())


class PolicyMapAccess:
    """RLlib's policy accessors over ``policy_map``, shared by rollout workers and the
    ``Trainer`` (``_POLICY_OWNER`` names the owner in the unknown-policy error)."""

    policy_map: dict[str, Policy]
    _POLICY_OWNER = "this worker"

    def get_policy(self, policy_id: str = DEFAULT_POLICY_ID) -> Policy:
        """The ``Policy`` called ``policy_id`` (RLlib's ``get_policy``)."""
        if policy_id not in self.policy_map:
            raise ConfigError(f"unknown policy_id '{policy_id}' ({self._POLICY_OWNER} has: "
                              f"{', '.join(self.policy_map)})")
        return self.policy_map[policy_id]

    def get_weights(self, policies: list[str] | None = None) -> dict[str, Any]:
        """``{policy_id: weights}`` for ``policies`` (default: all)."""
        return {pid: self.get_policy(pid).get_weights() for pid in policies or self.policy_map}

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        """Sets each named policy's weights."""
        for pid, w in weights.items():
            self.get_policy(pid).set_weights(w)
