#!/bin/busybox sh
# PID 1 of the `cargo xtask vm-test` guest. It speaks to the host in console lines:
#   @@vm check MODE TOOL pass|fail TEXT   one check (the host counts these)
#   @@vm note TEXT                        why the check above failed
#   @@vm insns MODE TOOL startup=S TYPE:N...  start-up (s) and instructions verified per
#                                         program pfault loaded
#   @@vm done                             every check ran
# A tool is tested by one function, check_TOOL MODE, which runs it on the workloads (run_tool)
# and checks its output against their ground truth; add the tool to TOOLS.
#
# pfault's JSON is compact ({"ts_ns":..,"pid":..,...}), so events are matched with grep
# patterns, a field at a time and in any order: busybox awk is slow, line by line, under TCG.

MODES="fentry kprobe tracepoint"
TOOLS="trace stackcount unwind ffaults stat"
export ANON_PAGES=10000 DATA=/data/data.bin
# Stack walks and symbols cost more: fewer pages for the run with -U -K.
STACK_PAGES=500
# Many times what a pfault run takes under TCG: one that takes this long has hung.
RUN_TIMEOUT=120

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# tracefs is left unmounted: mounting it is pfault's own job.

note() { echo "@@vm note $*"; }

# The virtio disk: major faults need a page cache that a block device backs.
for m in $(cat /modules/order); do
    insmod "/modules/$m.ko" || note "insmod $m failed"
done
mkdir -p /data
mount -t ext4 -o ro /dev/vda /data || note "cannot mount /dev/vda, the disk holding $DATA"

# verdict MODE TOOL PROBLEMS TEXT: the check's line, and its problems as notes ("" = pass).
verdict() {
    if [ -z "$3" ]; then
        echo "@@vm check $1 $2 pass $4"
    else
        echo "@@vm check $1 $2 fail $4"
        echo "$3" | while IFS= read -r l; do note "$l"; done
    fi
}

# within A B: A is within 1% of B, and B is not 0.
within() {
    [ "$2" -gt 0 ] && [ $((($1 > $2 ? $1 - $2 : $2 - $1) * 100)) -le "$2" ]
}

# kv KEY FILE: the value of the KEY=VALUE a workload printed.
kv() { tr ' ' '\n' <"$2" | sed -n "s/^$1=//p" | head -n 1; }

# lacking FILE FIELD...: the lines of FILE that lack one of the FIELDs ("key":value patterns).
lacking() {
    file=$1
    shift
    for f; do grep -v -- "$f" "$file"; done | sort -u
}

# events PID LO HI <JSON: the events of PID at addresses in [LO, HI).
events() {
    grep -F "\"pid\":$1," |
        awk -v lo="$2" -v hi="$3" '{ a = substr($0, index($0, "\"addr\":") + 7) + 0 } a >= lo && a < hi'
}

# run_tool TOOL MODE ARGS...: `pfault TOOL --probe MODE ARGS -- /w/run DIR` in DIR=/tmp/TOOL-MODE
# (MODE `auto`: no --probe, pfault chooses). Sets $dir and leaves there the workloads' outputs
# (NAME.out) and pfault's (pfault.out, pfault.err); pfault's exit status in $status.
run_tool() {
    tool=$1 mode=$2
    shift 2
    dir=/tmp/$tool-$mode
    mkdir -p "$dir"
    probe="--probe $mode"
    [ "$mode" = auto ] && probe=
    # shellcheck disable=SC2086 # $probe is two words or none
    timeout $RUN_TIMEOUT pfault "$tool" $probe "$@" -- /w/run "$dir" \
        >"$dir/pfault.out" 2>"$dir/pfault.err"
    status=$?
}

# attached PID ERRFILE: waits until pfault (PID, started in the background) says its probe
# mode in ERRFILE, as it does once attached; false, and pfault stopped, where it exits first
# or takes RUN_TIMEOUT seconds.
attached() {
    waited=0
    until grep -q "probe mode" "$2" 2>/dev/null; do
        if [ $waited -ge $RUN_TIMEOUT ] || ! kill -0 "$1" 2>/dev/null; then
            kill "$1" 2>/dev/null
            wait "$1"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

# What went wrong with the last run_tool, for a failing check's notes.
run_problem() {
    echo "pfault exited with status $status; its stderr ends:"
    tail -n 5 "$dir/pfault.err"
}

check_probes() {
    pfault probes >/tmp/probes.out 2>&1
    status=$?
    problems=""
    for m in $MODES; do
        grep -q "^mode $m  *available" /tmp/probes.out || problems="$problems
$(grep "^mode $m " /tmp/probes.out || echo "no line for mode $m")"
    done
    grep -q "^kernel layout  *all " /tmp/probes.out || problems="$problems
$(grep "^kernel layout" /tmp/probes.out || echo "no kernel layout line")"
    [ "$status" = 0 ] || problems="$problems
pfault probes exited with status $status"
    # Left to choose, a tool takes the best mode: fentry here.
    auto=$(pfault trace -d 0 2>&1 >/dev/null | grep "probe mode")
    case $auto in
    "pfault: probe mode fentry"*) ;;
    *) problems="$problems
without --probe: $auto" ;;
    esac
    # The optional features this kernel lacks (a "(5.17)"-style line answered "no: ..."), and
    # the compat programs said at start exactly when one is missing.
    absent=$(sed -n 's/^\([^ ].*([0-9.]*)\)  *no: .*/\1/p' /tmp/probes.out | paste -sd, - | sed "s/,/, /g")
    case $auto in
    *"compat programs"*) compat=yes ;;
    *) compat=no ;;
    esac
    if [ -z "$absent" ] && [ $compat = yes ]; then
        problems="$problems
compat programs with nothing missing: $auto"
    elif [ -n "$absent" ] && [ $compat = no ]; then
        problems="$problems
$absent missing, but no compat programs: $auto"
    fi
    verdict - probes "${problems#?}" "$(echo "$MODES" | sed 's/ /, /g') available, kernel layout complete, fentry chosen by default, missing: ${absent:-nothing}"
}

check_trace() {
    mode=$1
    run_tool trace "$mode" -o json --output /tmp/trace-"$mode"/events.json
    if [ "$status" != 0 ]; then
        verdict "$mode" trace "$(run_problem)" "pfault trace on the workloads"
        return
    fi
    trace_anon "$mode"
    trace_file "$mode"
    trace_segv "$mode"
    trace_stacks "$mode"
}

# Fresh anonymous memory written a byte a page: one minor write fault per page, of a page not
# present, that sets no VM_FAULT_* bit.
trace_anon() {
    pid=$(kv pid "$dir/anon.out") minflt=$(kv minflt "$dir/anon.out")
    start=$(kv start "$dir/anon.out") end=$(kv end "$dir/anon.out")
    if [ -z "$pid" ] || [ -z "$minflt" ] || [ -z "$end" ]; then
        verdict "$1" trace "anon_writer printed: $(cat "$dir/anon.out")" "anon_writer: no ground truth"
        return
    fi
    events "$pid" "$start" "$end" <"$dir/events.json" >"$dir/anon.json"
    n=$(wc -l <"$dir/anon.json")
    odd=$(lacking "$dir/anon.json" '"access":"write"' '"mode":"user"' '"protection":false' \
        '"kind":"minor"' '"flags":\[\]' '"latency_ns":[1-9]' '"mapping":"\[anon\]"')
    twice=$(grep -o '"addr":[0-9]*' "$dir/anon.json" | sort | uniq -d | wc -l)
    problems=""
    within "$n" "$minflt" || problems="$problems
$n faults traced in the mapping, getrusage says $minflt"
    [ "$twice" = 0 ] || problems="$problems
$twice addresses faulted more than once"
    [ -z "$odd" ] || problems="$problems
$(echo "$odd" | wc -l) events are not write/user/not-present/minor/no flags/latency > 0/[anon], e.g.:
$(echo "$odd" | head -n 3)"
    verdict "$1" trace "${problems#?}" \
        "anon_writer: $n minor write faults on [anon], no flags, latency > 0 (getrusage minflt $minflt)"
}

# A file read through mmap after its page cache was dropped: one major read fault per page,
# with VM_FAULT_MAJOR on the handle_mm_fault paths (the tracepoint path never sees the
# VM_FAULT_* result: no flags).
trace_file() {
    case $1 in
    tracepoint) flags='\[\]' shown="flags []" ;;
    *) flags='\[[^]]*"MAJOR"[^]]*\]' shown="MAJOR in flags" ;;
    esac
    pid=$(kv pid "$dir/file.out") majflt=$(kv majflt "$dir/file.out")
    start=$(kv start "$dir/file.out") end=$(kv end "$dir/file.out")
    if [ -z "$pid" ] || [ -z "$majflt" ] || [ -z "$end" ]; then
        verdict "$1" trace "file_reader printed: $(cat "$dir/file.out")" "file_reader: no ground truth"
        return
    fi
    pages=$(($(wc -c <"$DATA") / 4096))
    events "$pid" "$start" "$end" <"$dir/events.json" | grep -F '"kind":"major"' >"$dir/file.json"
    n=$(wc -l <"$dir/file.json")
    odd=$(lacking "$dir/file.json" '"access":"read"' '"mode":"user"' '"protection":false' \
        '"kind":"major"' "\"flags\":$flags" '"latency_ns":[1-9]' "\"mapping\":\"$DATA\"")
    misplaced=$(awk -v lo="$start" '{
        a = substr($0, index($0, "\"addr\":") + 7) + 0
        o = substr($0, index($0, "\"offset\":") + 9) + 0
    } o != a - a % 4096 - lo' "$dir/file.json")
    problems=""
    [ "$majflt" -ge $((pages * 99 / 100)) ] || problems="$problems
the workload saw $majflt major faults for $pages pages: page cache not dropped?"
    within "$n" "$majflt" || problems="$problems
$n major faults traced in the mapping, getrusage says $majflt"
    [ -z "$odd" ] || problems="$problems
$(echo "$odd" | wc -l) events are not read/user/not-present/$shown/latency > 0/$DATA, e.g.:
$(echo "$odd" | head -n 3)"
    [ -z "$misplaced" ] || problems="$problems
$(echo "$misplaced" | wc -l) events have an offset that is not their page's in the file, e.g.:
$(echo "$misplaced" | head -n 3)"
    verdict "$1" trace "${problems#?}" \
        "file_reader: $n major read faults on $DATA at their offsets, $shown (getrusage majflt $majflt)"
}

# A write to an address no mapping holds: an error fault there, and the process killed.
trace_segv() {
    addr=$(kv addr "$dir/segv.out") died=$(kv status "$dir/segv.out")
    if [ -z "$addr" ]; then
        verdict "$1" trace "segv printed: $(cat "$dir/segv.out")" "segv: no ground truth"
        return
    fi
    hits=$(grep -F '"comm":"segv"' "$dir/events.json" | grep -F "\"addr\":$addr," |
        grep -F '"access":"write"' | grep -F '"mode":"user"' | grep -F '"kind":"error"' |
        grep -c -F '"mapping":"-"')
    problems=""
    [ "$died" = 139 ] || problems="$problems
segv's shell saw status $died, not 139 (128 + SIGSEGV)"
    [ "$hits" = 1 ] || problems="$problems
$hits write/user error faults of segv at $addr with no mapping, not 1; its events:
$(grep '"comm":"segv"' "$dir/events.json" | tail -n 3)"
    verdict "$1" trace "${problems#?}" "segv: $hits error write fault at $addr (status $died)"
}

# Stacks are taken when a fault completes: on the handle_mm_fault paths, inside its fexit or
# kretprobe, where a stack walk that faults must not disturb the fault being finished. The
# anon_writer with -U -K: no error faults at all, one minor fault per page of its mapping, each
# with a user stack that starts at the faulting ip and goes on to touch_pages' caller, and on
# the handle_mm_fault paths a kernel stack through do_user_addr_fault (the tracepoint path
# completes in a perf event that holds only the user registers: no kernel stack).
trace_stacks() {
    dir=/tmp/trace-$1-stacks
    mkdir -p "$dir"
    timeout $RUN_TIMEOUT pfault trace -o json -U -K --probe "$1" --output "$dir/events.json" \
        -- /w/anon_writer $STACK_PAGES >"$dir/anon.out" 2>"$dir/pfault.err"
    status=$?
    pid=$(kv pid "$dir/anon.out") minflt=$(kv minflt "$dir/anon.out")
    start=$(kv start "$dir/anon.out") end=$(kv end "$dir/anon.out")
    if [ "$status" != 0 ] || [ -z "$pid" ] || [ -z "$minflt" ] || [ -z "$end" ]; then
        verdict "$1" trace "$(run_problem)" "-U -K: anon_writer: no ground truth"
        return
    fi
    case $1 in
    tracepoint) kstack='' shown="" ;;
    *) kstack='"kstack":\[.*"symbol":"do_user_addr_fault"' shown=", kernel stacks through do_user_addr_fault" ;;
    esac
    # Before 5.15 a kretprobe's kernel stack may end at its trampoline; pfault says so.
    trampoline=''
    if [ "$1" = kprobe ] && grep -q "may end at kretprobe_trampoline" "$dir/pfault.err"; then
        trampoline='"kstack":\[{"addr":[0-9]*,"symbol":"kretprobe_trampoline"'
        shown="$shown or cut at kretprobe_trampoline as pfault said"
    fi
    errors=$(grep -F "\"pid\":$pid," "$dir/events.json" | grep '"kind":"error"')
    events "$pid" "$start" "$end" <"$dir/events.json" >"$dir/anon.json"
    n=$(wc -l <"$dir/anon.json")
    odd=$(awk '{
        ip = substr($0, index($0, "\"ip\":") + 5) + 0
        u = index($0, "\"ustack\":")
        ustack = substr($0, u, index($0, "\"kstack\":") - u)
        leaf = substr(ustack, index(ustack, "\"addr\":") + 7) + 0
        frames = gsub(/\{"addr":/, "", ustack)
    } !/"kind":"minor"/ || leaf != ip || frames < 2' "$dir/anon.json")
    nokstack=""
    [ -z "$kstack" ] || nokstack=$(grep -v -e "$kstack" -e "${trampoline:-$kstack}" "$dir/anon.json")
    problems=""
    [ -z "$errors" ] || problems="$problems
$(echo "$errors" | wc -l) error faults, e.g.:
$(echo "$errors" | head -n 2 | cut -c 1-600)"
    within "$n" "$minflt" || problems="$problems
$n faults traced in the mapping, getrusage says $minflt"
    [ -z "$odd" ] || problems="$problems
$(echo "$odd" | wc -l) events are not minor with a user stack from ip on, e.g.:
$(echo "$odd" | head -n 2 | cut -c 1-600)"
    [ -z "$nokstack" ] || problems="$problems
$(echo "$nokstack" | wc -l) events have no kernel stack through do_user_addr_fault, e.g. (from their kstack on):
$(echo "$nokstack" | head -n 2 | sed 's/.*"kstack"/"kstack"/' | cut -c 1-600)"
    verdict "$1" trace "${problems#?}" \
        "-U -K: anon_writer: no errors, $n minor faults, user stacks from ip on$shown (getrusage minflt $minflt)"
}

# number KEY <JSON: the number after "KEY": in the (first) line.
number() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" | head -n 1; }

# sum_counts <JSON: the sum of every line's "count".
sum_counts() { sed -n 's/.*"count":\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }'; }

# counts_verdict MODE TOOL WHAT ACTUAL EXPECTED ...: pass when every ACTUAL is within 1% of
# its EXPECTED (pairs after WHAT), with the numbers in the line.
counts_verdict() {
    mode=$1 tool=$2 what=$3
    shift 3
    problems="" shown=""
    while [ $# -ge 2 ]; do
        a=${1:-0} e=${2:-0}
        within "$a" "$e" || problems="$problems
counted $a where the workload's getrusage says $e"
        shown="$shown $a/$e"
        shift 2
    done
    verdict "$mode" "$tool" "${problems#?}" "$what (pfault/getrusage:$shown)"
}

# Counts per stack: the stack ending in the function that faults is named and counted.
check_stackcount() {
    run_tool stackcount "$1" -U -P -o json --output /tmp/stackcount-"$1"/stacks.json
    if [ "$status" != 0 ]; then
        verdict "$1" stackcount "$(run_problem)" "pfault stackcount on the workloads"
        return
    fi
    # Summed over the stacks that end there: a program started by a shell gets its unwind
    # table when it first faults, and its first faults are walked by frame pointer.
    anon=$(grep -F '"comm":"anon_writer"' "$dir/stacks.json" | grep -F '"kind":"minor"' |
        grep -E '"ustack":\[\{[^}]*"symbol":"touch_pages"' | sum_counts)
    file=$(grep -F '"comm":"file_reader"' "$dir/stacks.json" | grep -F '"kind":"major"' |
        grep -E '"ustack":\[\{[^}]*"symbol":"read_pages"' | sum_counts)
    counts_verdict "$1" stackcount "touch_pages minor and read_pages major stacks" \
        "$anon" "$(kv minflt "$dir/anon.out")" "$file" "$(kv majflt "$dir/file.out")"
}

# 65,536 distinct call paths, one fault each (many_stacks): at least 99.9% counted on their own
# stack (16 left/right frames above the leaf walk), once each, and nothing said lost.
check_many_stacks() {
    dir=/tmp/many-$1
    mkdir -p "$dir"
    timeout $RUN_TIMEOUT pfault stackcount -U -f --probe "$1" --output "$dir/folded" \
        -- /w/many_stacks >"$dir/many.out" 2>"$dir/pfault.err"
    status=$?
    paths=$(kv paths "$dir/many.out")
    if [ "$status" != 0 ] || [ -z "$paths" ]; then
        verdict "$1" stackcount "$(run_problem)" "65536 distinct stacks: no ground truth"
        return
    fi
    own=$(awk -F';' '/;walk 1$/ { n = 0; for (i = 1; i <= NF; i++) if ($i == "left" || $i == "right") n++; if (n == 16) c++ } END { print c + 0 }' "$dir/folded")
    problems=""
    [ $((own * 1000)) -ge $((paths * 999)) ] || problems="$problems
$own of $paths paths counted once on their own stack; others, e.g.:
$(awk -F';' '{ n = 0; for (i = 1; i <= NF; i++) if ($i == "left" || $i == "right") n++ } /;(walk|left|right)/ && (!/;walk 1$/ || n != 16)' "$dir/folded" | head -n 4 | cut -c 1-400)"
    lost=$(grep lost "$dir/pfault.err")
    [ -z "$lost" ] || problems="$problems
$lost"
    verdict "$1" stackcount "${problems#?}" "$own of $paths distinct stacks counted once each on their own"
}

# CFI unwinding (the default): every fault inside memset names memset's caller, and code built
# with -O2 -fomit-frame-pointer unwinds to main; at least 99% of each. After the mode, the
# workloads as NAME:CALLER:LEAF (these two when none are given).
check_unwind() {
    mode=$1
    shift
    dir=/tmp/unwind-$mode
    mkdir -p "$dir"
    problems="" shown=""
    for w in ${*:-memset_caller:fill_pages:memset omit_fp:walk_pages:touch_pages_nofp}; do
        name=${w%%:*} rest=${w#*:}
        caller=${rest%%:*} leaf=${rest#*:}
        timeout $RUN_TIMEOUT pfault stackcount -U -f --probe "$mode" --output "$dir/$name.folded" \
            -- /w/"$name" $ANON_PAGES >"$dir/$name.out" 2>"$dir/pfault.err"
        status=$?
        minflt=$(kv minflt "$dir/$name.out")
        if [ "$status" != 0 ] || [ -z "$minflt" ]; then
            problems="$problems
$name: $(run_problem)"
            continue
        fi
        counts=$(awk -v caller="$caller" -v leaf="$leaf" '{
            n = $NF; stack = $0; sub(/ [0-9]+$/, "", stack)
            k = split(stack, f, ";")
            if (index(f[k], leaf) == 0) next
            all += n
            if (k >= 3 && f[k - 1] == caller && index(stack, ";main;") > 0) with += n
        } END { print all + 0, with + 0 }' "$dir/$name.folded")
        all=${counts% *} with=${counts#* }
        within "$all" "$minflt" || problems="$problems
$name: $all faults in $leaf, getrusage says $minflt; stacks:
$(sort -t' ' -k2 -n "$dir/$name.folded" | tail -n 3 | cut -c 1-400)
$(tail -n 3 "$dir/pfault.err" | cut -c 1-400)"
        [ $((with * 100)) -ge $((all * 99)) ] || problems="$problems
$name: $with of $all faults in $leaf name main..$caller; stacks:
$(sort -t' ' -k2 -n "$dir/$name.folded" | tail -n 3 | cut -c 1-400)"
        shown="$shown $name $with/$all"
    done
    verdict "$mode" unwind "${problems#?}" "callers kept:$shown"
}

# One leaf under two callers that take turns, every fault from the same registers
# (same_leaf): half the faults under each, though most walks are a thread's last taken again.
check_same_leaf() {
    dir=/tmp/same-leaf
    mkdir -p "$dir"
    timeout $RUN_TIMEOUT pfault stackcount -U -f --probe "$1" --output "$dir/folded" \
        -- /w/same_leaf $ANON_PAGES >"$dir/run.out" 2>"$dir/pfault.err"
    status=$?
    if [ "$status" != 0 ]; then
        verdict "$1" kept-walk "$(run_problem)" "same_leaf"
        return
    fi
    under() { awk -v s=";main;$1;touch_one" '{ n = $NF; sub(/ [0-9]+$/, "") } substr($0, length($0) - length(s) + 1) == s { c += n } END { print c + 0 }' "$dir/folded"; }
    even=$(under via_even) odd=$(under via_odd) half=$((ANON_PAGES / 2))
    problems=""
    within "$even" "$half" && within "$odd" "$half" ||
        problems="main;via_even $even and main;via_odd $odd faults in touch_one, $half each expected"
    verdict "$1" kept-walk "$problems" "same_leaf: main;via_even $even, main;via_odd $odd of $ANON_PAGES"
}

# A program traced host-wide whose table (big_cfi: 200,000 rows) is built while it runs: the
# stacks that meet it loading are copied to userspace and walked there once it is in (or left
# as the kernel walked them, and said), and every fault keeps main.
check_late() {
    dir=/tmp/late-$1
    mkdir -p "$dir"
    # A file of its own: no table of it exists before it runs.
    cp /w/big_cfi "$dir/late_cfi"
    pfault stackcount -a -U -f --probe "$1" --output "$dir/folded" 2>"$dir/pfault.err" &
    pid=$!
    if ! attached $pid "$dir/pfault.err"; then
        verdict "$1" late-walk "pfault did not start: $(tail -n 2 "$dir/pfault.err")" "big_cfi"
        return
    fi
    "$dir/late_cfi" $ANON_PAGES >"$dir/run.out"
    kill -INT $pid
    wait $pid
    minflt=$(kv minflt "$dir/run.out")
    counts=$(awk '{ n = $NF; s = $0; sub(/ [0-9]+$/, "", s) }
        index(s, "late_cfi;") == 1 && s ~ /;touch_pages$/ { all += n; if (s ~ /;main;touch_pages$/) with += n }
        END { print all + 0, with + 0 }' "$dir/folded")
    all=${counts% *} with=${counts#* }
    late=$(sed -n 's/.* \([0-9]*\) stacks walked late from copies.*/\1/p' "$dir/pfault.err")
    problems=""
    within "$all" "${minflt:-0}" || problems="$problems
$all faults in touch_pages, getrusage says $minflt"
    [ $((with * 100)) -ge $((all * 99)) ] || problems="$problems
$with of $all faults in touch_pages name main; stacks:
$(sort -t' ' -k2 -n "$dir/folded" | grep '^late_cfi;' | tail -n 3 | cut -c 1-300)"
    [ "${late:-0}" -gt 0 ] || problems="$problems
no stack walked late: $(grep 'unwind:' "$dir/pfault.err" | cut -c 1-300)"
    verdict "$1" late-walk "${problems#?}" "big_cfi host-wide: main;touch_pages $with/$all, ${late:-0} stacks walked late"
}

# Counts per file: [anon] for the writer, the data file's path for the reader.
check_ffaults() {
    run_tool ffaults "$1" -o json --output /tmp/ffaults-"$1"/files.json
    if [ "$status" != 0 ]; then
        verdict "$1" ffaults "$(run_problem)" "pfault ffaults on the workloads"
        return
    fi
    # Rows are per (process, comm): before its exec the child was the shell.
    anon=$(grep -F "\"pid\":$(kv pid "$dir/anon.out")," "$dir/files.json" |
        grep -F '"comm":"anon_writer"' | grep -F '"file":"[anon]"' | number minor)
    file=$(grep -F "\"file\":\"$DATA\"" "$dir/files.json" | number major)
    counts_verdict "$1" ffaults "[anon] minor and $DATA major rows" \
        "$anon" "$(kv minflt "$dir/anon.out")" "$file" "$(kv majflt "$dir/file.out")"
}

# Counts per process: minor for the writer, major for the reader, one error for segv.
check_stat() {
    run_tool stat "$1" -o json --output /tmp/stat-"$1"/procs.json
    if [ "$status" != 0 ]; then
        verdict "$1" stat "$(run_problem)" "pfault stat on the workloads"
        return
    fi
    row() { grep -F "\"pid\":$(kv pid "$dir/$1.out")," "$dir/procs.json"; }
    anon=$(row anon | number minor)
    file=$(row file | number major)
    segv=$(grep -F '"comm":"segv"' "$dir/procs.json" | number errors)
    counts_verdict "$1" stat "anon_writer minor, file_reader major, segv errors" \
        "$anon" "$(kv minflt "$dir/anon.out")" "$file" "$(kv majflt "$dir/file.out")" "$segv" 1
}

# Page sizes, from the page tables after each fault (page_offset_base from kallsyms where the
# kernel randomizes its direct map): 16 MiB written through transparent huge pages adds up to
# what the workload's smaps say it mapped, per fault in trace and per stack weighed by bytes,
# and trace's 2 MiB faults to its huge pages.
check_weight() {
    dir=/tmp/weight-$1
    mkdir -p "$dir"
    timeout $RUN_TIMEOUT pfault trace --probe "$1" -o json --output "$dir/events.json" \
        -- /w/thp_writer 16 huge >"$dir/trace.out" 2>"$dir/pfault.err"
    status=$?
    pid=$(kv pid "$dir/trace.out") rss=$(kv rss_kib "$dir/trace.out") huge=$(kv huge_kib "$dir/trace.out")
    start=$(kv start "$dir/trace.out") end=$(kv end "$dir/trace.out")
    if [ "$status" != 0 ] || [ -z "$rss" ]; then
        verdict "$1" weight "$(run_problem)" "page sizes: no ground truth"
        return
    fi
    events "$pid" "$start" "$end" <"$dir/events.json" >"$dir/region.json"
    traced=$(sed -n 's/.*"page_size":\([0-9]*\).*/\1/p' "$dir/region.json" | awk '{ s += $1 } END { print s / 1024 }')
    huge_traced=$(grep -c -F '"page_size":2097152' "$dir/region.json")
    timeout $RUN_TIMEOUT pfault stackcount -U --weight bytes --probe "$1" -o json --output "$dir/stacks.json" \
        -- /w/thp_writer 16 huge >"$dir/stacks.out" 2>"$dir/pfault.err"
    status=$?
    weighed=$(grep -F '"ustack":[{"symbol":"touch_region"' "$dir/stacks.json" | number bytes)
    rss2=$(kv rss_kib "$dir/stacks.out")
    problems=""
    [ "$huge" -gt 0 ] || problems="$problems
the guest gave the workload no huge page: $(cat "$dir/trace.out")"
    [ "$traced" = "$rss" ] || problems="$problems
trace's page sizes add up to $traced KiB, the workload's smaps say $rss"
    [ $((huge_traced * 2048)) = "$huge" ] || problems="$problems
$huge_traced faults of 2 MiB traced, the workload's smaps say $huge KiB of huge pages"
    [ "$status" = 0 ] && [ -n "$weighed" ] && [ $((weighed / 1024)) = "$rss2" ] || problems="$problems
stackcount --weight bytes: touch_region weighs ${weighed:-nothing} bytes, the workload's smaps say $rss2 KiB ($(tail -n 2 "$dir/pfault.err"))"
    verdict "$1" weight "${problems#?}" \
        "trace and stackcount --weight bytes: $traced KiB in $huge_traced huge pages and the rest in 4 KiB (smaps: $rss KiB, $huge huge)"
}

# The verifier's work differs between kernel builds: what it verified for each program that
# `stackcount -U` loads, from fdinfo (verified_insns from 5.16 on; "-" before), read while
# pfault runs (it says its probe mode once attached).
report_insns() {
    dir=/tmp/insns-$1
    mkdir -p "$dir"
    # Start-up (attach, then stop at once), to 10 ms: under TCG, emulated, so for comparing
    # kernels with one another, not with a real machine.
    t0=$(cut -d' ' -f1 /proc/uptime)
    timeout $RUN_TIMEOUT pfault stackcount -U --probe "$1" -d 0 --output /dev/null 2>/dev/null
    startup=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.2f", b - a }')
    pfault stackcount -U --probe "$1" --output /dev/null 2>"$dir/pfault.err" &
    pid=$!
    if ! attached $pid "$dir/pfault.err"; then
        note "insns $1: pfault stackcount -U did not start: $(tail -n 2 "$dir/pfault.err")"
        return
    fi
    progs=""
    for f in /proc/$pid/fdinfo/*; do
        progs="$progs $(awk '/^prog_type:/ { t = $2 } /^verified_insns:/ { n = $2 }
            END { if (t != "") print t ":" (n == "" ? "-" : n) }' "$f")"
    done
    kill -INT $pid
    wait $pid
    echo "@@vm insns $1 stackcount startup=$startup$progs"
}

check_probes
for mode in $MODES; do
    report_insns "$mode"
done
for mode in $MODES; do
    for tool in $TOOLS; do
        check_"$tool" "$mode"
    done
done
# Page sizes on the handle_mm_fault path (fentry; kprobe's is the same) and on the
# tracepoint path, at completion after an entry (trace) and without one (stackcount).
for mode in fentry tracepoint; do
    check_weight "$mode"
done
# The entry path (fentry) and the completion-only path (tracepoint) take stacks apart.
for mode in fentry tracepoint; do
    check_many_stacks "$mode"
done
# The CFI rules beyond a register plus a small offset, once (the walk is the same in every
# mode): memset's caller with a 200 KiB frame (big_frame), realigned (realign: its CFA read
# from the frame), assembly whose CFA is its entry rsp saved in the frame (saved_rsp), and
# assembly that moved its return address down its frame (moved_ra).
check_unwind tracepoint big_frame:big_frame:memset realign:fill_realigned:memset \
    saved_rsp:main:fill_saved_rsp moved_ra:main:fill_moved_ra
check_same_leaf tracepoint
# A table built while its program runs: at completion with the latency timed from entry
# (fentry), and at completion alone (tracepoint).
for mode in fentry tracepoint; do
    check_late "$mode"
done
# stat without -L or --probe counts from the threads' own accounting (no per-fault timing).
check_stat auto
echo "@@vm done"
poweroff -f
