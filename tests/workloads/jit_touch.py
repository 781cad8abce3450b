# Touches every page of fresh mappings from a Python function: the faults of
# `pfault_py_touch_pages`, named from the perf map CPython 3.12+ writes with -X perf (the
# trampoline it runs each Python function through).
# usage: python3.12 -X perf jit_touch.py [ROUNDS [warm]]
# With `warm`, one round runs a second ahead of the rest, which alone are counted in
# `touches`: a tracer started before may load what it needs to walk the stacks meanwhile.
import mmap, os, sys, time

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 32
warm = sys.argv[2:3] == ["warm"]
MIB = 8


def pfault_py_touch_pages():
    m = mmap.mmap(-1, MIB << 20)
    for i in range(0, len(m), 4096):
        m[i] = 1
    m.close()


if warm:
    pfault_py_touch_pages()
    time.sleep(1)
for _ in range(rounds):
    pfault_py_touch_pages()
print(f"pid={os.getpid()} touches={rounds * (MIB << 20) // 4096}")
