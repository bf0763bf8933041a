"""External agents over HTTP: ``PolicyServer`` / ``PolicyClient`` (RLlib's names) and the
inference server behind ``jrl serve``. The protocol (v1, JSON) is described in the README."""

from jrl.serving.client import PolicyClient, ServerError
from jrl.serving.inference import InferenceServer, serve_checkpoint
from jrl.serving.server import PolicyServer

__all__ = ["InferenceServer", "PolicyClient", "PolicyServer", "ServerError", "serve_checkpoint"]
