#!/bin/bash
# How the mini-x4 grid of docs/results-kd.md is run on this 2-core CPU (not part of srkd):
#   git worktree add --detach /work/runs/frozen 2542fd0   # the frozen checkout every run used
#   srkd bench examples/protocols/mini-x4.yaml --out /work/runs/mini-x4 --print-commands > all.txt
#   (order the missing runs into /work/runs/commands-ordered.txt)
#   cd /work/runs && (nohup nice -n 19 bash grid.sh >> grid.log 2>&1 &)
# Runs the mini-x4 runs still missing, one at a time, from the frozen checkout (2542fd0).
# Each turn re-reads commands-ordered.txt (so the order can be edited while it runs), waits for
# any srkd distill already running, then starts the first run without summary.json (srkd distill
# resumes an interrupted run from its checkpoint). A run that fails is not retried.
export SRKD_DATA=/work/shared/data HF_HUB_OFFLINE=1 PYTHONPATH=/work/runs/frozen
cd /work/runs
: > failed.txt
while true; do
  while pgrep -f "python -m srkd distill" > /dev/null; do sleep 20; done
  line=""
  while IFS= read -r l; do
    out=$(echo "$l" | sed -E 's/.*--out ([^ ]+).*/\1/')
    [ -f "$out/summary.json" ] && continue
    grep -qxF "$out" failed.txt && continue
    line=$l; break
  done < commands-ordered.txt
  [ -z "$line" ] && break
  echo "$(date -u +%FT%TZ) start $out"
  t0=$(date +%s)
  eval "python -m srkd ${line#srkd }" < /dev/null
  rc=$?
  [ $rc -ne 0 ] && echo "$out" >> failed.txt
  echo "$(date -u +%FT%TZ) end rc=$rc $out $(( $(date +%s) - t0 ))s"
done
echo "$(date -u +%FT%TZ) grid done"
