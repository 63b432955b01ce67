package mgmt

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinels matched with errors.Is against an *Error by status code.
var (
	ErrNotFound     = &Error{StatusCode: http.StatusNotFound}
	ErrBadRequest   = &Error{StatusCode: http.StatusBadRequest}
	ErrUnauthorized = &Error{StatusCode: http.StatusUnauthorized}
	ErrForbidden    = &Error{StatusCode: http.StatusForbidden}
	ErrConflict     = &Error{StatusCode: http.StatusConflict}
	ErrRateLimited  = &Error{StatusCode: http.StatusTooManyRequests}
)

// Error is a failed Management API call, decoded from Auth0's error body
// {"statusCode","error","message","errorCode"}. StatusCode is 0 for a
// transport failure.
type Error struct {
	StatusCode int    `json:"statusCode"`
	Err        string `json:"error"`
	Message    string `json:"message"`
	ErrorCode  string `json:"errorCode,omitempty"`

	Method string `json:"-"`
	Path   string `json:"-"`
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("mgmt: ")
	if e.Method != "" {
		fmt.Fprintf(&b, "%s %s: ", e.Method, e.Path)
	}
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, "%d ", e.StatusCode)
	}
	b.WriteString(e.Err)
	if e.ErrorCode != "" {
		fmt.Fprintf(&b, " (%s)", e.ErrorCode)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

// Is matches an *Error with the same status code (see the sentinels).
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.StatusCode == e.StatusCode
}

// Temporary reports whether a later retry may succeed.
func (e *Error) Temporary() bool {
	return e.StatusCode == 0 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

func parseError(resp *http.Response, body []byte) *Error {
	e := &Error{}
	if json.Unmarshal(body, e) != nil || e.Err == "" {
		// Not Auth0's shape (a proxy's page, say): keep the status, not the body.
		e = &Error{Err: http.StatusText(resp.StatusCode)}
	}
	e.StatusCode = resp.StatusCode
	return e
}
