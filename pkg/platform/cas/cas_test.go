package cas

import (
	"errors"
	"testing"
)

func TestRetry(t *testing.T) {
	t.Parallel()
	errLost := errors.New("lost")
	lost := func(err error) bool { return errors.Is(err, errLost) }
	n := 0
	v, err := Retry(lost, func() (int, error) {
		if n++; n < 3 {
			return 0, errLost
		}
		return n, nil
	})
	if v != 3 || err != nil {
		t.Fatalf("Retry = %d, %v", v, err)
	}
	n = 0
	_, err = Retry(lost, func() (int, error) { n++; return 0, errLost })
	if n != Attempts || !errors.Is(err, ErrContended) || !errors.Is(err, errLost) {
		t.Fatalf("after %d tries: %v", n, err)
	}
	other := errors.New("other")
	if _, err = Retry(lost, func() (int, error) { return 0, other }); err != other {
		t.Fatalf("a failure other than a lost race = %v", err)
	}
}
