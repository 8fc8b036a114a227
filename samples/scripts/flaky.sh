#!/bin/sh
# flaky: works for two to six seconds, then crashes (exit 1). Under the supervisor its restarts, the backoff between
# them and, after five within the window, the cool-off are visible (platformctl describe workload flaky).
echo "flaky: generation ${PLATFORM_GENERATION:-?} starting"
n=$(( $(od -An -N1 -tu1 /dev/urandom) % 5 + 2 ))
i=0
while [ "$i" -lt "$n" ]; do
  i=$((i + 1))
  echo "flaky: working ($i of $n)"
  sleep 1
done
echo "flaky: something broke" >&2
exit 1
