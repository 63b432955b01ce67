package authz

import (
	"errors"
	"fmt"
)

// Code classifies an authorization failure. Codes are stable: they appear in
// metrics labels and, for some, in RFC 6750 WWW-Authenticate headers.
type Code string

// Failure codes.
const (
	// CodeMissingToken: no bearer token was presented (401, no error attribute).
	CodeMissingToken Code = "missing_token"
	// CodeInvalidToken: malformed, badly signed, expired, wrong issuer or audience,
	// unknown key, or revoked (401 invalid_token).
	CodeInvalidToken Code = "invalid_token"
	// CodeInsufficientScope: valid token, missing permission or scope (403).
	CodeInsufficientScope Code = "insufficient_scope"
	// CodeKeysUnavailable: no signing keys can be had and none are cached, or
	// the revocation list is not loaded yet (503: retry, never a 401).
	CodeKeysUnavailable Code = "keys_unavailable"
	// CodeNoPolicy: the route or endpoint has no declared policy (denied).
	CodeNoPolicy Code = "no_policy"
)

// Sentinel errors, matched with errors.Is against an *Error.
var (
	ErrMissingToken      = &Error{Code: CodeMissingToken}
	ErrInvalidToken      = &Error{Code: CodeInvalidToken}
	ErrInsufficientScope = &Error{Code: CodeInsufficientScope}
	ErrKeysUnavailable   = &Error{Code: CodeKeysUnavailable}
	ErrNoPolicy          = &Error{Code: CodeNoPolicy}
)

// Error is the error type returned by this package.
//
// Reason is a short machine-friendly cause used as a metrics label and in logs
// ("expired", "unknown_kid", "bad_signature", "revoked", ...). Description is safe
// to show to clients: it never contains the token. Needed lists the permissions
// or scopes a CodeInsufficientScope failure required.
type Error struct {
	Code        Code
	Reason      string
	Description string
	Needed      []string
	Err         error
	// DPoP, when set, adds the DPoP challenge (RFC 9449 §7.1) to the answer.
	DPoP *DPoPChallenge
}

func (e *Error) Error() string {
	msg := string(e.Code)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	if e.Description != "" {
		msg += ": " + e.Description
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same Code, so that
// errors.Is(err, authz.ErrInvalidToken) matches any invalid-token failure.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Code == e.Code
}

// CodeOf returns the Code of err, or "" when err is not an *Error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func invalid(reason, description string, cause error) *Error {
	return &Error{Code: CodeInvalidToken, Reason: reason, Description: description, Err: cause}
}

func insufficient(needed []string) *Error {
	return &Error{
		Code:        CodeInsufficientScope,
		Reason:      ReasonMissingPermission,
		Description: fmt.Sprintf("requires %v", needed),
		Needed:      needed,
	}
}

// KindRefused reports whether e refuses the kind of token (a user token
// where only clients are admitted, an M2M token of a client not named, or
// any M2M token where only users are): then Reason is one of ReasonUsersOnly,
// ReasonClientNotAllowed, ReasonClientsOnly (or ReasonOrgRequired: a token
// issued for no organization), and the 403's WWW-Authenticate
// carries it as error_description instead of a scope no token could add.
func (e *Error) KindRefused() bool {
	if e == nil || e.Code != CodeInsufficientScope {
		return false
	}
	switch e.Reason {
	case ReasonUsersOnly, ReasonClientNotAllowed, ReasonClientsOnly, ReasonOrgRequired:
		return true
	}
	return false
}

// notAdmitted is the failure of a token whose kind (user, or M2M of a client)
// the policy does not admit. It names no permission: none would help.
func notAdmitted(reason, description string) *Error {
	return &Error{Code: CodeInsufficientScope, Reason: reason, Description: description}
}
