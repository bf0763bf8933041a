"""JAX-native environments: a small protocol, the gymnax, MinAtar and brax adapters, and the
registry of users' own JAX envs (``register_jax_env(name, factory)`` or ``env="module:factory"``).

A JAX env is pure: ``reset(key) -> (obs, state)`` and
``step(key, state, action) -> JaxStep``, both jittable and vmappable, with auto-reset: when an
episode ends, ``obs`` is the first observation of the next episode and ``final_obs`` the true
last one. ``terminated`` and ``truncated`` stay apart (a time limit is a truncation).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jrl.errors import ConfigError, EnvError
from jrl.types import EnvSpec

GYMNAX_PREFIX = "gymnax:"


class JaxStep(NamedTuple):
    """One step of a JAX env (per env; ``vmap`` adds the batch axis)."""

    obs: jax.Array
    state: Any
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array


class JaxEnv(Protocol):
    """What the fully-jitted loop needs from an environment.

    Attributes:
      spec: the learner's ``EnvSpec`` (observation shape, action space).
    """

    spec: EnvSpec

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]: ...

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> JaxStep: ...


class GymnaxEnv:
    """A gymnax environment (``gymnax.make(env_id)``) behind the ``JaxEnv`` protocol."""

    def __init__(self, env_id: str, **make_kwargs: Any):
        try:
            import gymnax
        except ImportError:
            raise EnvError("gymnax envs need gymnax: pip install gymnax six") from None
        if env_id not in gymnax.registered_envs:
            import difflib

            near = difflib.get_close_matches(env_id, gymnax.registered_envs, n=1)
            hint = f"; did you mean '{GYMNAX_PREFIX}{near[0]}'?" if near else ""
            raise EnvError(f"unknown gymnax env '{env_id}'{hint}")
        self.env_id = env_id
        self.env, self.params = gymnax.make(env_id, **make_kwargs)
        obs_space = self.env.observation_space(self.params)
        action_space = self.env.action_space(self.params)
        from gymnax.environments.environment import Environment

        # gymnax truncates at params.max_steps_in_episode unless an env overrides is_truncated.
        limit = getattr(self.params, "max_steps_in_episode", None)
        if type(self.env).is_truncated is not Environment.is_truncated or limit is None:
            limit = None
        else:
            limit = int(limit)
        if hasattr(action_space, "n"):
            self.spec = EnvSpec(obs_shape=tuple(obs_space.shape), action_kind="discrete",
                                num_actions=int(action_space.n), max_episode_steps=limit)
        elif not hasattr(action_space, "low"):
            raise EnvError(f"the jitted path takes Discrete or Box action spaces, got a "
                           f"{type(action_space).__name__} one; use a gymnasium env")
        else:
            low, high = jnp.broadcast_to(action_space.low, action_space.shape), \
                jnp.broadcast_to(action_space.high, action_space.shape)
            self.spec = EnvSpec(obs_shape=tuple(obs_space.shape), action_kind="continuous",
                                action_shape=tuple(action_space.shape),
                                action_low=tuple(float(x) for x in low.ravel()),
                                action_high=tuple(float(x) for x in high.ravel()),
                                max_episode_steps=limit)

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]:
        obs, state = self.env.reset(key, self.params)
        return obs.astype(jnp.float32), state

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> JaxStep:
        if not self.spec.discrete:
            action = jnp.clip(action, jnp.asarray(self.spec.action_low).reshape(
                self.spec.action_shape), jnp.asarray(self.spec.action_high).reshape(
                self.spec.action_shape))
        obs, state, reward, terminated, truncated, info = self.env.step(
            key, state, action, self.params)
        truncated = jnp.asarray(truncated, bool)
        # gymnax counts the time limit as terminal too; only a real terminal state stops
        # bootstrapping.
        terminated = jnp.logical_and(jnp.asarray(terminated, bool), ~truncated)
        return JaxStep(obs.astype(jnp.float32), state, jnp.asarray(reward, jnp.float32),
                       terminated, truncated, info["final_observation"].astype(jnp.float32))


class JaxMultiAgentEnv(Protocol):
    """A JAX multi-agent env: ``num_agents`` agents with the same spaces, stacked on a leading
    axis (what the fully-jitted loop trains ``multiagent.policies`` on).

    ``reset(key) -> (obs [A, ...], state)``; ``step(key, state, actions [A, ...]) -> JaxStep``
    with ``reward``, ``terminated`` and ``truncated`` of shape ``[A]`` and ``obs``/``final_obs``
    of shape ``[A, ...]``. Episodes are shared: when any agent is done the episode ends for all
    (agents that were not terminated are marked truncated, so they bootstrap) and the env
    auto-resets every agent.

    Attributes:
      num_agents: ``A``; agent ``i`` is called ``agent_<i>`` (its id for ``policy_mapping_fn``
        is the index ``i``).
      spec: one agent's ``EnvSpec``.
    """

    num_agents: int
    spec: EnvSpec

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]: ...

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> JaxStep: ...


class StackedJaxEnv:
    """``num_agents`` independent copies of one ``JaxEnv`` as a ``JaxMultiAgentEnv`` (e.g. two
    gymnax CartPoles, ``jax_ma:CartPole-v1x2``); the episode ends when any copy's does."""

    def __init__(self, env: JaxEnv, num_agents: int):
        if int(num_agents) < 1:
            raise EnvError(f"a stacked JAX env needs at least one agent, got {num_agents}")
        self.env = env
        self.num_agents = int(num_agents)
        self.spec = env.spec

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]:
        return jax.vmap(self.env.reset)(jax.random.split(key, self.num_agents))

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> JaxStep:
        step_key, reset_key = jax.random.split(key)
        step = jax.vmap(self.env.step)(jax.random.split(step_key, self.num_agents), state,
                                       action)
        done = step.terminated | step.truncated
        ended = jnp.any(done)
        fresh_obs, fresh_state = self.reset(reset_key)

        def pick(fresh, stepped):
            return jnp.where(ended, fresh, stepped)

        mask = done.reshape(done.shape + (1,) * (step.obs.ndim - 1))
        final_obs = jnp.where(mask, step.final_obs, step.obs)
        return JaxStep(pick(fresh_obs, step.obs), jax.tree.map(pick, fresh_state, step.state),
                       step.reward, step.terminated, step.truncated | (ended & ~step.terminated),
                       final_obs)


def is_multi_agent_jax_env(env: Any) -> bool:
    """Whether ``env`` is a ``JaxMultiAgentEnv`` (it declares ``num_agents``)."""
    return isinstance(getattr(env, "num_agents", None), int)


JAX_MA_PREFIX = "jax_ma:"
_STACKED_ID = re.compile(r"^(?P<env>.+)x(?P<n>[0-9]+)$")


def make_stacked_jax_env(env_id: str, env_config: dict | None = None) -> StackedJaxEnv:
    """``<gymnax id>x<N>`` (``CartPole-v1x2``): ``N`` copies of the gymnax env as agents."""
    match = _STACKED_ID.match(env_id)
    if match is None:
        raise EnvError(f"'{JAX_MA_PREFIX}{env_id}' must be '{JAX_MA_PREFIX}<gymnax id>x<agents>', "
                       f"e.g. '{JAX_MA_PREFIX}CartPole-v1x2'")
    return StackedJaxEnv(GymnaxEnv(match["env"], **dict(env_config or {})), int(match["n"]))


MINATAR_PREFIX = "minatar:"
_JAX_ENVS: dict[str, Callable[..., Any]] = {}
_FACTORY_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def register_jax_env(name: str, factory: Callable[..., Any]) -> None:
    """Registers ``factory(env_config) -> JaxEnv`` (or ``factory()``) under ``name``, so
    ``Trainer(env=name)`` and ``jrl train --env name`` train on it in the fully-jitted loop."""
    if not isinstance(name, str) or not name:
        raise EnvError(f"JAX env name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise EnvError(f"JAX env factory for '{name}' must be callable, got "
                       f"{type(factory).__name__}")
    _JAX_ENVS[name] = factory


def registered_jax_envs() -> list[str]:
    return sorted(_JAX_ENVS)


def _is_factory_path(env_id: str) -> bool:
    """``module:factory`` (a gymnasium ``module:Env-v0`` id has a version, not a name; a name
    given to ``jrl.register_env`` stays a gymnasium env)."""
    from jrl.rollout.envs import registered_creator

    if not (_FACTORY_PATH.match(env_id) and registered_creator(env_id) is None
            and not env_id.startswith((GYMNAX_PREFIX, MINATAR_PREFIX, JAX_MA_PREFIX,
                                       BRAX_PREFIX, "pettingzoo:"))):
        return False
    return not _names_gymnasium_or_multi_agent_class(env_id)


def _names_gymnasium_or_multi_agent_class(env_id: str) -> bool:
    """Whether the ``module:attr`` path names a ``gymnasium.Env`` or ``jrl.MultiAgentEnv``
    class (built by the worker path, not the jitted loop)."""
    import gymnasium as gym

    from jrl.config import resolve_import
    from jrl.rollout.multi_agent_env import MultiAgentEnv

    try:
        target = resolve_import(env_id, "env")
    except ConfigError:
        return False  # the JAX path reports the import error
    return isinstance(target, type) and issubclass(target, (gym.Env, MultiAgentEnv))


def is_jax_env_id(env_id: str | None) -> bool:
    """Whether ``env_id`` trains in the fully-jitted loop: ``gymnax:<id>``, ``minatar:<game>``,
    ``brax:<name>``, a name given to ``register_jax_env``, or a ``module:factory`` path."""
    if not env_id:
        return False
    return env_id.startswith((GYMNAX_PREFIX, MINATAR_PREFIX, JAX_MA_PREFIX, BRAX_PREFIX)) or \
        env_id in _JAX_ENVS or _is_factory_path(env_id)


def _call_factory(factory: Callable[..., Any], env_config: dict | None, what: str) -> Any:
    try:
        takes_config = bool(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # builtins and C callables: assume the RLlib shape
        takes_config = True
    try:
        return factory(dict(env_config or {})) if takes_config else factory()
    except EnvError:
        raise
    except Exception as e:  # the user's factory failed: say which env and why
        raise EnvError(f"JAX env factory {what} failed: {type(e).__name__}: {e}") from e


def check_jax_env(env: Any, what: str) -> JaxEnv:
    """``env`` if it has what the jitted loop calls (``spec``, ``reset``, ``step``); an env
    of brax's shape (see ``is_brax_like``) is adapted with ``BraxEnv``."""
    if is_brax_like(env):
        return BraxEnv(env, name=what)
    missing = [name for name in ("spec", "reset", "step") if not hasattr(env, name)]
    if missing:
        hint = (" (a gymnasium env: register it with jrl.register_env instead)"
                if hasattr(env, "observation_space") else "")
        raise EnvError(f"{what} returned a {type(env).__name__} without "
                       f"{', '.join(missing)}: it must implement jrl.rollout.jax_envs.JaxEnv"
                       f"{hint}")
    if not isinstance(env.spec, EnvSpec):
        raise EnvError(f"{what}: JaxEnv.spec must be a jrl.types.EnvSpec, got "
                       f"{type(env.spec).__name__}")
    return env


def resolve_jax_env(env_id: str, env_config: dict | None,
                    multiagent_policies: bool) -> tuple[bool, JaxEnv | None]:
    """``(multi_agent, env)`` for a JAX env id: whether it trains on the multi-agent jitted
    backend, and the env when telling needed building it (the backend then takes that env
    instead of building it again).

    gymnax, MinAtar and brax ids are single-agent and ``jax_ma:`` ids multi-agent without
    building anything; a user's own env (``register_jax_env`` or ``module:factory``) is built
    to look for ``num_agents``. A ``multiagent.policies`` config makes any JAX env multi-agent.
    """
    if multiagent_policies or env_id.startswith(JAX_MA_PREFIX):
        return True, None
    if env_id.startswith((GYMNAX_PREFIX, MINATAR_PREFIX, BRAX_PREFIX)):
        return False, None
    env = make_jax_env(env_id, env_config)
    return is_multi_agent_jax_env(env), env


def make_jax_env(env_id: str, env_config: dict | None = None) -> JaxEnv:
    """The ``JaxEnv`` an id names (see ``is_jax_env_id``)."""
    if env_id in _JAX_ENVS:
        return check_jax_env(_call_factory(_JAX_ENVS[env_id], env_config, f"'{env_id}'"),
                             f"JAX env factory '{env_id}'")
    if env_id.startswith(GYMNAX_PREFIX):
        return GymnaxEnv(env_id[len(GYMNAX_PREFIX):], **dict(env_config or {}))
    if env_id.startswith(JAX_MA_PREFIX):
        return make_stacked_jax_env(env_id[len(JAX_MA_PREFIX):], env_config)
    if env_id.startswith(MINATAR_PREFIX):
        return make_minatar(env_id[len(MINATAR_PREFIX):], env_config)
    if env_id.startswith(BRAX_PREFIX):
        return make_brax(env_id[len(BRAX_PREFIX):], env_config)
    if _is_factory_path(env_id):
        from jrl.config import resolve_import

        try:
            factory = resolve_import(env_id, "JAX env factory")
        except ConfigError as e:
            raise EnvError(str(e)) from None
        if not callable(factory):
            raise EnvError(f"'{env_id}' is a {type(factory).__name__}, not a JaxEnv factory")
        return check_jax_env(_call_factory(factory, env_config, f"'{env_id}'"),
                             f"JAX env factory '{env_id}'")
    raise EnvError(f"'{env_id}' is not a JAX env id (use '{GYMNAX_PREFIX}CartPole-v1', "
                   f"'{MINATAR_PREFIX}Breakout', '{BRAX_PREFIX}inverted_pendulum', a name given "
                   "to jrl.register_jax_env, or 'module:factory')")


MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")


def make_minatar(game: str, env_config: dict | None = None) -> GymnaxEnv:
    """MinAtar (Young & Tian, 2019) ``game`` through gymnax: ``(10, 10, channels)`` float
    observations of 0/1, the game's minimal action set; an episode is cut (truncated, not
    terminated) after ``max_steps_in_episode`` steps (gymnax's default, 1000 for Breakout)."""
    if game not in MINATAR_GAMES:
        import difflib

        near = difflib.get_close_matches(game, MINATAR_GAMES, n=1)
        hint = f"; did you mean '{MINATAR_PREFIX}{near[0]}'?" if near else ""
        raise EnvError(f"unknown MinAtar game '{game}'{hint} (games: {', '.join(MINATAR_GAMES)})")
    return GymnaxEnv(f"{game}-MinAtar", **dict(env_config or {}))


BRAX_PREFIX = "brax:"


class BraxState(NamedTuple):
    """What ``BraxEnv`` carries per env: brax's ``State`` and the agent steps of the episode."""

    env_state: Any
    t: jax.Array


def is_brax_like(env: Any) -> bool:
    """Whether ``env`` has brax's ``Env`` shape: ``reset(rng) -> State``,
    ``step(state, action) -> State`` and ``action_size``, and no ``JaxEnv.spec``."""
    return (not hasattr(env, "spec") and callable(getattr(env, "reset", None))
            and callable(getattr(env, "step", None)) and hasattr(env, "action_size"))


class BraxEnv:
    """A brax ``Env`` (``brax.envs.get_environment(name)``, or any object of the same shape:
    ``reset(rng) -> State``, ``step(state, action) -> State`` with ``State.obs``,
    ``State.reward``, ``State.done`` and optionally ``State.info["truncation"]``, plus
    ``action_size``) behind the ``JaxEnv`` protocol.

    Actions are a ``Box(-1, 1, (action_size,))`` (brax's convention; they are clipped there).
    The adapter counts steps and cuts an episode after ``episode_length`` of them (brax's
    ``EpisodeWrapper`` default, 1000): that cut, and ``done`` with ``info["truncation"]`` set
    by the env itself, are truncations; any other ``done`` is a termination. Auto-reset draws
    a fresh initial state from ``reset`` for every episode.
    """

    def __init__(self, env: Any, episode_length: int | None = 1000, name: str | None = None):
        what = name or type(env).__name__
        try:
            action_size = int(env.action_size)
        except (AttributeError, TypeError, ValueError):
            raise EnvError(f"brax env {what}: action_size must be an int") from None
        if episode_length is not None and int(episode_length) < 1:
            raise EnvError(f"brax env {what}: episode_length must be >= 1 or None, got "
                           f"{episode_length}")
        self.env = env
        self.episode_length = None if episode_length is None else int(episode_length)
        try:
            first = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
        except Exception as e:
            raise EnvError(f"brax env {what}: reset(rng) failed: {type(e).__name__}: {e}") \
                from e
        for name_ in ("obs", "reward", "done"):
            if not hasattr(first, name_):
                raise EnvError(f"brax env {what}: reset(rng) must return a State with obs, "
                               f"reward and done (missing {name_})")
        if not hasattr(first.obs, "shape"):
            raise EnvError(f"brax env {what}: only array observations are supported, got "
                           f"{type(first.obs).__name__} (use the env's array observation)")
        info = getattr(first, "info", None) or {}
        self._env_truncates = "truncation" in info
        self.spec = EnvSpec(obs_shape=tuple(first.obs.shape), action_kind="continuous",
                            action_shape=(action_size,), action_low=(-1.0,) * action_size,
                            action_high=(1.0,) * action_size,
                            max_episode_steps=None if self._env_truncates
                            else self.episode_length)

    def reset(self, key: jax.Array) -> tuple[jax.Array, BraxState]:
        state = self.env.reset(key)
        return state.obs.astype(jnp.float32), BraxState(state, jnp.int32(0))

    def step(self, key: jax.Array, state: BraxState, action: jax.Array) -> JaxStep:
        action = jnp.clip(action.astype(jnp.float32), -1.0, 1.0)
        env_state = self.env.step(state.env_state, action)
        t = state.t + 1
        done = jnp.asarray(env_state.done) > 0
        info = getattr(env_state, "info", None) or {}
        cut = jnp.asarray(info["truncation"]) > 0 if "truncation" in info else jnp.bool_(False)
        terminated = done & ~cut
        truncated = done & cut
        if self.episode_length is not None:
            truncated = truncated | ((t >= self.episode_length) & ~terminated)
        final_obs = env_state.obs.astype(jnp.float32)
        ended = terminated | truncated
        fresh_obs, fresh = self.reset(key)
        next_state = jax.tree.map(lambda a, b: jnp.where(ended, a, b), fresh,
                                  BraxState(env_state, t))
        return JaxStep(jnp.where(ended, fresh_obs, final_obs), next_state,
                       jnp.asarray(env_state.reward, jnp.float32), terminated, truncated,
                       final_obs)


def _parse_query(env_id: str) -> tuple[str, dict]:
    """``name?key=value&...`` -> ``(name, {key: value})``; values are Python literals when they
    parse as one (``episode_length=500``), else strings (``backend=generalized``)."""
    import ast

    name, _, query = env_id.partition("?")
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise EnvError(f"'{env_id}': options after '?' must be key=value pairs joined "
                           "by '&'")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return name, options


def make_brax(env_id: str, env_config: dict | None = None) -> BraxEnv:
    """``brax:<name>[?backend=...&episode_length=...]``: ``brax.envs.get_environment(name,
    **options)`` as a ``BraxEnv``. ``env_config`` (RLlib's) adds to and overrides the options
    in the id; ``episode_length`` (default 1000) is the adapter's, the rest (``backend``:
    ``generalized``, ``positional``, ``spring`` or ``mjx``, and the env's own keyword
    arguments) go to brax."""
    name, options = _parse_query(env_id)
    options.update(dict(env_config or {}))
    episode_length = options.pop("episode_length", 1000)
    try:
        from brax import envs as brax_envs
    except ImportError:
        raise EnvError("brax envs need brax: pip install 'jrl[brax]'") from None
    known = sorted(getattr(brax_envs, "_envs", {}))
    if known and name not in known:
        import difflib

        near = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{BRAX_PREFIX}{near[0]}'?" if near else ""
        raise EnvError(f"unknown brax env '{name}'{hint} (envs: {', '.join(known)})")
    try:
        env = brax_envs.get_environment(name, **options)
    except (TypeError, ValueError, KeyError) as e:
        raise EnvError(f"brax env '{name}' with {options}: {type(e).__name__}: {e}") from None
    return BraxEnv(env, episode_length=episode_length, name=f"'{BRAX_PREFIX}{name}'")
