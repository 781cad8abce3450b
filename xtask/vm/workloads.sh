#!/bin/sh
# The guest's test workloads, one after the other: what each pfault tool is run on, so that
# one pfault start-up (seconds under TCG) covers them all. Each one's output, its own
# getrusage ground truth, goes to DIR/NAME.out. usage: /w/run DIR (ANON_PAGES, DATA from init)
cd "$1" || exit 1
/w/anon_writer "$ANON_PAGES" >anon.out
/w/file_reader "$DATA" >file.out
/w/segv >segv.out
echo "status=$?" >>segv.out
