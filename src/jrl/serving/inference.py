"""``jrl serve <checkpoint>``: inference only, for a trained policy (protocol v1).

``POST /v1/actions`` ``{"observations": [obs, ...], "explore": false, "extras": false}`` answers
``{"actions": [...]}`` (with ``"extras": true`` also the policy's extras, e.g. ``action_logp``
and ``vf_preds``); ``GET /v1/policy`` describes the policy; ``GET /healthz`` says it is up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import numpy as np

from jrl.serving.http import JsonHttpServer
from jrl.serving.protocol import (
    PREFIX,
    PROTOCOL_VERSION,
    ProtocolError,
    jsonable,
    parse_object,
    space_to_json,
)

MAX_OBSERVATIONS = 4096


class InferenceServer(JsonHttpServer):
    """Serves ``policy.compute_actions`` over HTTP.

    Args:
      policy: a ``jrl.Policy`` (e.g. ``Trainer.from_checkpoint(path).get_policy()``).
      address, port, token, **limits: as ``JsonHttpServer``.
      describe: extra fields for ``GET /v1/policy`` and ``/healthz`` (algo, env, checkpoint).
    """

    def __init__(self, policy: Any, address: str = "127.0.0.1", port: int = 9900,
                 token: str | None = None, describe: dict[str, Any] | None = None,
                 **limits: Any):
        self.policy = policy
        self.describe = dict(describe or {})
        self.trainer: Any = None  # the trainer behind the policy (serve_checkpoint sets it)
        # One thread computes, so the policy's key and jitted calls are never shared.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "jrl-serve-act")
        super().__init__(address, port, token, **limits)

    def add_routes(self, router: Any) -> None:
        router.add_post(f"{PREFIX}/actions", self._actions)
        router.add_get(f"{PREFIX}/policy", self._describe)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "protocol": PROTOCOL_VERSION, **self.describe}

    def shutdown(self) -> None:
        super().shutdown()
        self._executor.shutdown(wait=False)

    async def _describe(self, request: Any) -> Any:
        return self.json_response({
            "protocol": PROTOCOL_VERSION, **self.describe,
            "observation_space": space_to_json(self.policy.observation_space),
            "action_space": space_to_json(self.policy.action_space)})

    async def _actions(self, request: Any) -> Any:
        body = parse_object(await self.read_body(request), ("observations",),
                            ("explore", "extras"))
        observations = body["observations"]
        if not isinstance(observations, list) or not 0 < len(observations) <= MAX_OBSERVATIONS:
            raise ProtocolError(f"observations must be a list of 1 to {MAX_OBSERVATIONS} "
                                "observations")
        explore, extras = body.get("explore", False), body.get("extras", False)
        if not isinstance(explore, bool) or not isinstance(extras, bool):
            raise ProtocolError("explore and extras must be true or false")
        obs = self._preprocess(observations)
        loop = asyncio.get_running_loop()
        actions, out = await asyncio.wait_for(
            loop.run_in_executor(self._executor, self.policy.act_on, obs, explore),
            self.request_timeout)
        answer = {"actions": jsonable(actions)}
        if extras:
            answer.update({k: jsonable(v) for k, v in out.items()})
        return self.json_response(answer)

    def _preprocess(self, observations: list) -> np.ndarray:
        preprocessor = self.policy.preprocessor
        rows = []
        for i, observation in enumerate(observations):
            try:
                row = preprocessor.transform(observation)
            except (ValueError, TypeError, IndexError, OverflowError) as e:
                raise ProtocolError(f"observations[{i}] does not fit the observation space "
                                    f"{self.policy.observation_space}: {e}") from None
            if row.dtype.kind == "f" and not np.all(np.isfinite(row)):
                raise ProtocolError(f"observations[{i}] has NaN or inf entries")
            rows.append(row)
        return np.stack(rows)


def build_policy(algo: str, config: dict[str, Any], observation_space: Any, action_space: Any,
                 seed: int = 0) -> tuple[Any, Any]:
    """``(policy, algorithm)``: the algorithm's jitted ``act`` for these spaces, with no env (the
    config's env, input/output and callbacks are not used); set weights with ``set_acting``."""
    from jrl import registry
    from jrl.rollout.envs import env_spec
    from jrl.rollout.policy import Policy
    from jrl.rollout.preprocessors import action_mask_slice, get_preprocessor

    config = {k: v for k, v in config.items()
              if k not in ("callbacks", "input", "output", "env", "input_evaluation")}
    definition = registry.get_algorithm_def(algo)
    algo_config = registry.parse_config(definition.name, config)
    preprocessor = get_preprocessor(observation_space, algo_config.model)
    spec = env_spec(preprocessor.shape, preprocessor.dtype, action_space,
                    action_mask_slice(preprocessor))
    algorithm = registry.make_algorithm(definition, algo_config, spec)
    policy = Policy(definition, algorithm, algo_config, spec, preprocessor, observation_space,
                    action_space, seed=seed)
    return policy, algorithm


def policy_from_checkpoint(path: str) -> Any | None:
    """The checkpoint's policy rebuilt from the spaces its metadata records (no env is made, so
    a registered or custom env need not be importable here); None for checkpoints without
    spaces (older ones), multi-agent ones, or ones holding more than the learner state."""
    import jax

    from jrl import checkpoint as ckpt
    from jrl.rollout.spaces import space_from_json

    meta = ckpt.load_metadata(path)
    spaces, config = meta.get("spaces"), meta.get("config")
    if not isinstance(spaces, dict) or not isinstance(config, dict) or \
            meta.get("parts", ["algo"]) != ["algo"] or \
            (config.get("multiagent") or {}).get("policies"):
        return None
    policy, algorithm = build_policy(meta["algo"], config,
                                     space_from_json(spaces["observation_space"]),
                                     space_from_json(spaces["action_space"]),
                                     seed=int(config.get("seed") or 0))
    abstract = {"algo": jax.eval_shape(algorithm.init, jax.random.PRNGKey(0))}
    state = ckpt.restore_state(path, abstract)["algo"]
    policy.set_acting(jax.jit(algorithm.policy)(state))
    return policy


def serve_checkpoint(checkpoint: str, host: str = "127.0.0.1", port: int = 9900,
                     token: str | None = None, config: dict | None = None,
                     **limits: Any) -> InferenceServer:
    """An ``InferenceServer`` (not yet serving) for the checkpoint's policy.

    Checkpoints record their observation and action spaces, so the policy is rebuilt without
    making the env (a ``register_env`` creator or a custom gymnasium id of the training script
    need not exist here). Older checkpoints, multi-agent ones and ``config`` overrides go
    through ``Trainer.from_checkpoint``, which makes the env."""
    from jrl import checkpoint as ckpt
    from jrl.serving.http import check_bind
    from jrl.trainer import Trainer

    check_bind(host, token)  # before the (slow) restore
    path = ckpt.resolve_checkpoint(checkpoint)
    policy = None if config else policy_from_checkpoint(path)
    if policy is not None:
        meta = ckpt.load_metadata(path)
        describe = {"algo": meta["algo"], "env": meta.get("env"), "checkpoint": str(checkpoint),
                    "training_iteration": ckpt.read_counters(path, meta)["training_iteration"]}
        return InferenceServer(policy, host, port, token, describe, **limits)
    trainer = Trainer.from_checkpoint(checkpoint, config=config or {}, log_to_disk=False)
    describe = {"algo": trainer.algo_name, "env": trainer.env_id,
                "checkpoint": str(checkpoint), "training_iteration": trainer.iteration}
    server = InferenceServer(trainer.get_policy(), host, port, token, describe, **limits)
    server.trainer = trainer
    return server
