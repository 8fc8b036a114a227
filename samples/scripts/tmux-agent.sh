#!/bin/sh
# tmux-agent: a tmux pane that prints like a coding agent at work, then waits for input, then shows a rate-limit
# message and drops to a shell prompt: the monitor's tmux_pane probe says IDLE by pattern, then UNHEALTHY by pattern,
# and the supervisor restarts it. The workload lives as long as its tmux session; its tmux server (socket $1) is in
# the instance's process tree, so a stop takes it too. Usage: tmux-agent.sh SOCKET [SESSION]
socket=${1:?usage: tmux-agent.sh SOCKET [SESSION]}
session=${2:-agent}
mkdir -p "$(dirname "$socket")"
tmux -S "$socket" kill-session -t "$session" 2>/dev/null
tmux -S "$socket" new-session -d -s "$session" -x 120 -y 30 "sh '$(dirname "$0")/tmux-agent-pane.sh'"
while tmux -S "$socket" has-session -t "$session" 2>/dev/null; do sleep 1; done
