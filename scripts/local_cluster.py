"""Start a multi-node Ray cluster on this one machine, for trying cluster runs locally.

    python -m scripts.local_cluster --nodes 2 --cpus-per-node 1
    # prints RAY_ADDRESS=<ip:port>; in another shell:
    RAY_ADDRESS=<ip:port> make rollouts CONFIG=tiny

Uses Ray's own `ray.cluster_utils.Cluster`: each node is a separate raylet with its own CPUs
and object store, so tasks really are scheduled across nodes and results really travel
between object stores. Ctrl-C (or SIGTERM) stops the cluster.

The cluster keeps its files in its own temporary folder (RAY_TMPDIR), not /tmp/ray: Ray
records the address of the last cluster started there, and a plain `ray.init()` anywhere on
the machine would otherwise join this cluster instead of starting its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from worldmodels.parallel import WORKER_ENV

ROOT = Path(__file__).resolve().parents[1]


def start_local_cluster(nodes: int = 2, cpus_per_node: int = 1, object_store_mb: int = 300):
    """A head node plus `nodes - 1` worker nodes; returns the `Cluster` (call .shutdown()).

    Sets RAY_TMPDIR of this process to a fresh folder (see the module docstring): call it in a
    process of its own, like `main` does, not in a process that also runs a local Ray."""
    from ray.cluster_utils import Cluster

    if "RAY_TMPDIR" not in os.environ:
        # Short path: Ray's Unix socket names must stay under ~100 characters.
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="wm-ray-", dir="/tmp")
    node_args = {"num_cpus": cpus_per_node, "object_store_memory": object_store_mb * 2**20,
                 "env_vars": WORKER_ENV}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(**node_args)
    cluster.wait_for_nodes()
    return cluster


def spawn(nodes: int = 2, cpus_per_node: int = 1) -> tuple[subprocess.Popen, str]:
    """`python -m scripts.local_cluster` in a process group of its own, for a caller that also
    runs Ray (a test session, the bench); returns (process, address). Stop it with `stop`."""
    helper = subprocess.Popen([sys.executable, "-m", "scripts.local_cluster", "--nodes", str(nodes),
                               "--cpus-per-node", str(cpus_per_node)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    lines = []
    for line in helper.stdout:  # ends if the helper dies
        lines.append(line)
        if "RAY_ADDRESS=" in line:
            return helper, line.strip().split("RAY_ADDRESS=")[1]
    helper.wait()
    raise RuntimeError("the local Ray cluster did not start:\n" + "".join(lines[-30:]))


def stop(helper: subprocess.Popen, timeout: float = 60) -> None:
    """Stop a cluster from `spawn`: its nodes stop and its files go; if it hangs, its whole
    process group is killed."""
    helper.send_signal(signal.SIGTERM)
    try:
        helper.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(helper.pid, signal.SIGKILL)
        helper.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--object-store-mb", type=int, default=300, help="object store of each node")
    args = parser.parse_args()
    own_tmp = "RAY_TMPDIR" not in os.environ

    def stop(signum, frame):
        raise KeyboardInterrupt

    # Ray's own SIGTERM handler (one per node object) can hang half-way; stop the same way as Ctrl-C.
    cluster = start_local_cluster(args.nodes, args.cpus_per_node, args.object_store_mb)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"local Ray cluster with {args.nodes} nodes of {args.cpus_per_node} CPU(s): "
          f"RAY_ADDRESS={cluster.address}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cluster.shutdown()
        if own_tmp:
            shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
        print("local Ray cluster stopped", flush=True)


if __name__ == "__main__":
    main()
