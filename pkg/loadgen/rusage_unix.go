//go:build unix

package loadgen

import "syscall"

// cpuSeconds returns the user+system CPU time this process has used, or 0 if it cannot tell.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
