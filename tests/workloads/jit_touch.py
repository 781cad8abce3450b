# Touches every page of fresh mappings from a Python function: the faults of
# `pfault_py_touch_pages`, named from the perf map CPython 3.12+ writes with -X perf (the
# trampoline it runs each Python function through).
# usage: python3.12 -X perf jit_touch.py [ROUNDS]
import mmap, os, sys

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 32
MIB = 8


def pfault_py_touch_pages():
    m = mmap.mmap(-1, MIB << 20)
    for i in range(0, len(m), 4096):
        m[i] = 1
    m.close()


for _ in range(rounds):
    pfault_py_touch_pages()
print(f"pid={os.getpid()} touches={rounds * (MIB << 20) // 4096}")
