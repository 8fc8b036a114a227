#!/bin/sh
# sleepy: works and says so for ten seconds, then goes quiet for good. Its output also goes to the file given as $1,
# which the workload's output_activity probe watches: the monitor's verdict turns IDLE once nothing new is written.
out=${1:?usage: sleepy.sh OUTPUT_FILE}
mkdir -p "$(dirname "$out")"
: > "$out"
i=0
while [ "$i" -lt 10 ]; do
  i=$((i + 1))
  echo "sleepy: step $i" | tee -a "$out"
  sleep 1
done
echo "sleepy: waiting for work" | tee -a "$out"
exec sleep 1000000
