#!/usr/bin/env bash
# leakcheck.sh — run a command and report the host state it left behind.
#
#   hack/leakcheck.sh [--] command [args...]   snapshot, run, snapshot, print what is new
#   hack/leakcheck.sh --snapshot               print the trellis host state there is now
#
# The state looked at is what trellis test suites, benches and dev clusters create on the host
# and must remove again: iptables rules and chains (nat and filter; trellis comments, TRELLIS-*
# and CNI-* chains), mounts and loop devices (overlays, ext4 volumes, netns bind mounts),
# cgroups (any controller, up to three levels under a trellis-named one), network links (trellis
# bridges tr*/trd*, veths on them), processes still in a trellis cgroup, dev cluster cell dirs
# under /var/lib/trellis/dev, and trellis-named or test temp dirs in $TMPDIR.
#
# It prints each new item and exits 1 when the command left anything behind; otherwise it exits
# with the command's status. It must run as root (iptables-save, losetup). Other processes
# changing the host while the command runs (another engineer's tests) show up too: their items
# carry their own names (process ids, hashes), so read the list before blaming the command.
#
# LEAKCHECK_SETTLE (seconds, default 2): wait before the second snapshot, so that processes
# the command killed have gone and their cgroups can be seen as empty.
set -uo pipefail

name_re='trellis|TRELLIS-|CNI-'
tmp="${TMPDIR:-/tmp}"

snapshot() {
	# iptables: the chains (counters dropped) and rules of ours, per table.
	local table
	for table in nat filter; do
		iptables-save -t "$table" 2>/dev/null |
			grep -E "$name_re" |
			sed -E 's/ \[[0-9]+:[0-9]+\]$//; s/^/iptables '"$table"' /'
	done
	# mounts: anything mounted under a trellis path, a test temp dir, or a short agent-test
	# state dir (/tmp/tra<N>).
	awk '{print $5, $9, $10}' /proc/self/mountinfo |
		grep -E "trellis|^$tmp/(Test|tr[a-z]?[0-9])" |
		sed 's/^/mount /'
	# loop devices, by backing file.
	losetup -l -n -O BACK-FILE 2>/dev/null |
		grep -E "trellis|$tmp/" |
		sed 's/^ *//; s/^/loop /'
	# cgroups: one line per path, whatever controllers hold it.
	local root
	for root in $(awk '$9 == "cgroup" || $9 == "cgroup2" {print $5}' /proc/self/mountinfo | sort -u); do
		find "$root" -mindepth 1 -maxdepth 4 -type d -path '*trellis*' 2>/dev/null |
			sed "s|^$root||"
	done | sort -u | sed 's/^/cgroup /'
	# processes in a trellis cgroup (container inits and their children, pooled inits).
	local p cg
	for p in /proc/[0-9]*; do
		cg=$(grep -m1 -E '(memory|pids|0::).*trellis' "$p/cgroup" 2>/dev/null) || continue
		echo "proc ${p#/proc/} $(cat "$p/comm" 2>/dev/null) ${cg#*::}"
	done
	# links: trellis bridges (tr*) and the veths attached to them.
	ip -o link show 2>/dev/null |
		awk -F': ' '{split($2, n, "@"); print n[1], $0}' |
		grep -E '^(tr|trellis)|master tr' |
		awk '{print "link", $1}'
	# dev clusters' cell dirs, and temp dirs of trellis tests and benches.
	if [ -d /var/lib/trellis/dev ]; then
		find /var/lib/trellis/dev -mindepth 1 -maxdepth 1 | sed 's/^/dir /'
	fi
	find "$tmp" -mindepth 1 -maxdepth 1 -regextype egrep \
		-regex "$tmp/(.*trellis.*|tr[a-z]?[0-9]+|Test.*)" 2>/dev/null | sed 's/^/dir /'
}

if [ "$(id -u)" != 0 ]; then
	echo "leakcheck: must run as root (iptables-save, losetup)" >&2
	exit 2
fi
if [ "${1:-}" = "--snapshot" ]; then
	snapshot | sort
	exit 0
fi
[ "${1:-}" = "--" ] && shift
if [ $# -eq 0 ]; then
	sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
snapshot | sort -u >"$work/before"
start=$(date +%s)
"$@"
status=$?
elapsed=$(($(date +%s) - start))
sleep "${LEAKCHECK_SETTLE:-2}"
snapshot | sort -u >"$work/after"
comm -13 "$work/before" "$work/after" >"$work/new"

if [ -s "$work/new" ]; then
	echo "leakcheck: '$*' (exit $status, ${elapsed}s) left behind $(wc -l <"$work/new") item(s):"
	sed 's/^/  /' "$work/new"
	exit 1
fi
echo "leakcheck: '$*' (exit $status, ${elapsed}s) left nothing behind"
exit "$status"
