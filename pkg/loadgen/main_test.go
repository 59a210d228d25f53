package loadgen

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine (a sender, an HTTP connection) outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
