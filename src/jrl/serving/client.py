"""``PolicyClient``: RLlib's client for a ``PolicyServer`` (protocol v1, JSON over HTTP).

``inference_mode="remote"`` asks the server for every action. ``"local"`` pulls the policy
(algorithm, config, spaces, weights) from the server, acts with the same jitted ``act`` in this
process, refreshes the weights every ``update_interval`` seconds in a background thread, and
ships the episode's steps back in batches (``POST /v1/batch``).

Requests carry a ``request_id``; on a lost connection the client reconnects and repeats the
request with the same id (the server answers repeats without applying them again). When the
server restarted and forgot an episode, the client starts it again under the same id.
"""

from __future__ import annotations

import http.client
import itertools
import logging
import socket
import threading
import time
import urllib.parse
import uuid
from typing import Any

import numpy as np

from jrl.errors import ConfigError, EnvError
from jrl.serving.protocol import (
    PREFIX,
    ProtocolError,
    decode_array,
    dumps,
    jsonable,
    loads,
    space_from_json,
)

logger = logging.getLogger(__name__)

_FLUSH_COMMANDS = 1000


class ServerError(EnvError):
    """The server refused a request; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int, index: int | None = None):
        super().__init__(message)
        self.status = status
        self.index = index


class PolicyClient:
    """Talks to a ``PolicyServer`` with ``ExternalEnv``'s five methods.

    Args:
      address: the server's URL, e.g. ``"http://localhost:9900"``.
      token: the server's token (sent as ``Authorization: Bearer <token>``).
      inference_mode: ``"remote"`` (the server computes actions) or ``"local"`` (this process
        does, with weights pulled every ``update_interval`` seconds).
      update_interval: seconds between weight pulls in local mode (None: only once).
      timeout: seconds one HTTP request may take.
      retry_timeout: how long to keep repeating a request while the server is unreachable
        or answers 503 (restarting, busy, or holding actions back while the learner trains).
    """

    def __init__(self, address: str, token: str | None = None, inference_mode: str = "remote",
                 update_interval: float | None = 10.0, *, timeout: float = 60.0,
                 retry_timeout: float = 120.0):
        if inference_mode not in ("remote", "local"):
            raise ConfigError(f"inference_mode must be 'remote' or 'local', got "
                              f"{inference_mode!r}")
        url = urllib.parse.urlsplit(address if "://" in address else f"http://{address}")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"address must look like http://host:port, got {address!r}")
        self.address = address
        self.inference_mode = inference_mode
        self.update_interval = update_interval
        self._scheme, self._host = url.scheme, url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        if url.port is not None:
            host = f"{host}:{url.port}"
        head = (f"Host: {host}\r\nAccept-Encoding: identity\r\nContent-Type: application/json"
                f"\r\nConnection: keep-alive\r\n")
        if token:
            if any(c in token for c in "\r\n"):
                raise ConfigError("token must not contain line breaks")
            head += f"Authorization: Bearer {token}\r\n"
        try:
            self._head = head.encode("latin-1")
        except UnicodeEncodeError:
            raise ConfigError("token and address must be latin-1 text") from None
        self._timeout, self._retry_timeout = float(timeout), float(retry_timeout)
        self._conn: _Connection | None = None
        self._lock = threading.RLock()
        self._prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count()
        self._episodes: dict[str, bool] = {}  # episode id -> training_enabled
        self._local: _LocalPolicy | None = None
        self._buffer: list[dict[str, Any]] = []
        self._updater: threading.Thread | None = None
        self._closed = threading.Event()
        if inference_mode == "local":
            self._local = _LocalPolicy(self._request("GET", f"{PREFIX}/policy"))
            if update_interval:
                self._updater = threading.Thread(target=self._update_loop, daemon=True,
                                                 name="jrl-policy-client-updater")
                self._updater.start()

    # -- RLlib's five methods -------------------------------------------------------------------

    def start_episode(self, episode_id: str | None = None, training_enabled: bool = True) -> str:
        """Starts an episode on the server (local mode: with the next batch); returns its id."""
        if self._local is not None:
            episode_id = episode_id or uuid.uuid4().hex
            self._episodes[episode_id] = bool(training_enabled)
            self._push({"command": "start_episode", "episode_id": episode_id,
                        "training_enabled": bool(training_enabled)})
            return episode_id
        body: dict[str, Any] = {"training_enabled": bool(training_enabled)}
        if episode_id is not None:
            body["episode_id"] = episode_id
        episode_id = self._command("start_episode", body)["episode_id"]
        self._episodes[episode_id] = bool(training_enabled)
        return episode_id

    def get_action(self, episode_id: str, observation: Any) -> Any:
        """The policy's action for ``observation``."""
        if self._local is not None:
            action, logp = self._local.act(observation)
            command = {"command": "log_action", "episode_id": episode_id,
                       "observation": jsonable(observation), "action": jsonable(action)}
            if logp is not None:
                command["action_logp"] = logp
            self._push(command)
            return action
        action = self._command("get_action", {"episode_id": episode_id,
                                              "observation": jsonable(observation)})["action"]
        return np.asarray(action) if isinstance(action, list) else action

    def log_action(self, episode_id: str, observation: Any, action: Any) -> None:
        """Records an action chosen outside the policy."""
        body = {"episode_id": episode_id, "observation": jsonable(observation),
                "action": jsonable(action)}
        if self._local is not None:
            self._push({"command": "log_action", **body})
        else:
            self._command("log_action", body)

    def log_returns(self, episode_id: str, reward: float, info: dict | None = None) -> None:
        """Adds ``reward`` to the episode's current step."""
        body: dict[str, Any] = {"episode_id": episode_id, "reward": float(reward)}
        if info:
            body["info"] = jsonable(_json_info(info))
        if self._local is not None:
            self._push({"command": "log_returns", **body})
        else:
            self._command("log_returns", body)

    def end_episode(self, episode_id: str, observation: Any, truncated: bool = False) -> None:
        """Ends the episode at ``observation`` (local mode: ships the buffered steps)."""
        body = {"episode_id": episode_id, "observation": jsonable(observation)}
        if truncated:
            body["truncated"] = True
        if self._local is not None:
            self._push({"command": "end_episode", **body})
            self.flush()
        else:
            self._command("end_episode", body)
        self._episodes.pop(episode_id, None)

    # -- local mode -----------------------------------------------------------------------------

    def update_policy_weights(self) -> bool:
        """Pulls the server's weights now (local mode); True when they changed."""
        if self._local is None:
            return False
        payload = self._request("GET", f"{PREFIX}/policy?since={self._local.version}")
        if payload.get("unchanged"):
            return False
        self._local.load(payload)
        return True

    def flush(self) -> None:
        """Ships the buffered steps (local mode)."""
        with self._lock:
            commands, self._buffer = self._buffer, []
            self._send_commands(commands)

    def _send_commands(self, commands: list[dict[str, Any]]) -> None:
        while commands:
            try:
                self._request("POST", f"{PREFIX}/batch", {"commands": commands},
                              request_id=self._next_id())
                return
            except ServerError as e:
                if e.status == 413 and len(commands) > 1:  # over the server's body cap: halve
                    half = len(commands) // 2
                    self._send_commands(commands[:half])
                    commands = commands[half:]
                    continue
                episode_id = _episode_of(commands, e.index)
                if e.status != 404 or episode_id not in self._episodes:
                    raise
                # The server restarted: start the episode again, resend from there.
                commands = [{"command": "start_episode", "episode_id": episode_id,
                             "training_enabled": self._episodes[episode_id]},
                            *commands[e.index:]]

    def close(self) -> None:
        """Ships what is buffered and closes the connection."""
        self._closed.set()
        if self._local is not None and self._buffer:
            self.flush()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _push(self, command: dict[str, Any]) -> None:
        with self._lock:
            self._buffer.append(command)
            full = len(self._buffer) >= _FLUSH_COMMANDS
        if full:
            self.flush()

    def _update_loop(self) -> None:
        while not self._closed.wait(self.update_interval):
            try:
                self.update_policy_weights()
            except Exception as e:  # keep acting with the weights we have
                logger.warning("policy weight update failed: %s", e)

    # -- HTTP -----------------------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def _command(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        request_id = self._next_id()
        try:
            return self._request("POST", f"{PREFIX}/{name}", body, request_id=request_id)
        except ServerError as e:
            episode_id = body.get("episode_id")
            if e.status != 404 or name == "start_episode" or episode_id not in self._episodes:
                raise
        # The server restarted and forgot the episode: start it again under the same id.
        self._request("POST", f"{PREFIX}/start_episode",
                      {"episode_id": episode_id,
                       "training_enabled": self._episodes[episode_id]},
                      request_id=self._next_id())
        return self._request("POST", f"{PREFIX}/{name}", body, request_id=self._next_id())

    def _connection(self) -> _Connection:
        if self._conn is None or self._conn.closed:
            self._conn = _Connection(self._scheme, self._host, self._port, self._timeout,
                                     self._head)
        return self._conn

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 request_id: str | None = None) -> dict[str, Any]:
        if body is not None and request_id is not None:
            body = {**body, "request_id": request_id}
        data = None if body is None else dumps(body)
        deadline = time.monotonic() + self._retry_timeout
        delay = 0.05
        with self._lock:
            while True:
                try:
                    status, payload = self._connection().request(method, path, data)
                except (OSError, http.client.HTTPException) as e:
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    if time.monotonic() >= deadline:
                        raise ConnectionError(f"policy server {self.address} unreachable: "
                                              f"{e}") from None
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                if status == 503 and time.monotonic() < deadline:
                    time.sleep(delay)  # busy or restarting: the same request again
                    delay = min(delay * 2, 1.0)
                    continue
                break
        try:
            result = loads(payload)
        except ProtocolError:
            raise ServerError(f"server answered {status} with a non-JSON body", status) from None
        if status >= 400:
            message = result.get("error", "") if isinstance(result, dict) else ""
            index = result.get("index") if isinstance(result, dict) else None
            raise ServerError(f"policy server: {status} {message}", status, index)
        return result


_MAX_HEAD = 65536  # http.client's line limit; a longer response head is refused
_RECV = 65536


class _Connection:
    """One kept-alive HTTP/1.1 connection to the server, with little per-request work.

    ``http.client`` opens it (TCP or TLS, its timeout on every read and write). A request goes
    out as one write of pre-built header bytes and the body (one packet: the server wakes once
    per request), and the answer is read straight from the socket: the status line, then the
    head's ``Content-Length`` and ``Connection`` (the protocol's answers are always
    ``Content-Length``-framed JSON), then exactly that many bytes. ``http.client``'s response
    objects, its ``email``-based header parser and per-response file objects cost about as much
    CPU as the rest of a ``get_action`` call on the client. Anything this reader does not
    expect (a malformed status line or head, a head over 64 KiB, a lost connection) raises
    ``http.client.HTTPException`` or ``OSError``: the client reconnects and repeats the request
    with the same ``request_id``; a chunked answer raises ``ProtocolError``.
    """

    def __init__(self, scheme: str, host: str, port: int, timeout: float, head: bytes):
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        self._http = cls(host, port, timeout=timeout)
        self._http.connect()
        self.sock = self._http.sock
        # Without NODELAY, a write that follows an unacknowledged one waits for the delayed ACK.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._head = head  # "Host: ...\r\n" and the fixed headers, as bytes
        self._buf = bytearray()
        self.closed = False

    def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        """Sends the request; returns the answer's status and body."""
        if body is None:
            message = b"%s %s HTTP/1.1\r\n%s\r\n" % (method.encode(), path.encode(),
                                                       self._head)
        else:
            message = b"%s %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
                method.encode(), path.encode(), self._head, len(body), body)
        self.sock.sendall(message)
        while True:
            status, length, close = self._read_head()
            if status >= 200:
                break  # 1xx: an interim answer, the real one follows
        if length is None:  # no Content-Length: the body runs to the end of the connection
            while self._fill(eof_ok=True):
                pass
            length, close = len(self._buf), True
        while len(self._buf) < length:
            self._fill()
        payload = bytes(self._buf[:length])
        del self._buf[:length]
        if close:
            self.close()
        return status, payload

    def _read_head(self) -> tuple[int, int | None, bool]:
        buf = self._buf
        start = 0
        while (end := buf.find(b"\r\n\r\n", start)) < 0:
            if len(buf) > _MAX_HEAD:
                raise http.client.LineTooLong("response head")
            start = max(0, len(buf) - 3)
            self._fill()
        if end > _MAX_HEAD:
            raise http.client.LineTooLong("response head")
        lines = bytes(buf[:end]).split(b"\r\n")
        del buf[:end + 4]
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise http.client.BadStatusLine(lines[0].decode("latin-1")[:80])
        status, length = int(parts[1]), None
        close = parts[0] == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                value = value.strip()
                if not value.isdigit():
                    raise http.client.HTTPException(f"bad Content-Length {value[:40]!r}")
                length = int(value)
            elif name == b"transfer-encoding" and value.strip().lower() != b"identity":
                raise ProtocolError("the server answered with a Transfer-Encoding; protocol "
                                    "v1 answers are Content-Length framed")
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if status < 200 or status in (204, 304):
            length = 0
        return status, length, close

    def _fill(self, eof_ok: bool = False) -> bool:
        data = self.sock.recv(_RECV)
        if not data:
            if eof_ok:
                return False
            raise http.client.RemoteDisconnected("the server closed the connection")
        self._buf += data
        return True

    def close(self) -> None:
        self.closed = True
        self._http.close()
        self._buf.clear()


class _LocalPolicy:
    """The server's policy rebuilt in this process: the same algorithm record, config and
    jitted ``act``; weights swapped in as they arrive."""

    def __init__(self, payload: dict[str, Any]):
        import jax

        from jrl.serving.inference import build_policy

        self.policy, algorithm = build_policy(
            payload["algo"], dict(payload["config"]),
            space_from_json(payload["observation_space"]),
            space_from_json(payload["action_space"]), seed=int(uuid.uuid4().int % 2**31))
        self.algo_config = self.policy.algo_config
        self._structure = jax.eval_shape(lambda k: algorithm.policy(algorithm.init(k)),
                                         jax.random.PRNGKey(0))
        self.discrete = self.policy.spec.discrete
        self.version = -1
        self.load(payload)

    def load(self, payload: dict[str, Any]) -> None:
        import jax

        leaves = [decode_array(a) for a in payload["acting"]]
        expected = jax.tree.leaves(self._structure)
        if len(leaves) != len(expected) or any(
                leaf.shape != e.shape for leaf, e in zip(leaves, expected, strict=True)):
            raise ProtocolError("the server's weights do not match the policy it described")
        treedef = jax.tree.structure(self._structure)
        acting = jax.tree.unflatten(treedef, [jax.numpy.asarray(leaf, e.dtype) for leaf, e in
                                              zip(leaves, expected, strict=True)])
        self.policy.set_acting(acting)
        self.version = int(payload["version"])

    def act(self, observation: Any) -> tuple[Any, float | None]:
        obs = self.policy.preprocess([observation])
        action, extras = self.policy.act_on(obs, bool(self.algo_config.explore))
        logp = extras.get("action_logp")
        value = int(action[0]) if self.discrete else action[0]
        return value, None if logp is None else float(logp[0])


def _episode_of(commands: list[dict[str, Any]], index: int | None) -> str | None:
    if index is None or not 0 <= index < len(commands):
        return None
    return commands[index].get("episode_id")


def _json_info(info: dict) -> dict:
    """The JSON-able part of an info dict (NumPy values as lists; other objects dropped)."""
    out = {}
    for k, v in info.items():
        if isinstance(v, (str, int, float, bool, type(None), list, dict, np.ndarray, np.generic)):
            out[str(k)] = v
    return out
