package authztest

import (
	"bytes"
	"sync"
)

// LogBuffer collects output written concurrently (a logger's, a child
// process's) so a test can read it while the writers are still running.
// The zero value is ready to use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p; it never fails.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Len returns how many bytes have been written, an offset for From.
func (l *LogBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

// From returns a copy of what was written from offset off on, or all of it
// if off lies past the end.
func (l *LogBuffer) From(off int) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if off > l.b.Len() {
		off = 0
	}
	return bytes.Clone(l.b.Bytes()[off:])
}
