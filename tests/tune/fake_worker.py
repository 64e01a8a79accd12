"""A stand-in for ``kaon.tune.worker`` that speaks its protocol without training, so the
search's plumbing (reports, pruning, kills, GPUs, objectives) is tested in milliseconds.

Reads the job on stdin; prints one epoch line per epoch it trains (FAKE_TRAINED, as if
shortened to end in time; default: the spec's epochs) with the value FAKE_VALUE ("gpu": the
CUDA_VISIBLE_DEVICES it was given, as a number), sleeps FAKE_PAUSE seconds, writes
FAKE_MARKER (if set) and prints the final line (with FAKE_PARAMS, and FAKE_LATENCY when the
job asks for latency). FAKE_JOB: a file to copy the job into.
"""
import json
import os
import sys
import time
from pathlib import Path

job = json.loads(sys.stdin.readline())
if os.environ.get("FAKE_JOB"):
    Path(os.environ["FAKE_JOB"]).write_text(json.dumps(job))
given = os.environ.get("FAKE_VALUE", "0.5")
value = float(os.environ["CUDA_VISIBLE_DEVICES"] if given == "gpu" else given)
trained = min(int(os.environ.get("FAKE_TRAINED", job["spec"]["epochs"])),
              int(job["spec"]["epochs"]))
for epoch in range(1, trained + 1):
    print("KAON_TRIAL " + json.dumps({"epoch": epoch, "value": value, "epochs": trained}),
          flush=True)
time.sleep(float(os.environ.get("FAKE_PAUSE", "0")))
if os.environ.get("FAKE_MARKER"):
    Path(os.environ["FAKE_MARKER"]).write_text("ran to the end")
final = {"final": True, "value": value, "params": int(os.environ.get("FAKE_PARAMS", "1000")),
         "fit_seconds": 0.1,
         "epochs_trained": trained}
if job.get("latency"):
    final["latency_ms"] = float(os.environ.get("FAKE_LATENCY", "1.0"))
print("KAON_TRIAL " + json.dumps(final), flush=True)
