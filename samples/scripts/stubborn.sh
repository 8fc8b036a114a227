#!/bin/sh
# stubborn: ignores SIGTERM and forks children that ignore it too, one of them in a session of its own. A stop waits
# the grace, then kills the whole tree: nothing survives (platformctl stop, delete or restart).
trap '' TERM
sh -c "trap '' TERM; exec sleep 1000000" &
setsid sh -c "trap '' TERM; while :; do sleep 1; done" &
while :; do
  echo "stubborn: still here (pid $$, children $(pgrep -c -P $$))"
  sleep 2
done
