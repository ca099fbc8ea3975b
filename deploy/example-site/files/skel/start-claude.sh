#!/bin/sh
# ~/start-claude.sh, seeded from /etc/skel: launch Claude Code in your own clone.
# (Never a hard-coded /home/<someone else>/code.)
cd "$HOME/code" 2>/dev/null || cd "$HOME"
exec claude "$@"
