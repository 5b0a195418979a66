#!/bin/sh
#
# A long libFuzzer run over every target, one at a time (docs/fuzzing.md).
#
#   scripts/fuzz-long.sh [-b BUILD_DIR] [-w WORK_DIR] TOTAL_SECONDS [TARGET...]
#
# TOTAL_SECONDS is split evenly over the targets (all of them, or those
# named). Each fuzzes its share over a scratch copy of its seed corpus in
# WORK_DIR (default: a new directory under ${TMPDIR:-/tmp}), so the tree's
# corpus is never changed; the grown corpora, each target's libFuzzer log
# and any crash, leak, timeout or out-of-memory input stay in WORK_DIR.
# A target that finds one is started again on its grown corpus for the
# rest of its share (at most FUZZ_LONG_RESTARTS times, default 5), so one
# finding does not end its run.
#
# BUILD_DIR (default: build-fuzz) is a clang build with --enable-fuzzing:
#   mkdir build-fuzz && cd build-fuzz && ../configure --enable-fuzzing CC=clang
#   make tests/fuzz/fuzz_<target> ...
#
# Per target it prints the seconds it ran, executions, executions a second,
# coverage (libFuzzer's final cov: edges and ft: features), the corpus at
# the end (inputs and bytes) and the findings; then a total. Exit 1 if any
# target found something, 2 on a usage error. The machine is shared: run
# it under nice, e.g.
#   nice -n 19 scripts/fuzz-long.sh 3600 > /work/fuzz-long.log 2>&1 &

usage() {
	echo "usage: $0 [-b build_dir] [-w work_dir] total_seconds [target ...]" >&2
	exit 2
}

top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build-fuzz
work=
while getopts b:w: opt; do
	case $opt in
	b)	build=$OPTARG ;;
	w)	work=$OPTARG ;;
	*)	usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
total=$1
shift
case $total in
''|*[!0-9]*) usage ;;
esac

# Every target, in the order replay-all.sh runs them: its own list (the
# targets= lines), so a target added there is fuzzed here too.
all=$(targets=; eval "$(grep '^targets=' "$top/tests/fuzz/replay-all.sh")";
    echo $targets)
targets=${*:-$all}
n=0
for t in $targets; do
	if [ ! -x "$build/tests/fuzz/fuzz_$t" ]; then
		echo "fuzz-long: no $build/tests/fuzz/fuzz_$t (build it first)" >&2
		exit 2
	fi
	n=$((n + 1))
done
share=$((total / n))
[ $share -ge 1 ] || share=1
restarts_max=${FUZZ_LONG_RESTARTS:-5}

if [ -z "$work" ]; then
	work=$(mktemp -d "${TMPDIR:-/tmp}/sbx-fuzz-long.XXXXXX") || exit 1
fi
mkdir -p "$work" || exit 1

now() { date +%s; }
# The last value of a libFuzzer "key: value" field in a log.
field() {
	grep -o "$2: [0-9]*" "$1" | tail -n 1 | sed 's/.*: //'
}
# Executions in one run's log: its final stats, or the last status line
# when it stopped on a finding before printing them.
execs_of() {
	e=$(grep '^stat::number_of_executed_units:' "$1" | awk '{ print $2 }')
	[ -n "$e" ] || e=$(grep -o '^#[0-9]*' "$1" | tail -n 1 | tr -d '#')
	echo "${e:-0}"
}

echo "fuzz-long: $n targets, $share s each, ${total} s in all; work dir $work"
echo "fuzz-long: started $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
printf '%-16s %6s %12s %8s %6s %7s %8s %9s %s\n' target seconds executions \
    exec/s cov ft inputs bytes findings
tot_exec=0
tot_find=0
for t in $targets; do
	corpus=$work/corpus-$t
	log=$work/$t.log
	mkdir -p "$corpus" "$work/findings"
	if [ -d "$top/tests/fuzz/corpus/$t" ]; then
		cp "$top/tests/fuzz/corpus/$t"/* "$corpus"/ 2>/dev/null
	fi
	: > "$log"
	start=$(now)
	restarts=0
	execs=0
	while :; do
		left=$((share - ($(now) - start)))
		[ $left -ge 1 ] || break
		# -close_fd_mask is not used: a crash report must reach the log.
		"$build/tests/fuzz/fuzz_$t" -max_total_time=$left -timeout=10 \
		    -print_final_stats=1 -detect_leaks=1 \
		    -artifact_prefix="$work/findings/$t-" "$corpus" \
		    >"$log.run" 2>&1
		rc=$?
		execs=$((execs + $(execs_of "$log.run")))
		cat "$log.run" >>"$log"
		rm -f "$log.run"
		[ $rc = 0 ] && break
		restarts=$((restarts + 1))
		[ $restarts -gt "$restarts_max" ] && break
	done
	secs=$(($(now) - start))
	[ $secs -ge 1 ] && rate=$((execs / secs)) || rate=$execs
	cov=$(field "$log" cov)
	ft=$(field "$log" ft)
	inputs=$(ls "$corpus" | wc -l)
	bytes=$(cat "$corpus"/* 2>/dev/null | wc -c)
	found=$(ls "$work/findings" 2>/dev/null | grep -c "^$t-")
	printf '%-16s %6d %12d %8d %6s %7s %8d %9d %d\n' "$t" "$secs" \
	    "$execs" "$rate" "${cov:-?}" "${ft:-?}" "$inputs" "$bytes" "$found"
	tot_exec=$((tot_exec + execs))
	tot_find=$((tot_find + found))
done
echo "fuzz-long: ended $(date -u '+%Y-%m-%d %H:%M:%S UTC'):" \
    "$tot_exec executions, $tot_find findings"
if [ $tot_find -gt 0 ]; then
	ls "$work/findings" | sed "s|^|fuzz-long: finding: $work/findings/|"
	exit 1
fi
exit 0
