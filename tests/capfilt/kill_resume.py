#!/usr/bin/env python3
"""SIGKILL blip-capfilt in the middle of a run, rerun the same command, and compare with an
uninterrupted run: the outputs must be identical, byte for byte. Done for a JSON Lines
input (chunks) and for WebDataset shards.

Usage: kill_resume.py BLIP_CAPFILT BLIP_CONVERT GOLDEN_DIR SCRATCH_DIR
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

KILL_TIMEOUT = 120  # seconds to wait for the first finished chunks before giving up


def run(command, log_path):
    with open(log_path, "w") as log:
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode


def run_and_kill(command, log_path, finished, wanted):
    """Start `command`, SIGKILL it once finished() counts `wanted` completed units, and
    return how many had completed by then."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + KILL_TIMEOUT
        while finished() < wanted:
            if process.poll() is not None:
                raise SystemExit(f"FAIL: the run ended (status {process.returncode}) before it could be killed; "
                                 f"see {log_path}")
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"FAIL: no {wanted} finished units after {KILL_TIMEOUT} s; see {log_path}")
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.returncode != -signal.SIGKILL:
            raise SystemExit(f"FAIL: the run exited with {process.returncode} before SIGKILL reached it")
        return finished()


def check(condition, message):
    if not condition:
        raise SystemExit("FAIL: " + message)
    print("ok:", message)


def list_input(capfilt, models, golden, scratch):
    folder = data.fresh(os.path.join(scratch, "list"))
    pairs = data.make_list_dataset(golden, folder, 120)
    extra = ["--chunk-size", "8", "--threads", "2"]

    reference = os.path.join(folder, "reference.jsonl")
    check(run(data.capfilt_command(capfilt, models, reference, [pairs], extra),
              os.path.join(folder, "reference.log")) == 0, "uninterrupted list run succeeds")

    output = os.path.join(folder, "killed.jsonl")
    command = data.capfilt_command(capfilt, models, output, [pairs], extra)
    work = output + ".work"
    done = run_and_kill(command, os.path.join(folder, "killed.log"),
                        lambda: len(glob.glob(os.path.join(work, "chunk-*.jsonl"))), 3)
    check(not os.path.exists(output), f"no output after the kill ({done} of 15 chunks were done)")
    check(done < 15, "the kill came before the last chunk")

    check(run(command, os.path.join(folder, "resumed.log")) == 0, "rerun after SIGKILL succeeds")
    with open(os.path.join(folder, "resumed.log")) as log:
        resumed = log.read()
    kept = re.search(r"(\d+) already done", resumed)
    check(kept is not None and int(kept.group(1)) == done,
          f"the rerun kept the {done} chunks finished before the kill")
    check(data.read(output) == data.read(reference), "resumed output equals the uninterrupted output")
    check(not os.path.exists(work), "the work folder is gone after completion")


def wds_input(capfilt, models, golden, scratch):
    folder = data.fresh(os.path.join(scratch, "wds"))
    shards = data.make_wds_dataset(golden, folder, 5, 8)
    extra = ["--threads", "2"]

    reference = os.path.join(folder, "reference")
    check(run(data.capfilt_command(capfilt, models, reference, [shards], extra),
              os.path.join(folder, "reference.log")) == 0, "uninterrupted WebDataset run succeeds")

    output = os.path.join(folder, "killed")
    command = data.capfilt_command(capfilt, models, output, [shards], extra)
    done = run_and_kill(command, os.path.join(folder, "killed.log"),
                        lambda: len(glob.glob(os.path.join(output, "shard-*.tar"))), 2)
    check(done < 5, f"the kill came before the last shard ({done} of 5 were done)")

    check(run(command, os.path.join(folder, "resumed.log")) == 0, "rerun after SIGKILL succeeds")
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(reference, "shard-*.tar")))
    check(names == [f"shard-{i:03d}.tar" for i in range(5)], "every input shard has an output shard")
    for name in names:
        check(data.read(os.path.join(output, name)) == data.read(os.path.join(reference, name)),
              f"{name} equals the uninterrupted run's")
    check(not glob.glob(os.path.join(output, ".*.tmp-*")), "no temporary files are left")


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    capfilt, convert, golden, scratch = sys.argv[1:]
    golden = data.golden_dir(golden)
    data.fresh(scratch)
    models = data.convert_models(convert, golden, scratch)
    list_input(capfilt, models, golden, scratch)
    wds_input(capfilt, models, golden, scratch)
    print("2 passed, 0 failed")


if __name__ == "__main__":
    main()
