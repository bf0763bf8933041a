"""Recurrent actor-critic: the torso wrapped in an LSTM or GRU cell (RLlib's ``use_lstm``).

``RecurrentActorCritic`` unrolls over time-major sequences ``[L, N, ...]``: torso features (plus,
when asked, the previous action and reward) feed the cell, whose output feeds the policy and value
heads. A ``resets`` flag ``[L, N]`` zeroes the state before a step that starts a new episode, so
one unroll can cross episode boundaries exactly as if each episode had its own sequence.

The recurrent state is a tuple of ``[N, cell_size]`` arrays in RLlib's order: ``(h, c)`` for an
LSTM, ``(h,)`` for a GRU.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jrl.config import ModelConfig
from jrl.errors import ConfigError
from jrl.networks.custom import actor_critic_outputs
from jrl.networks.heads import PolicyHead, ValueHead
from jrl.networks.torsos import make_torso
from jrl.types import EnvSpec

RecurrentState = tuple[jax.Array, ...]


def num_state_arrays(model: ModelConfig) -> int:
    """How many arrays the state holds: 2 for an LSTM (h, c), 1 for a GRU (h)."""
    return 2 if model.use_lstm else 1


def initial_state(model: ModelConfig, batch_size: int) -> RecurrentState:
    """The zero state of ``batch_size`` lanes: a tuple of float32 ``[batch_size, cell_size]``."""
    zeros = jnp.zeros((batch_size, int(model.lstm_cell_size)), jnp.float32)
    return tuple(zeros for _ in range(num_state_arrays(model)))


def prev_action_features(spec: EnvSpec, prev_action: jax.Array) -> jax.Array:
    """Previous actions ``[..., *action_shape]`` as float features ``[..., D]``: one-hot for
    discrete and multi-discrete actions, the values themselves otherwise."""
    if spec.discrete:
        return jax.nn.one_hot(prev_action, spec.num_actions, dtype=jnp.float32)
    if spec.action_kind == "multi_discrete":
        return jnp.concatenate([jax.nn.one_hot(prev_action[..., i], n, dtype=jnp.float32)
                                for i, n in enumerate(spec.action_nvec)], axis=-1)
    lead = prev_action.shape[: prev_action.ndim - len(spec.action_shape)]
    return jnp.reshape(prev_action, (*lead, -1)).astype(jnp.float32)


class _ResetCell(nn.Module):
    """One step of the cell, after zeroing the state of lanes that start an episode."""

    use_lstm: bool
    size: int

    @nn.compact
    def __call__(self, state: RecurrentState, inputs: tuple[jax.Array, jax.Array]):
        x, reset = inputs
        state = tuple(jnp.where(reset[:, None], 0.0, s) for s in state)
        if self.use_lstm:
            h, c = state
            (c, h), y = nn.OptimizedLSTMCell(self.size, name="lstm")((c, h), x)
            state = (h, c)
        else:
            h, y = nn.GRUCell(self.size, name="gru")(state[0], x)
            state = (h,)
        return state, (y, state)


_ScanCell = nn.scan(_ResetCell, variable_broadcast="params", split_rngs={"params": False},
                    in_axes=0, out_axes=0)


class RecurrentActorCritic(nn.Module):
    """Torso -> LSTM/GRU -> policy and value heads, over time-major sequences.

    With ``model.vf_share_layers`` the value head reads the cell's output, as RLlib's LSTM
    wrapper does; otherwise (the default, as for feed-forward models) the value function has its
    own torso and also reads the cell's output, without sending gradients into the cell.

    Attributes:
      spec: the environment spec.
      model: the network architecture (``use_lstm``/``use_gru``, ``lstm_cell_size``,
        ``lstm_use_prev_action``/``lstm_use_prev_reward``).
    """

    spec: EnvSpec
    model: ModelConfig = ModelConfig(use_lstm=True)

    @nn.compact
    def __call__(self, obs: jax.Array, state: RecurrentState, resets: jax.Array,
                 prev_action: jax.Array, prev_reward: jax.Array) -> tuple[Any, jax.Array, Any]:
        """``obs`` ``[L, N, ...]``, ``state`` (each ``[N, H]``), ``resets`` ``[L, N]``,
        ``prev_action`` ``[L, N, ...]``, ``prev_reward`` ``[L, N]`` -> ``(dist_params [L * N,
        ...], value [L * N], states)``; ``states`` holds the state after each step, each
        ``[L, N, H]`` (time-major, flattened row ``l * N + n``)."""
        L, N = obs.shape[:2]
        features = make_torso(self.spec, self.model, name="torso")(
            obs.reshape((L * N, *obs.shape[2:])))
        features = features.reshape((L, N, -1))
        parts = [features]
        if self.model.use_prev_action:
            parts.append(prev_action_features(self.spec, prev_action))
        if self.model.use_prev_reward:
            parts.append(prev_reward[..., None].astype(jnp.float32))
        x = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else features
        _, (y, states) = _ScanCell(bool(self.model.use_lstm), int(self.model.lstm_cell_size),
                                   name="rnn")(tuple(state), (x, resets))
        y = y.reshape((L * N, -1))
        num_outputs = (actor_critic_outputs(self.spec, self.model)
                       if self.model.custom_action_dist else None)
        dist_params = PolicyHead(self.spec, self.model.free_log_std, num_outputs,
                                 name="policy_head")(y)
        if self.model.vf_share_layers:
            value_features = y
        else:
            # The value function has its own torso and reads the cell's output without training
            # it: the value loss, much larger than the policy's, would otherwise drown the
            # policy's gradient in the shared cell (the feed-forward default keeps the two
            # networks apart for the same reason).
            own = make_torso(self.spec, self.model, name="value_torso")(
                obs.reshape((L * N, *obs.shape[2:])))
            value_features = jnp.concatenate([own, jax.lax.stop_gradient(y)], axis=-1)
        value = ValueHead(name="value_head")(value_features)
        return dist_params, value, states


def make_recurrent_actor_critic(spec: EnvSpec, model: ModelConfig) -> RecurrentActorCritic:
    """The recurrent actor-critic for ``spec`` (``model.use_lstm`` or ``model.use_gru``)."""
    if model.custom_model:
        raise ConfigError(f"model.use_lstm/use_gru wrap the built-in torso; a custom model "
                          f"('{model.custom_model}') cannot be wrapped yet: drop one of them")
    return RecurrentActorCritic(spec=spec, model=model)
