package tenant

// Key rotation, as an embedding program or test drives it; the Management
// API (mgmt_keys.go) drives the same keyStore.

// RotateSigningKey makes the next key current (new tokens are signed with it),
// keeps the old one in the JWKS as previous and creates a new next key.
func (s *Server) RotateSigningKey() error {
	k, err := s.keys.rotate()
	if err == nil {
		s.log.Info("devtenant: signing key rotated", "current_kid", k.KID)
	}
	return err
}

// RevokePreviousKey removes the previous key from the JWKS: tokens signed with it stop verifying.
func (s *Server) RevokePreviousKey() error {
	k, err := s.keys.revokePrevious("")
	if err == nil {
		s.log.Info("devtenant: previous signing key revoked", "kid", k.KID)
	}
	return err
}
