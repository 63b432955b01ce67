package authz

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// How failures are answered: the realm of WWW-Authenticate challenges and
// the Retry-After of 503s.
const (
	DefaultRealm      = "authmesh"
	DefaultRetryAfter = 30 * time.Second
)

// Status is the status a failure of code is answered with, over HTTP and
// NATS alike (AnswerOf's, natsauth's Nats-Service-Error-Code): 401 for a missing or
// invalid token, 403 for a valid token that may not do this (or a route
// without a policy), 503 when keys or the revocation list are unavailable
// (retry: never a 401), and 500 for anything else.
func (c Code) Status() int {
	switch c {
	case CodeMissingToken, CodeInvalidToken, CodeInvalidDPoPProof, CodeUseDPoPNonce:
		return http.StatusUnauthorized
	case CodeInvalidRequest:
		return http.StatusBadRequest
	case CodeInsufficientScope, CodeNoPolicy:
		return http.StatusForbidden
	case CodeKeysUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Answer is how an authorization failure is answered over HTTP (RFC 6750
// §3): the status, the headers (WWW-Authenticate, Retry-After, and
// Cache-Control: no-store on every answer) and the body.
type Answer struct {
	Status int
	Header http.Header
	Body   ErrorBody
}

// ErrorBody is the JSON body of an answer: {"error":"<code>","message":"..."}.
// It never contains the token.
type ErrorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

var retryAfter = strconv.Itoa(int(DefaultRetryAfter / time.Second))

// AnswerOf returns the answer to err, the one RFC 6750 writer: the Echo
// middleware's denials, the errors handlers return (pkg/platform's error
// handler) and natsauth's NATS denials (its status as the
// Nats-Service-Error-Code, "<Body.Error>: <Body.Message>" as the description)
// are all rendered by it. An error that is not an *Error is denied as an
// invalid token, without details (fail closed, over HTTP and NATS alike).
//
//	a := authz.AnswerOf(err)
//	for k, v := range a.Header { c.Response().Header()[k] = v }
//	return c.JSON(a.Status, a.Body)
func AnswerOf(err error) Answer {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInvalidToken, Reason: "internal", Description: "the token could not be verified"}
	}
	realm := `Bearer realm="` + DefaultRealm + `"`
	h := http.Header{}
	switch e.Code {
	case CodeMissingToken:
		h.Set(echo.HeaderWWWAuthenticate, realm)
	case CodeInsufficientScope:
		if e.KindRefused() {
			h.Set(echo.HeaderWWWAuthenticate, realm+`, error="insufficient_scope", error_description="`+quoteSafe(e.Reason)+`"`)
			break
		}
		h.Set(echo.HeaderWWWAuthenticate, realm+`, error="insufficient_scope", scope="`+quoteSafe(strings.Join(e.Needed, " "))+`"`)
	case CodeKeysUnavailable:
		h.Set(echo.HeaderRetryAfter, retryAfter)
	case CodeNoPolicy:
	case CodeInvalidDPoPProof, CodeUseDPoPNonce, CodeInvalidRequest:
		h.Set(echo.HeaderWWWAuthenticate, realm+`, error="`+string(e.Code)+`", error_description="`+quoteSafe(message(e))+`"`)
	default:
		e = &Error{Code: CodeInvalidToken, Reason: e.Reason, Description: e.Description, DPoP: e.DPoP}
		h.Set(echo.HeaderWWWAuthenticate, realm+`, error="invalid_token", error_description="`+quoteSafe(message(e))+`"`)
	}
	if e.DPoP != nil {
		e.DPoP.challenge(h)
	}
	h.Set(echo.HeaderCacheControl, "no-store")
	return Answer{Status: e.Code.Status(), Header: h, Body: ErrorBody{Error: publicCode(e.Code), Message: message(e)}}
}

// publicCode is the body's error code: RFC 6749's temporarily_unavailable
// for keys_unavailable, the Code otherwise.
func publicCode(c Code) string {
	if c == CodeKeysUnavailable {
		return "temporarily_unavailable"
	}
	return string(c)
}

// CodeOfAnswer returns the Code whose answers carry bodyError as the body's
// error, AnswerOf's inverse (keys_unavailable for temporarily_unavailable; a
// Code's own name is accepted too), or "" when it names no Code. natsauth's
// client reads the code of a NATS denial back with it.
func CodeOfAnswer(bodyError string) Code {
	if bodyError == "temporarily_unavailable" {
		return CodeKeysUnavailable
	}
	switch c := Code(bodyError); c {
	case CodeMissingToken, CodeInvalidToken, CodeInsufficientScope, CodeKeysUnavailable, CodeNoPolicy,
		CodeInvalidDPoPProof, CodeUseDPoPNonce, CodeInvalidRequest:
		return c
	}
	return ""
}

func message(e *Error) string {
	switch e.Code {
	case CodeMissingToken:
		if e.Description != "" {
			return e.Description // which token: natsauth asks for a Txn-Token
		}
		return "a bearer token is required"
	case CodeInsufficientScope:
		if e.KindRefused() {
			return e.Description
		}
		if len(e.Needed) > 0 {
			return "insufficient permissions: requires " + strings.Join(e.Needed, " ")
		}
		return "insufficient permissions"
	case CodeKeysUnavailable:
		return "token verification is temporarily unavailable; retry later"
	case CodeNoPolicy:
		return "access denied"
	}
	if e.Description != "" {
		return e.Description
	}
	return "the token is invalid"
}

// quoteSafe keeps a value safe inside a quoted-string of a header (RFC 6750
// restricts error_description to %x20-21 / %x23-5B / %x5D-7E).
func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}
