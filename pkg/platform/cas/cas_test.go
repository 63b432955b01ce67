package cas

import (
	"errors"
	"testing"
)

func TestRetry(t *testing.T) {
	t.Parallel()
	errConflict := errors.New("conflict")
	n := 0
	v, err := Retry(func() (int, error) {
		if n++; n < 3 {
			return 0, Lost(errConflict)
		}
		return n, nil
	})
	if v != 3 || err != nil {
		t.Fatalf("Retry = %d, %v", v, err)
	}
	n = 0
	_, err = Retry(func() (int, error) { n++; return 0, Lost(errConflict) })
	if n != Attempts || !errors.Is(err, ErrContended) || !errors.Is(err, errConflict) {
		t.Fatalf("after %d tries: %v", n, err)
	}
	n = 0
	if _, err = Retry(func() (int, error) { n++; return 7, errConflict }); err != errConflict || n != 1 {
		t.Fatalf("an unmarked failure = %v after %d tries, want it returned at once", err, n)
	}
	if Lost(nil) != nil {
		t.Fatal("Lost(nil) is not nil")
	}
}
