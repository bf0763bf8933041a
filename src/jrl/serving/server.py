"""``PolicyServer``: an ``ExternalEnv``'s episode API over HTTP (protocol v1, see README).

Each POST mirrors one ``ExternalEnv`` method; ``get_action`` queues its observation, and once
the event loop has read the round of requests that came together it answers every client's
pending observation in one jitted ``act`` call, on the loop itself. A request may carry a
``request_id``: a repeated id (a client retrying after a lost answer) gets the first answer
again and changes nothing, so a retry never logs a step twice.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import jax

from jrl.config import jsonable as config_jsonable
from jrl.errors import ConfigError
from jrl.rollout.external_env import ExternalEnv, ExternalEnvClosed
from jrl.serving.http import JsonHttpServer
from jrl.serving.protocol import (
    PREFIX,
    PROTOCOL_VERSION,
    ProtocolError,
    check_fields,
    encode_array,
    jsonable,
    loads,
    space_to_json,
)

_COMMANDS = {
    "start_episode": ((), ("episode_id", "training_enabled")),
    "get_action": (("episode_id", "observation"), ()),
    "log_action": (("episode_id", "observation", "action"), ("action_logp",)),
    "log_returns": (("episode_id", "reward"), ("info",)),
    "end_episode": (("episode_id", "observation"), ("truncated",)),
}
_MAX_BATCH_COMMANDS = 10_000
_REMEMBERED_REQUESTS = 4096


class PolicyServer(JsonHttpServer):
    """Serves ``external_env``'s episodes to ``PolicyClient``s (RLlib's ``PolicyServer``).

    Call it from ``ExternalEnv.run()``: ``PolicyServer(self, "127.0.0.1", 9900).serve_forever()``.
    It stops when the env's trainer stops.

    Args:
      external_env: the env whose ``start_episode``/``get_action``/... the clients call.
      address: interface to bind; anything but loopback needs ``token``.
      port: TCP port (0: a free one, see ``.port``).
      token: shared secret clients send as ``Authorization: Bearer <token>``.
      episode_timeout_s: episodes with no call for this many seconds are ended (clients that
        went away; see ``ExternalEnv.end_idle_episodes``); later calls for them get 404.
        None: episodes never time out.
      **limits: ``max_body_bytes`` (4 MiB), ``request_timeout`` (30 s), ``max_inflight`` (256).
    """

    def __init__(self, external_env: ExternalEnv, address: str = "127.0.0.1", port: int = 9900,
                 token: str | None = None, episode_timeout_s: float | None = None,
                 **limits: Any):
        if not isinstance(external_env, ExternalEnv):
            raise ProtocolError(f"PolicyServer needs an ExternalEnv, got "
                                f"{type(external_env).__name__}")
        if episode_timeout_s is not None and not (
                isinstance(episode_timeout_s, (int, float)) and episode_timeout_s > 0):
            raise ConfigError(f"episode_timeout_s must be a positive number of seconds or None, "
                              f"got {episode_timeout_s!r}")
        self.episode_timeout_s = episode_timeout_s
        self.external_env = external_env
        self._recent: collections.OrderedDict[str, asyncio.Future] = collections.OrderedDict()
        self._answer_scheduled = False
        super().__init__(address, port, token, **limits)
        external_env.add_close_callback(self.shutdown)
        if episode_timeout_s is not None:
            self._loop.call_soon(self._end_idle_episodes)

    def add_routes(self, router: Any) -> None:
        for name in _COMMANDS:
            router.add_post(f"{PREFIX}/{name}", self._command_handler(name))
        router.add_post(f"{PREFIX}/batch", self._batch)
        router.add_get(f"{PREFIX}/policy", self._policy)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "protocol": PROTOCOL_VERSION}

    # -- commands -------------------------------------------------------------------------------

    def _command_handler(self, name: str):
        async def handle(request: Any) -> Any:
            body = loads(await self.read_body(request))
            if isinstance(body, dict):
                request_id = body.pop("request_id", None)
            else:
                request_id = None
            result = await self._once(request_id, lambda: self._run(name, body))
            return self.json_response(result)

        return handle

    async def _once(self, request_id: Any, run: Any) -> Any:
        """Runs ``run()`` once per ``request_id`` (None: always). A repeated id (a retry after a
        lost answer or a timeout) waits for the same run and gets its answer; the run goes on
        when a request times out, so a retry never applies anything twice."""
        if request_id is not None and (not isinstance(request_id, str)
                                       or not 0 < len(request_id) <= 128):
            raise ProtocolError("request_id must be a string of 1 to 128 characters")
        task = self._recent.get(request_id) if request_id is not None else None
        if task is None:
            task = asyncio.ensure_future(run())
            task.add_done_callback(_retrieve)
            if request_id is not None:
                self._recent[request_id] = task
                while len(self._recent) > _REMEMBERED_REQUESTS:
                    self._recent.popitem(last=False)
        if not task.done():  # (asyncio.wait never cancels the run: a retry can still get it)
            await asyncio.wait((task,), timeout=self.request_timeout)
            if not task.done():
                raise TimeoutError
        return task.result()

    async def _run(self, name: str, body: Any) -> dict[str, Any]:
        required, optional = _COMMANDS[name]
        args = check_fields(body, required, optional)
        env = self.external_env
        if name == "get_action":
            future = env.get_action_async(_episode_id(args), args["observation"], inline=True)
            self._answer_soon()
            return {"action": jsonable(await asyncio.wrap_future(future))}
        if name == "start_episode":
            enabled = args.get("training_enabled", True)
            if not isinstance(enabled, bool):
                raise ProtocolError("training_enabled must be true or false")
            episode_id = args.get("episode_id")
            return {"episode_id": env.start_episode(
                None if episode_id is None else _episode_id(args), enabled)}
        if name == "log_action":
            logp = args.get("action_logp")
            if logp is not None and (isinstance(logp, bool) or not isinstance(logp, (int, float))):
                raise ProtocolError("action_logp must be a number")
            env.log_action(_episode_id(args), args["observation"], args["action"], logp)
        elif name == "log_returns":
            reward = args["reward"]
            if isinstance(reward, bool) or not isinstance(reward, (int, float)):
                raise ProtocolError(f"reward must be a number, got {type(reward).__name__}")
            env.log_returns(_episode_id(args), reward, args.get("info"))
        elif name == "end_episode":
            truncated = args.get("truncated", False)
            if not isinstance(truncated, bool):
                raise ProtocolError("truncated must be true or false")
            env.end_episode(_episode_id(args), args["observation"], truncated)
        return {}

    def _end_idle_episodes(self) -> None:
        """Ends idle episodes, then runs again in a quarter of the timeout (at most 5 s)."""
        try:
            self.external_env.end_idle_episodes(self.episode_timeout_s)
        finally:
            if not self._stopped:
                self._loop.call_later(min(self.episode_timeout_s / 4, 5.0),
                                      self._end_idle_episodes)

    def _answer_soon(self) -> None:
        """Answers the queued observations on this loop once the requests that arrived with
        this one were read: one batched ``act`` per round, no thread hand-over."""
        if not self._answer_scheduled:
            self._answer_scheduled = True
            asyncio.get_running_loop().call_soon(self._answer_now)

    def _answer_now(self) -> None:
        self._answer_scheduled = False
        try:
            self.external_env.runner.answer_pending()
        except ExternalEnvClosed:  # the futures fail on their own
            pass

    async def _batch(self, request: Any) -> Any:
        """``{"commands": [{"command": "log_action", ...}, ...]}``, applied in order; an error
        names the ``index`` of the command that failed (the ones before it were applied)."""
        body = check_fields(loads(await self.read_body(request)), ("commands",), ("request_id",))
        commands = body["commands"]
        if not isinstance(commands, list) or len(commands) > _MAX_BATCH_COMMANDS:
            raise ProtocolError(f"commands must be a list of at most {_MAX_BATCH_COMMANDS}")

        async def run() -> dict[str, Any]:
            results = []
            for index, command in enumerate(commands):
                try:
                    if not isinstance(command, dict) or command.get("command") not in _COMMANDS:
                        raise ProtocolError("each command needs \"command\": one of "
                                            + ", ".join(_COMMANDS))
                    args = {k: v for k, v in command.items() if k != "command"}
                    results.append(await self._run(command["command"], args))
                except Exception as e:
                    e.extra = {"index": index}  # type: ignore[attr-defined]
                    raise
            return {"results": results}

        return self.json_response(await self._once(body.get("request_id"), run))

    # -- weights for local inference ------------------------------------------------------------

    async def _policy(self, request: Any) -> Any:
        """The policy for local-inference clients: algorithm, config, spaces and the acting
        pytree's leaves (``?since=<version>`` answers ``{"version", "unchanged": true}`` when
        nothing changed)."""
        runner = self.external_env.runner
        since = request.query.get("since")
        if since is not None and since == str(runner.acting_version):
            return self.json_response({"version": runner.acting_version, "unchanged": True})
        loop = asyncio.get_running_loop()
        payload = await loop.run_in_executor(None, _policy_payload, runner)
        return self.json_response(payload)


def _retrieve(task: asyncio.Future) -> None:
    """Marks a finished run's exception as seen (its requests may all have timed out)."""
    if not task.cancelled():
        task.exception()


def _episode_id(args: dict[str, Any]) -> str:
    episode_id = args["episode_id"]
    if not isinstance(episode_id, str):
        raise ProtocolError(f"episode_id must be a string, got {type(episode_id).__name__}")
    return episode_id


def _policy_payload(runner: Any) -> dict[str, Any]:
    policy = runner.policy
    version = runner.acting_version
    leaves = jax.tree.leaves(jax.device_get(runner.acting))
    config = config_jsonable(policy.config)
    return {"protocol": PROTOCOL_VERSION, "algo": policy.definition.name, "config": config,
            "observation_space": space_to_json(policy.observation_space),
            "action_space": space_to_json(policy.action_space), "version": version,
            "acting": [encode_array(leaf) for leaf in leaves]}
