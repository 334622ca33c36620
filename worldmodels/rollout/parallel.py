"""Episodes of the World Models agent spread over Ray workers, with fault handling.

Jobs (controller vector, env seed) are cut into tasks; each task runs its episodes together
in one worker (one batched V+M+C call per time step). V and M travel once through Ray's
object store. A worker that dies has its task retried by Ray (`max_retries`); a task that
runs past `timeout` seconds is cancelled and resubmitted, so a stuck episode cannot hang a
generation.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

import numpy as np

from worldmodels.errors import WorldModelsError
from worldmodels.rollout.agent import WorldModel, episodes_task


def world_id(world: WorldModel) -> str:
    import jax

    digest = hashlib.sha256(world.config.to_json().encode())
    for leaf in jax.tree.leaves((world.vision_params, world.rnn_params)):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:16]


class ParallelEpisodes:
    """Runs batches of episodes for one world model on Ray."""

    def __init__(self, world: WorldModel, workers: int = 0, timeout: float = 900.0, max_attempts: int = 3,
                 max_task_episodes: int = 32, fixed_task_size: bool = False):
        from worldmodels.parallel import cluster_cpus, init_ray

        self.ray = init_ray(num_cpus=workers or None)
        self.parallel = workers or cluster_cpus()
        self.world_id = world_id(world)
        self.payload = self.ray.put(world.payload())
        self.timeout, self.max_attempts, self.max_task_episodes = timeout, max_attempts, max_task_episodes
        # Fixed-size tasks make results independent of the number of workers: the batch an
        # episode is stepped in (and so its floating-point path) depends only on its index.
        self.fixed_task_size = fixed_task_size
        # SPREAD: a generation's tasks go to every node with a free CPU rather than queueing
        # behind the driver's own node (Ray's default prefers the local node while it is below
        # half load, so a short generation could run entirely on the head node).
        self.task = self.ray.remote(num_cpus=1, max_retries=3, scheduling_strategy="SPREAD")(episodes_task)

    def chunks(self, jobs: int) -> list[np.ndarray]:
        """How `run` groups jobs into tasks (episodes of a task are stepped together)."""
        size = self.max_task_episodes
        if not self.fixed_task_size:
            size = min(size, max(1, math.ceil(jobs / self.parallel)))
        return [np.arange(i, min(i + size, jobs)) for i in range(0, jobs, size)]

    def replay(self, flat_controllers: np.ndarray, seeds: np.ndarray, env_id: str, max_steps: int,
               episode: int) -> dict[str, np.ndarray]:
        """Rerun the task that held `episode` exactly as `run` did (same companions, same kind
        of worker, so the same floating-point path) and return its frames. The agent is
        deterministic, but a different batch size or thread setup can change the last bits of
        an action, and CarRacing amplifies that."""
        chunk = next(c for c in self.chunks(len(seeds)) if episode in c)
        ref = self.task.remote(self.world_id, self.payload, flat_controllers[chunk],
                               [int(s) for s in seeds[chunk]], env_id, max_steps,
                               int(np.flatnonzero(chunk == episode)[0]))
        result = self.ray.get(ref)
        position = int(np.flatnonzero(chunk == episode)[0])
        return {"frames": result["frames"], "return": float(result["returns"][position])}

    def run(self, flat_controllers: np.ndarray, seeds: np.ndarray, env_id: str, max_steps: int,
            on_task_done: Callable[[int], None] | None = None, stall_steps: int = 0) -> dict[str, np.ndarray]:
        """Episode j: controller `flat_controllers[j]` on env seed `seeds[j]` (`stall_steps`: see
        `run_episodes`).
        Returns returns (J,), steps (J,) and the env steps/s of the whole call."""
        ray = self.ray
        jobs = len(seeds)
        chunks = self.chunks(jobs)
        returns, steps = np.zeros(jobs), np.zeros(jobs, np.int64)
        queue = list(range(len(chunks)))
        attempts = dict.fromkeys(queue, 0)
        running: dict = {}  # ref -> (chunk number, start time)
        start = time.perf_counter()

        def submit(c: int) -> None:
            attempts[c] += 1
            if attempts[c] > self.max_attempts:
                raise WorldModelsError(f"a batch of {len(chunks[c])} episodes failed or timed out "
                                       f"{self.max_attempts} times; see the Ray logs")
            idx = chunks[c]
            ref = self.task.remote(self.world_id, self.payload, flat_controllers[idx],
                                   [int(s) for s in seeds[idx]], env_id, max_steps, None, stall_steps)
            running[ref] = (c, time.perf_counter())

        while queue or running:
            while queue and len(running) < self.parallel:
                submit(queue.pop(0))
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                c, _ = running.pop(ref)
                try:
                    result = ray.get(ref)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.TaskCancelledError,
                        ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError):
                    queue.append(c)  # the worker or its node died: run the batch elsewhere
                    continue
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, WorldModelsError):
                        raise exc.cause from None
                    raise
                returns[chunks[c]] = result["returns"]
                steps[chunks[c]] = result["steps"]
                if on_task_done is not None:
                    on_task_done(len(chunks[c]))
            now = time.perf_counter()
            for ref, (c, began) in list(running.items()):
                if now - began > self.timeout:
                    ray.cancel(ref, force=True)
                    running.pop(ref)
                    queue.append(c)
        seconds = time.perf_counter() - start
        return {"returns": returns, "steps": steps, "env_steps_per_s": steps.sum() / max(seconds, 1e-9)}
