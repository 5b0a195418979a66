#!/bin/sh
#
# The fuzz targets under `make check`, in two parts:
#  1. always: the corpus replays tests/fuzz/replay_<target> (built by make
#     check as check_PROGRAMS; each runs its target on the seed corpus and
#     on fixed pseudo-random mutations of it, no clang needed);
#  2. only when FUZZ_SECONDS is set and the clang builds exist (./configure
#     --enable-fuzzing CC=clang, see docs/fuzzing.md): each libFuzzer target
#     fuzzes FUZZ_SECONDS seconds over a scratch copy of its corpus, so the
#     tree's corpus is never touched, FUZZ_JOBS targets at a time (default:
#     one per CPU). A crash leaves its input in
#     tests/fuzz/crash-<target>-* under the build directory.
# Exit 77 (skipped) when neither part had anything to run.

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-.}
export top_srcdir top_builddir
targets="http_request http_response http_chunked config token cookie route h2 pty_frame"

# control/task.c's event converter (kept apart so the lists merge)
targets="$targets task_event"
# control/terminal.c's resize message
targets="$targets term_resize"
# control/provider.c's usage scanner
targets="$targets usage_scan"
# edge/console.c's paths and If-None-Match
targets="$targets console"
# issue 10: the API's JSON bodies, workspace paths, agentd's protocol
# (both ends) and the Docker client's answers
targets="$targets api_body workspace_path agentd_request agent_answer"
targets="$targets docker_response"
passed=0
failed=0
ran=0

for t in $targets; do
	bin=$top_builddir/tests/fuzz/replay_$t
	if [ ! -x "$bin" ]; then
		echo "replay-all: $t: no $bin, not replayed"
		continue
	fi
	"$bin"
	rc=$?
	case $rc in
	0)	passed=$((passed + 1)); ran=1 ;;
	77)	echo "replay-all: $t: replay skipped" ;;
	*)	failed=$((failed + 1)); ran=1
		echo "replay-all: $t: replay FAILED (exit $rc)" ;;
	esac
done

fuzzers=0
for t in $targets; do
	[ -x "$top_builddir/tests/fuzz/fuzz_$t" ] && fuzzers=1
done
if [ -z "$FUZZ_SECONDS" ]; then
	echo "replay-all: FUZZ_SECONDS not set: libFuzzer runs skipped"
	fuzzers=0
elif [ $fuzzers = 0 ]; then
	echo "replay-all: no fuzz_* binaries (configure --enable-fuzzing" \
	    "CC=clang): libFuzzer runs skipped"
fi
case $FUZZ_SECONDS in
*[!0-9]*)
	echo "replay-all: FUZZ_SECONDS must be a number of seconds" >&2
	exit 1
	;;
esac

# fuzz_one T: fuzz target T (built) for FUZZ_SECONDS over its scratch
# corpus; its exit status is left in $scratch/T.rc for the report.
fuzz_one() {
	"$top_builddir/tests/fuzz/fuzz_$1" -max_total_time="$FUZZ_SECONDS" \
	    -timeout=10 -print_final_stats=1 \
	    -artifact_prefix="$top_builddir/tests/fuzz/crash-$1-" \
	    "$scratch/$1" >"$scratch/$1.log" 2>&1
	echo $? >"$scratch/$1.rc"
}

if [ $fuzzers = 1 ]; then
	scratch=$(mktemp -d "${TMPDIR:-/tmp}/sbx-fuzz.XXXXXX") || exit 1
	trap 'rm -rf "$scratch"' EXIT
	# Stopped: the fuzzers in the background stop too, and nothing after.
	trap 'kill $(jobs -p) 2>/dev/null; exit 130' INT
	trap 'kill $(jobs -p) 2>/dev/null; exit 143' TERM
	# The targets are independent: FUZZ_JOBS of them at a time (default
	# one per CPU), each for FUZZ_SECONDS, reported in order after.
	fuzz_jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
	case $fuzz_jobs in
	''|*[!0-9]*|0)
		echo "replay-all: FUZZ_JOBS must be a positive number" >&2
		exit 1
		;;
	esac
	echo "replay-all: fuzzing each target for $FUZZ_SECONDS s," \
	    "$fuzz_jobs at a time"
	running=0
	for t in $targets; do
		if [ ! -x "$top_builddir/tests/fuzz/fuzz_$t" ]; then
			# Some fuzzers are built, so this one should be too.
			echo "replay-all: $t: no fuzz_$t, not fuzzed: FAILED"
			failed=$((failed + 1))
			continue
		fi
		ran=1
		mkdir -p "$scratch/$t"
		if [ -d "$top_srcdir/tests/fuzz/corpus/$t" ]; then
			cp "$top_srcdir/tests/fuzz/corpus/$t"/* "$scratch/$t"/ \
			    2>/dev/null
		fi
		fuzz_one "$t" &
		running=$((running + 1))
		if [ $running -ge "$fuzz_jobs" ]; then
			wait
			running=0
		fi
	done
	wait
	for t in $targets; do
		# Counted already: no binary.
		[ -x "$top_builddir/tests/fuzz/fuzz_$t" ] || continue
		if [ ! -f "$scratch/$t.rc" ]; then
			failed=$((failed + 1))
			echo "replay-all: $t: fuzzing FAILED: no exit status"
		elif [ "$(cat "$scratch/$t.rc")" = 0 ]; then
			passed=$((passed + 1))
			grep -E '^stat::number_of_executed_units' \
			    "$scratch/$t.log" | sed "s/^/replay-all: $t: /"
		else
			failed=$((failed + 1))
			echo "replay-all: $t: fuzzing FAILED; end of its log:"
			tail -n 40 "$scratch/$t.log"
			ls "$top_builddir/tests/fuzz/crash-$t-"* 2>/dev/null |
			    sed 's/^/replay-all: crash input: /'
		fi
	done
fi

if [ $ran = 0 ]; then
	echo "replay-all: nothing to run: skipped"
	exit 77
fi
echo "$passed passed, $failed failed"
[ $failed = 0 ]
