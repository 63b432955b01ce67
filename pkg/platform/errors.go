package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/authmesh/authmesh/pkg/authz"
)

// Error is an error with its HTTP answer: status, a stable machine code and a
// message for humans. Handlers return it (or a domain sentinel mapped through
// Options.Errors); the error handler renders it as contract §5's body
// {"error": Code, "message": Message} (plus "fields" for validation failures).
type Error struct {
	Status  int
	Code    string
	Message string
	Fields  map[string]string // field path → problem, for 422
	Err     error             // internal cause: logged, never shown
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// NewError returns an *Error with the given status, code and message.
func NewError(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// ErrorMapping maps a domain sentinel (matched with errors.Is) to an HTTP
// answer. Message defaults to the sentinel's own text, never the wrapped
// chain, so adapter details do not leak.
type ErrorMapping struct {
	Target  error
	Status  int
	Code    string
	Message string
}

// Error codes of the bodies this package writes itself.
const (
	CodeMalformedJSON    = "malformed_json"
	CodeValidationFailed = "validation_failed"
	CodeNotFound         = "not_found"
	CodeInternal         = "internal"
	CodeUnavailable      = "unavailable"
)

// Validation collects field-level problems; Err returns a 422 *Error listing
// them, or nil when there were none.
//
//	v := platform.Validation{}
//	v.Check(q >= 1 && q <= 100, "items[0].quantity", "must be between 1 and 100")
//	if err := v.Err(); err != nil { return err }
type Validation map[string]string

// Check records msg for field when ok is false (the first problem of a field wins).
func (v Validation) Check(ok bool, field, msg string) {
	if !ok {
		v.Add(field, msg)
	}
}

// Add records msg for field unless it already has one.
func (v Validation) Add(field, msg string) {
	if _, dup := v[field]; !dup {
		v[field] = msg
	}
}

// Err returns the 422 error, or nil.
func (v Validation) Err() error {
	if len(v) == 0 {
		return nil
	}
	fields := maps.Clone(map[string]string(v))
	keys := slices.Sorted(maps.Keys(fields))
	msg := "invalid request: " + keys[0] + " " + fields[keys[0]]
	if len(keys) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(keys)-1)
	}
	return &Error{Status: http.StatusUnprocessableEntity, Code: CodeValidationFailed, Message: msg, Fields: fields}
}

// ValidationError is a 422 for a single field.
func ValidationError(field, msg string) error {
	v := Validation{}
	v.Add(field, msg)
	return v.Err()
}

// BindJSON decodes the request body into dst strictly: malformed JSON, an
// empty body or trailing data is a 400; a well-formed body with a value of the
// wrong type or an unknown field is a 422 naming the field. The body size is
// bounded by the server's body limit.
func BindJSON(c echo.Context, dst any) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return NewError(http.StatusRequestEntityTooLarge, "request_too_large", "request body too large")
		}
		return &Error{Status: http.StatusBadRequest, Code: CodeMalformedJSON, Message: "could not read the request body", Err: err}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return NewError(http.StatusBadRequest, CodeMalformedJSON, "request body is empty; want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			field := te.Field
			if field == "" {
				return NewError(http.StatusBadRequest, CodeMalformedJSON, "want a JSON object")
			}
			return ValidationError(field, "must be of type "+jsonType(te.Type.Kind().String()))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return ValidationError(name, "unknown field")
		default:
			return &Error{Status: http.StatusBadRequest, Code: CodeMalformedJSON, Message: "malformed JSON: " + err.Error()}
		}
	}
	if dec.More() {
		return NewError(http.StatusBadRequest, CodeMalformedJSON, "malformed JSON: unexpected data after the object")
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "number"
	case "slice", "array":
		return "array"
	case "map", "struct":
		return "object"
	case "bool":
		return "boolean"
	}
	return kind
}

// errorBody is the wire shape of every error (contract §5).
type errorBody struct {
	Error   string            `json:"error"`
	Message string            `json:"message"`
	Fields  map[string]string `json:"fields,omitempty"`
}

// loggedErrorKey carries the internal error from the error handler to the
// request log line, so an error is logged exactly once, with its request.
const loggedErrorKey = "platform.error"

// resolve turns any error into the answer to give.
func resolve(err error, mappings []ErrorMapping) (*Error, http.Header) {
	var pe *Error
	if errors.As(err, &pe) {
		return pe, nil
	}
	if authz.CodeOf(err) != "" {
		// The authz middleware's denials and the authz errors handlers
		// return: authz renders them (RFC 6750).
		a := authz.AnswerOf(err)
		return &Error{Status: a.Status, Code: a.Body.Error, Message: a.Body.Message, Err: err}, a.Header
	}
	for _, m := range mappings {
		if m.Target != nil && errors.Is(err, m.Target) {
			msg := m.Message
			if msg == "" {
				msg = m.Target.Error()
			}
			return &Error{Status: m.Status, Code: m.Code, Message: msg, Err: err}, nil
		}
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return echoAnswer(he), nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "the request could not be completed in time", Err: err}, nil
	}
	return &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal server error", Err: err}, nil
}

func echoAnswer(he *echo.HTTPError) *Error {
	e := &Error{Status: he.Code, Err: he.Internal}
	switch he.Code {
	case http.StatusNotFound:
		e.Code, e.Message = CodeNotFound, "no such resource"
	case http.StatusMethodNotAllowed:
		e.Code, e.Message = "method_not_allowed", "method not allowed"
	case http.StatusRequestEntityTooLarge:
		e.Code, e.Message = "request_too_large", "request body too large"
	case http.StatusUnsupportedMediaType:
		e.Code, e.Message = "unsupported_media_type", "want Content-Type: application/json"
	case http.StatusBadRequest:
		e.Code, e.Message = "bad_request", "bad request"
	case http.StatusTooManyRequests:
		e.Code, e.Message = "rate_limited", "too many requests"
	default:
		if he.Code >= 500 {
			e.Code, e.Message = CodeInternal, http.StatusText(he.Code)
		} else {
			e.Code = strings.ToLower(strings.ReplaceAll(http.StatusText(he.Code), " ", "_"))
			e.Message = http.StatusText(he.Code)
		}
	}
	if e.Code == "" {
		e.Code, e.Message = "error", "error"
	}
	return e
}

// errorHandler is the one echo.HTTPErrorHandler: it maps err to a status and
// body, hides internals, and leaves the logging to the request log line.
func errorHandler(mappings []ErrorMapping) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			c.Set(loggedErrorKey, err)
			return
		}
		e, hdr := resolve(err, mappings)
		c.Set(loggedErrorKey, err)
		for k, vs := range hdr {
			c.Response().Header()[k] = vs
		}
		body := errorBody{Error: e.Code, Message: e.Message, Fields: e.Fields}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(e.Status)
			return
		}
		_ = c.JSON(e.Status, body)
	}
}
