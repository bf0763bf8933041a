"""Evolution plan (ES): workers evaluate antithetic perturbations, the driver does the update.

Each ``step`` is one ES iteration. The policy (params and observation-filter statistics) goes to
the workers once (one ``ray.put``). In each sampling round every worker draws its share of the
``num_pairs`` noise indices and runs one full episode with ``theta + sigma * eps`` and one with
``theta - sigma * eps`` per index (both from the same env seed, so a pair differs only in its
sign), plus, with probability ``eval_prob`` per pair, an episode of the unperturbed policy. A
worker steps all its episodes together with one batched (``vmap`` over parameter vectors) forward
pass per step. Rounds repeat until the perturbed episodes reach ``train_batch_size`` env steps;
then the driver runs the algorithm's ``update`` (rank shaping and Adam) once on every pair.

With ``num_workers=0`` the trainer's own worker runs the episodes in-process. Pairs are padded to
a power-of-two number of rounds (padding is masked out), so ``update`` recompiles only when the
number of rounds per iteration crosses a power of two.

The algorithm record provides ``noise_rows(indices, dim)`` (the shared noise table) and
``batch_type`` (``ESBatch``), and the config ``noise_size``, ``noise_stdev``, ``num_pairs``,
``eval_prob`` and ``report_length``.
"""

from __future__ import annotations

import collections
import math
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jrl.ops.filters import FilterState
from jrl.rollout.envs import make_env
from jrl.rollout.worker_set import WorkerSet
from jrl.types import Algorithm, AlgorithmDef

# Times one worker's share of a round is re-run on a replacement worker before giving up.
MAX_RETRIES = 2


class PerturbationRunner:
    """Runs one sampling round of perturbed (and unperturbed) episodes on one rollout worker.

    Keeps its own envs (one per concurrent episode, created as needed) and the jitted
    perturbation and batched-action functions; built once per worker by ``run_round``.
    """

    def __init__(self, worker: Any):
        self.worker = worker
        self.config = worker.config
        self._noise_rows = worker.definition.require("noise_rows")
        self._envs: list = []
        self._built_for: Any = None

    def _env(self, i: int):
        cfg = self.config
        while len(self._envs) <= i:
            self._envs.append(make_env(self.worker.env_id, cfg.env_config, horizon=cfg.horizon,
                                       worker_index=self.worker.worker_index,
                                       vector_index=len(self._envs),
                                       preprocessor_pref=cfg.preprocessor_pref, model=cfg.model))
        return self._envs[i]

    def _build(self, params: Any) -> None:
        structure = jax.tree.structure(params)
        if self._built_for is not None and self._built_for == structure:
            return
        flat, unravel = ravel_pytree(params)
        dim, sigma = flat.size, self.config.noise_stdev
        act, noise_rows = self.worker.algorithm.act, self._noise_rows

        def perturb(theta, indices, signs):
            return theta + (sigma * signs)[:, None] * noise_rows(indices, dim)

        def act_all(thetas, policy, obs, key, t, explore):
            def one(theta, o, k, e):
                action, _ = act(policy._replace(params=unravel(theta)), o[None], k, e)
                return action[0]

            keys = jax.random.split(jax.random.fold_in(key, t), thetas.shape[0])
            return jax.vmap(one)(thetas, obs, keys, explore)

        self._ravel = jax.jit(lambda p: ravel_pytree(p)[0])
        self._perturb = jax.jit(perturb)
        self._act = jax.jit(act_all)
        self._built_for = structure

    def run(self, policy: Any, seed: Any, num_pairs: int, eval_prob: float) -> dict[str, Any]:
        """Evaluates ``num_pairs`` antithetic pairs (and about ``eval_prob * num_pairs``
        unperturbed episodes) around ``policy.params``.

        Returns ``noise_indices [P]``, ``returns``/``lengths`` ``[P, 2]`` (plus, minus),
        ``eval_returns``/``eval_lengths`` ``[E]``, ``env_steps`` and ``obs_filter``: the
        statistics ``(count, mean, m2)`` of every observation the policies saw.
        """
        cfg = self.config
        self._build(policy.params)
        rng = np.random.default_rng(seed)
        indices = rng.integers(0, cfg.noise_size, num_pairs)
        num_eval = int(rng.binomial(num_pairs, eval_prob)) if eval_prob > 0 else 0
        pair_seeds = rng.integers(0, 2**31 - 1, num_pairs)
        eval_seeds = rng.integers(0, 2**31 - 1, num_eval)
        signs = np.concatenate([np.ones(num_pairs), -np.ones(num_pairs), np.zeros(num_eval)])
        theta = self._ravel(policy.params)
        thetas = self._perturb(theta, jnp.asarray(np.concatenate(
            [indices, indices, np.zeros(num_eval, np.int64)]), jnp.uint32),
            jnp.asarray(signs, jnp.float32))
        returns, lengths, stats = self._episodes(
            thetas, policy._replace(params=None), np.concatenate([pair_seeds, pair_seeds,
                                                                  eval_seeds]),
            signs != 0, int(rng.integers(0, 2**31 - 1)))
        P = num_pairs
        return {"noise_indices": indices.astype(np.int64),
                "returns": np.stack([returns[:P], returns[P:2 * P]], axis=1),
                "lengths": np.stack([lengths[:P], lengths[P:2 * P]], axis=1),
                "eval_returns": returns[2 * P:], "eval_lengths": lengths[2 * P:],
                "env_steps": int(lengths.sum()), "obs_filter": stats}

    def _episodes(self, thetas: jax.Array, policy: Any, env_seeds: np.ndarray,
                  explore: np.ndarray, key_seed: int):
        """One episode per row of ``thetas`` ``[M, D]``, all stepped together."""
        preprocessor = self.worker.preprocessor
        M = len(env_seeds)
        envs = [self._env(i) for i in range(M)]
        obs = np.stack([preprocessor.transform(env.reset(seed=int(s))[0])
                        for env, s in zip(envs, env_seeds, strict=True)])
        returns, lengths = np.zeros(M), np.zeros(M, np.int64)
        active = np.ones(M, bool)
        stats = _ObsStats(obs)
        key = jax.random.PRNGKey(key_seed)
        policy, explore = jax.device_put((policy, explore))
        t = 0
        while True:
            actions = np.asarray(self._act(thetas, policy, obs, key, t, explore))
            t += 1
            for m in np.flatnonzero(active):
                raw, reward, terminated, truncated, _ = envs[m].step(actions[m])
                returns[m] += reward
                lengths[m] += 1
                if terminated or truncated:
                    active[m] = False
                else:
                    obs[m] = preprocessor.transform(raw)
            if not active.any():
                break
            stats.add(obs[active])
        return returns, lengths, stats.result()


class _ObsStats:
    """Count, mean and sum of squared deviations of observations, accumulated in float64 around
    a fixed shift (the first batch's mean) so that large offsets do not cancel precision."""

    def __init__(self, first: np.ndarray):
        self.shift = first.astype(np.float64).mean(axis=0)
        self.count = 0
        self.sum = np.zeros_like(self.shift)
        self.sumsq = np.zeros_like(self.shift)
        self.add(first)

    def add(self, obs: np.ndarray) -> None:
        x = obs.astype(np.float64) - self.shift
        self.count += x.shape[0]
        self.sum += x.sum(axis=0)
        self.sumsq += np.square(x).sum(axis=0)

    def result(self) -> tuple[int, np.ndarray, np.ndarray]:
        mean = self.sum / max(self.count, 1)
        m2 = np.maximum(self.sumsq - self.count * np.square(mean), 0.0)
        return self.count, mean + self.shift, m2


_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def run_round(worker: Any, policy: Any, seed: Any, num_pairs: int, eval_prob: float
              ) -> dict[str, Any]:
    """``PerturbationRunner.run`` on ``worker`` (called locally or as ``actor.apply.remote``)."""
    runner = _RUNNERS.get(worker)
    if runner is None:
        runner = _RUNNERS[worker] = PerturbationRunner(worker)
    return runner.run(policy, seed, num_pairs, eval_prob)


def _merge_stats(parts: list[tuple[int, np.ndarray, np.ndarray]]) -> FilterState:
    """Chan's combine of ``(count, mean, m2)`` parts into one ``FilterState``."""
    count, mean, m2 = 0.0, np.zeros_like(parts[0][1]), np.zeros_like(parts[0][2])
    for c, mu, s in parts:
        if c == 0:
            continue
        total = count + c
        delta = mu - mean
        mean = mean + delta * (c / total)
        m2 = m2 + s + np.square(delta) * (count * c / total)
        count = total
    return FilterState(count=np.float32(count), mean=mean.astype(np.float32),
                       m2=m2.astype(np.float32))


class EvolutionPlan:
    """Each ``step`` runs sampling rounds of antithetic pairs until ``train_batch_size``
    perturbed env steps, then one ``update`` on all pairs."""

    def __init__(self, definition: AlgorithmDef, algorithm: Algorithm, workers: WorkerSet,
                 config: Any, spec: Any):
        self.algorithm = algorithm
        self.workers = workers
        self.config = config
        self.pairs_per_round = config.num_pairs
        self._batch_type = definition.require("batch_type")
        self._policy = jax.jit(algorithm.policy)
        self._update = jax.jit(algorithm.update)
        self._unperturbed_means: collections.deque = collections.deque(
            maxlen=config.report_length)
        self._last: dict[str, Any] = {"unperturbed_episodes_this_iter": 0, "sampling_rounds": 0}

    def sample(self, state: Any) -> tuple[Any, list[dict], list[dict], int]:
        """Sampling rounds for one iteration: ``(batch, perturbed episodes, unperturbed
        episodes, env steps)``; ``batch`` is what ``update`` takes."""
        cfg = self.config
        policy = jax.device_get(self._policy(state))
        entropy = [int(x) for x in np.asarray(state.key).ravel()]
        remote = self.workers.remote_workers()
        if remote:
            import ray

            policy_ref = ray.put(policy)  # once per iteration, for every round and worker
        results: list[dict] = []
        perturbed_steps, rounds = 0, 0
        while rounds == 0 or perturbed_steps < cfg.train_batch_size:
            seed = [*entropy, rounds]
            if remote:
                round_results = self._remote_round(policy_ref, seed)
            else:
                round_results = [run_round(self.workers.local_worker(), policy, [*seed, 0],
                                           self.pairs_per_round, cfg.eval_prob)]
            results.extend(round_results)
            perturbed_steps += sum(int(r["lengths"].sum()) for r in round_results)
            rounds += 1
        batch = self._batch(results)
        perturbed = [_episode(ret, length) for r in results
                     for ret, length in zip(r["returns"].ravel(), r["lengths"].ravel(),
                                            strict=True)]
        unperturbed = [_episode(ret, length) for r in results
                       for ret, length in zip(r["eval_returns"], r["eval_lengths"], strict=True)]
        self._last["sampling_rounds"] = rounds
        return batch, perturbed, unperturbed, sum(r["env_steps"] for r in results)

    def _remote_round(self, policy_ref: Any, seed: list[int]) -> list[dict]:
        """One round on every remote worker. A worker that dies is replaced (or dropped, as the
        config's failure policy says) and its share re-run with the same seed, so the round's
        pairs are the same as without the failure."""
        import ray

        workers = self.workers
        # WorkerSet's failure policy keeps a replacement under its predecessor's index.
        indices = list(workers.remote_workers_by_index())
        per_worker = math.ceil(self.pairs_per_round / len(indices))

        def submit(index: int):
            return workers.submit(index, run_round, policy_ref, [*seed, index], per_worker,
                                  self.config.eval_prob)

        pending = {submit(index): index for index in indices}
        results: dict[int, dict] = {}
        failures: collections.Counter = collections.Counter()
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ref)
            try:
                results[index] = ray.get(ref)
            except ray.exceptions.RayError as e:
                failures[index] += 1
                if failures[index] > MAX_RETRIES:  # the same seed fails again: not a fluke
                    raise RuntimeError(f"rollout worker {index} failed {failures[index]} times "
                                       f"on the same perturbations: {e}") from e
                if workers.handle_failure(index, e) is not None:
                    pending[submit(index)] = index
        if not results:
            raise RuntimeError("every rollout worker failed; no perturbations were evaluated")
        return [results[i] for i in sorted(results)]

    def _batch(self, results: list[dict]) -> Any:
        indices = np.concatenate([r["noise_indices"] for r in results])
        returns = np.concatenate([r["returns"] for r in results]).astype(np.float32)
        lengths = np.concatenate([r["lengths"] for r in results]).astype(np.int32)
        n = len(indices)
        # Pad to a power-of-two number of rounds: update retraces only when that number grows.
        capacity = self.pairs_per_round * 2 ** math.ceil(
            math.log2(max(1, math.ceil(n / self.pairs_per_round))))
        pad = capacity - n
        return self._batch_type(
            noise_indices=np.pad(indices, (0, pad)).astype(np.int32),
            returns=np.pad(returns, ((0, pad), (0, 0))),
            lengths=np.pad(lengths, ((0, pad), (0, 0))),
            mask=np.arange(capacity) < n,
            obs_filter=_merge_stats([r["obs_filter"] for r in results]))

    def step(self, state: Any) -> tuple[Any, dict, int]:
        batch, perturbed, unperturbed, env_steps = self.sample(state)
        state, metrics = self._update(state, batch)
        self.workers.add_episodes(perturbed)
        if unperturbed:
            self._unperturbed_means.append(
                float(np.mean([e["episode_reward"] for e in unperturbed])))
        self._last["unperturbed_episodes_this_iter"] = len(unperturbed)
        return state, metrics, env_steps

    def stats(self) -> dict[str, Any]:
        """``unperturbed_reward_mean``: RLlib's ES ``episode_reward_mean`` (unperturbed episodes,
        averaged over the last ``report_length`` iterations that had any; NaN before the
        first), and the number of unperturbed episodes and sampling rounds of the iteration."""
        mean = float(np.mean(self._unperturbed_means)) if self._unperturbed_means else math.nan
        return {"unperturbed_reward_mean": mean, **self._last}


def _episode(reward: float, length: int) -> dict[str, Any]:
    return {"episode_reward": float(reward), "episode_len": int(length), "custom_metrics": {},
            "hist_data": {}}
