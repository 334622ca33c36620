"""Start a multi-node Ray cluster on this one machine, for trying cluster runs locally.

    python -m scripts.local_cluster --nodes 2 --cpus-per-node 1
    # then, in another shell: RAY_ADDRESS=<printed address> make rollouts CONFIG=tiny

Uses Ray's own `ray.cluster_utils.Cluster`: each node is a separate raylet with its own CPUs,
so tasks really are scheduled across nodes. Ctrl-C stops the cluster.
"""

from __future__ import annotations

import argparse
import time

from worldmodels.parallel import WORKER_ENV


def start_local_cluster(nodes: int = 2, cpus_per_node: int = 1):
    """A head node plus `nodes - 1` worker nodes; returns the `Cluster` (call .shutdown())."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus_per_node,
                                                            "env_vars": WORKER_ENV})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus_per_node, env_vars=WORKER_ENV)
    cluster.wait_for_nodes()
    return cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    args = parser.parse_args()
    cluster = start_local_cluster(args.nodes, args.cpus_per_node)
    print(f"local Ray cluster with {args.nodes} nodes: RAY_ADDRESS={cluster.address}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cluster.shutdown()


if __name__ == "__main__":
    main()
