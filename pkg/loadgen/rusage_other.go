//go:build !unix

package loadgen

// cpuSeconds cannot be measured here without getrusage; Result.LoadgenCPUSeconds stays 0.
func cpuSeconds() float64 { return 0 }
