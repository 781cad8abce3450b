// Copies into fresh anonymous memory with Go's copy(): every fault is inside runtime.memmove,
// assembly that keeps no frame pointer, so a frame-pointer walk skips copyPages, its caller.
// Go writes no .eh_frame: its CFI is a zlib-compressed .debug_frame.
// usage: go_copy PAGES
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
)

//go:noinline
func copyPages(dst, src []byte) {
	for i := 0; i < len(dst); i += len(src) {
		copy(dst[i:], src)
	}
}

func main() {
	pages, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	// getrusage(RUSAGE_THREAD) counts the faults of the thread copying: this one.
	runtime.LockOSThread()
	dst, err := syscall.Mmap(-1, 0, pages*4096, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		panic(err)
	}
	// One fault per page, as common.h's fresh_pages.
	if err := syscall.Madvise(dst, syscall.MADV_NOHUGEPAGE); err != nil {
		panic(err)
	}
	src := make([]byte, 4096)
	for i := range src {
		src[i] = byte(i)
	}
	const rusageThread = 1
	var before, after syscall.Rusage
	syscall.Getrusage(rusageThread, &before)
	copyPages(dst, src)
	syscall.Getrusage(rusageThread, &after)
	fmt.Printf("pid=%d minflt=%d majflt=%d\n", os.Getpid(), after.Minflt-before.Minflt,
		after.Majflt-before.Majflt)
}
