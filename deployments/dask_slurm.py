"""Start a Dask cluster on SLURM with dask-jobqueue and print its address for fvcflow.

    pip install dask-jobqueue
    python deployments/dask_slurm.py --jobs 8 --cores 16 --memory 64GB --queue gpu
    fvc run --dask-address tcp://...   (or FVC_DASK_ADDRESS=tcp://... for the served deployments)

Each SLURM job runs one worker process per core group with one Numba thread per worker thread.
Not run in CI (no SLURM here).
"""

import argparse
import time

from fvcflow.engine import worker_env


def main() -> None:
    from dask_jobqueue import SLURMCluster  # an optional, at-scale dependency; installed by the user

    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--cores", type=int, default=16)
    p.add_argument("--processes", type=int, default=8, help="worker processes per job")
    p.add_argument("--memory", default="64GB")
    p.add_argument("--queue", default=None)
    p.add_argument("--walltime", default="04:00:00")
    a = p.parse_args()
    threads = max(1, a.cores // a.processes)
    env = [f"export {k}={v}" for k, v in worker_env(threads).items()]
    cluster = SLURMCluster(cores=a.cores, processes=a.processes, memory=a.memory, queue=a.queue,
                           walltime=a.walltime, job_script_prologue=env)
    cluster.scale(jobs=a.jobs)
    print(cluster.scheduler_address, flush=True)
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        cluster.close()


if __name__ == "__main__":
    main()
