#!/usr/bin/env python3
"""Fan blip-capfilt out over a Dask distributed LocalCluster on loopback, one task per
shard (--shard I/N). The worker that runs one task is killed in the middle of its run, and
Dask retries the task on a restarted worker. The merged parts must equal a single-process
run, byte for byte.

Usage: dask_shards.py BLIP_CAPFILT BLIP_CONVERT GOLDEN_DIR SCRATCH_DIR
Needs Debian's python3-distributed; exits with 77 (skipped) without it.
"""

import glob
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import capfilt_data as data  # noqa: E402

SHARDS = 4
KILLED_SHARD = 1


def run_shard(command, work, marker, kill):
    """A Dask task: runs one part of the job. With `kill` set and no `marker` yet, it waits
    for the part's first finished chunks, then SIGKILLs blip-capfilt and its own worker
    process, as a machine crash would."""
    if kill and not os.path.exists(marker):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(glob.glob(os.path.join(work, "chunk-*.jsonl"))) < 2:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                return {"status": -1, "log": "the killed task's run ended before the kill"}
            time.sleep(0.005)
        with open(marker, "w") as f:
            f.write("killed\n")
        process.send_signal(signal.SIGKILL)
        process.wait()
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies with the task
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return {"status": result.returncode, "log": result.stdout}


def check(condition, message):
    if not condition:
        raise SystemExit("FAIL: " + message)
    print("ok:", message)


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        print("skipped: dask.distributed is not installed (apt-get install python3-distributed)")
        sys.exit(data.SKIP)
    capfilt, convert, golden, scratch = sys.argv[1:]
    golden = data.golden_dir(golden)
    data.fresh(scratch)
    models = data.convert_models(convert, golden, scratch)
    pairs = data.make_list_dataset(golden, scratch, 96)
    extra = ["--chunk-size", "4", "--threads", "1"]

    reference = os.path.join(scratch, "single.jsonl")
    with open(os.path.join(scratch, "single.log"), "w") as log:
        status = subprocess.run(data.capfilt_command(capfilt, models, reference, [pairs], extra),
                                stdout=log, stderr=subprocess.STDOUT).returncode
    check(status == 0, "single-process run succeeds")

    parts = [os.path.join(scratch, f"part-{i}.jsonl") for i in range(SHARDS)]
    marker = os.path.join(scratch, "killed.marker")
    # Workers listen on loopback only; no dashboard.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=40) as cluster, Client(cluster) as client:
        futures = []
        for i in range(SHARDS):
            command = data.capfilt_command(capfilt, models, parts[i], [pairs], extra + ["--shard", f"{i}/{SHARDS}"])
            futures.append(client.submit(run_shard, command, parts[i] + ".work", marker, i == KILLED_SHARD,
                                         key=f"capfilt-shard-{i}", pure=False, retries=2))
        results = client.gather(futures)

    check(os.path.exists(marker), f"the task of shard {KILLED_SHARD} was killed with its worker")
    for i, result in enumerate(results):
        check(result["status"] == 0, f"shard {i} finished (status {result['status']})")
    kept = re.search(r"(\d+) already done", results[KILLED_SHARD]["log"])
    check(kept is not None and int(kept.group(1)) >= 2,
          f"the retried task of shard {KILLED_SHARD} kept the chunks of the killed attempt")

    merged = os.path.join(scratch, "merged.jsonl")
    status = subprocess.run([capfilt, "merge", "-o", merged, *parts]).returncode
    check(status == 0, "merge succeeds")
    check(data.read(merged) == data.read(reference), "merged output equals the single-process run")
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
