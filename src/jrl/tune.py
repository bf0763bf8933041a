"""Ray Tune integration: every registered algorithm is a Tune Trainable by name.

After ``import jrl``, ``tune.Tuner("PPO", param_space={"env": "CartPole-v1", "lr":
tune.grid_search([1e-3, 3e-4])})`` runs jrl's PPO. The names are registered the moment
``ray.tune`` is imported (before or after jrl), so ``import jrl`` itself stays light.

Inside a function trainable, run a ``Trainer`` and hand each result to ``report``::

    def train_fn(config):
        trainer = jrl.Trainer("PPO", config=config)
        for _ in range(10):
            jrl.tune.report(trainer.train(), trainer=trainer)
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from jrl import registry
from jrl.config import jsonable

_REGISTERED = False


def _clean_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result Tune can store: no config copy, JSON-able values."""
    return {k: jsonable(v) for k, v in result.items() if k not in ("config", "done")}


class ShippedRegistrations:
    """The driver's ``jrl.register_env`` creators and ``ModelCatalog`` registrations, riding
    along with a trainable class to its trial actors.

    Tune pickles the trainable class on the driver when it starts a trial's actor, so this
    snapshots the registrations at that moment (not when the class was registered): a custom
    model or env registered just before ``tune.run`` reaches the trial, as it reaches Ray
    rollout workers (``rollout.worker.prepare_worker_process``)."""

    def __init__(self, envs: Mapping[str, Any] | None = None,
                 models: Mapping[str, Mapping[str, type]] | None = None):
        self.envs = dict(envs or {})
        self.models = {k: dict(v) for k, v in (models or {}).items()}

    def __reduce__(self):
        from ray import cloudpickle

        from jrl.networks.custom import ModelCatalog
        from jrl.rollout.envs import registered_creator, registered_envs

        envs = dict(self.envs)
        for name in registered_envs():
            creator = registered_creator(name)
            try:  # a creator that cannot travel is left behind (the trial reports the env)
                cloudpickle.dumps(creator)
            except Exception:
                continue
            envs[name] = creator
        models = {k: {**self.models.get(k, {}), **v}
                  for k, v in ModelCatalog.registrations().items()}
        return ShippedRegistrations, (envs, models)

    def restore(self, env_id: Any) -> None:
        """Registers everything in this process (a trial actor), the trial's env and models
        the way a rollout worker takes them."""
        from jrl.rollout.envs import register_env
        from jrl.rollout.worker import prepare_worker_process

        for name, creator in self.envs.items():
            if name != env_id:
                register_env(name, creator)
        env = env_id if isinstance(env_id, str) else ""
        prepare_worker_process(env, 0, self.envs.get(env), self.models)


def make_trainable(algo_name: str) -> type:
    """A ``tune.Trainable`` class that trains ``algo_name`` with jrl."""
    from ray import tune

    from jrl.trainer import Trainer

    name = registry.get_algorithm_def(algo_name).name

    class JrlTrainable(tune.Trainable):
        _algo_name = name
        _registrations = ShippedRegistrations()

        def setup(self, config: dict) -> None:
            self._registrations.restore(config.get("env"))
            self.trainer = Trainer(self._algo_name, config=dict(config), logdir=self.logdir,
                                   log_to_disk=True)

        def step(self) -> dict:
            return _clean_result(self.trainer.train())

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            self.trainer.save(checkpoint_dir)

        def load_checkpoint(self, checkpoint: Any) -> None:
            path = checkpoint if isinstance(checkpoint, str) else checkpoint.path
            self.trainer.restore(path)

        def cleanup(self) -> None:
            self.trainer.stop()

        @classmethod
        def default_resource_request(cls, config: dict):
            return resources_for(cls._algo_name, config)

    JrlTrainable.__name__ = JrlTrainable.__qualname__ = f"{name}Trainable"
    return JrlTrainable


def resources_for(algo_name: str, config: Mapping[str, Any]):
    """The trial's placement group: a driver bundle plus one bundle per rollout worker."""
    from ray import tune

    cfg = registry.parse_config(algo_name, {k: v for k, v in dict(config).items()
                                            if not _is_search_space(v)})
    driver = {"CPU": cfg.num_cpus_for_driver, "GPU": cfg.num_gpus}
    worker = {"CPU": cfg.num_cpus_per_worker, "GPU": cfg.num_gpus_per_worker,
              **cfg.custom_resources_per_worker}
    bundles = [driver] + [dict(worker) for _ in range(cfg.num_workers)]
    return tune.PlacementGroupFactory([{k: v for k, v in b.items() if v} or {"CPU": 0}
                                       for b in bundles])


def _is_search_space(value: Any) -> bool:
    return isinstance(value, Mapping) and "grid_search" in value or \
        type(value).__module__.startswith("ray.tune")


def register_trainables() -> None:
    """Registers every jrl algorithm under its name (``"PPO"``, ``"DQN"``) with Tune."""
    global _REGISTERED
    from ray.tune import register_trainable

    for name in registry.algorithm_names():
        register_trainable(name, make_trainable(name))
    if not _REGISTERED:
        # Tune's registry lives in the cluster's key-value store, so it is gone after
        # ray.shutdown(); register again after every later ray.init (else Tune would fall back
        # to RLlib's algorithms of the same names).
        try:
            import ray._private.worker as ray_worker

            ray_worker._post_init_hooks.append(register_trainables)
        except (ImportError, AttributeError):
            pass
    _REGISTERED = True


def report(result: Mapping[str, Any], *, trainer: Any = None, checkpoint: bool = False) -> None:
    """Reports a ``Trainer.train()`` result from a function trainable (``ray.tune.report``);
    with ``checkpoint=True`` also saves the trainer and attaches the checkpoint."""
    from ray import tune

    metrics = _clean_result(result)
    if checkpoint:
        if trainer is None:
            raise ValueError("report(checkpoint=True) needs the trainer")
        directory = tempfile.mkdtemp(prefix="jrl_tune_ckpt_")
        trainer.save(directory)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
    else:
        tune.report(metrics)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Registers jrl's trainables as soon as ``ray.tune`` finishes importing."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "ray.tune":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            try:
                register_trainables()
            except Exception:  # never break the user's import of Ray Tune
                pass

        loader.exec_module = exec_module
        return spec


def install_import_hook() -> None:
    """Registers now if ``ray.tune`` is loaded, else when it gets imported."""
    if os.environ.get("JRL_NO_TUNE_REGISTRATION"):
        return
    if "ray.tune" in sys.modules:
        register_trainables()
    elif not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())


def _keep_checkpoints(plan: Any) -> dict[str, Any]:
    """``keep_checkpoints_num`` / ``checkpoint_score_attr`` as Tune's ``CheckpointConfig``
    arguments (``min-KEY`` ranks lower as better)."""
    keep: dict[str, Any] = {}
    if getattr(plan, "keep_checkpoints_num", None):
        keep["num_to_keep"] = plan.keep_checkpoints_num
    attr = getattr(plan, "checkpoint_score_attr", None)
    if attr:
        minimize = attr.startswith("min-")
        keep["checkpoint_score_attribute"] = attr[4:] if minimize else attr
        keep["checkpoint_score_order"] = "min" if minimize else "max"
    return keep


def run_experiments(plans: list, *, address: str | None = None, verbose: int = 0) -> list:
    """Runs each experiment (``jrl.cli.ExperimentPlan``) through ``tune.Tuner``; a config's
    ``{"grid_search": [...]}`` values become Tune grid searches. Returns the ``ResultGrid``s."""
    from ray import tune

    from jrl.rollout.worker_set import init_ray

    init_ray(address)
    register_trainables()
    grids = []
    for plan in plans:
        tuner = tune.Tuner(
            plan.algo, param_space=dict(plan.config),
            run_config=tune.RunConfig(
                name=plan.name, storage_path=os.path.abspath(plan.local_dir), stop=plan.stop,
                verbose=1 if verbose else 0,
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_frequency=plan.checkpoint_freq,
                    checkpoint_at_end=plan.checkpoint_at_end,
                    **_keep_checkpoints(plan))))
        grid = tuner.fit()
        grids.append(grid)
        print(f"\nExperiment '{plan.name}' ({plan.algo}): {len(grid)} trials")
        for result in grid:
            metrics = result.metrics or {}
            reward = metrics.get("episode_reward_mean", float("nan"))
            line = (f"  {os.path.basename(result.path)}: iterations "
                    f"{metrics.get('training_iteration', 0)}, episode_reward_mean {reward:.2f}")
            if result.error:
                line += f", error: {str(result.error).strip().splitlines()[-1]}"
            print(line)
            if result.checkpoint is not None:
                print(f"    checkpoint: {result.checkpoint.path}")
                print(f"    evaluate:   jrl evaluate {result.checkpoint.path}")
    return grids
