#!/bin/sh
# What tmux-agent.sh's pane runs: a coding agent's screen, compressed to half a minute.
for step in "Reading the repository" "Planning: 3 files to change" "Editing src/service.py" "Running the tests: 41 passed" "Editing tests/test_service.py"; do
  echo "* $step"
  sleep 2
done
echo "> Waiting for your input"
sleep 8
echo "Error: rate limit reached (429). Resets in 5h."
sleep 2
PS1='$ ' exec sh -i
