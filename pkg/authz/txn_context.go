package authz

import "encoding/json"

// TxnContext is the tctx of a transaction token as the Transaction Token
// Service writes it: immutable facts about the transaction that every hop
// may rely on. OrgID and OrgName carry the Auth0 Organization of the access
// token the transaction started with, so that a consumer or receiver scopes
// data to it exactly as the HTTP edge did (TxnValidator copies them into
// Claims.OrgID and Claims.OrgName).
type TxnContext struct {
	AZP     string `json:"azp"`                // the client the access token was issued to
	OrgID   string `json:"org_id,omitempty"`   // the access token's org_id
	OrgName string `json:"org_name,omitempty"` // the access token's org_name
}

// applyTxnContext copies the organization of a verified tctx into c. A tctx
// that is not an object fails the token: the service never writes one.
func applyTxnContext(c *Claims, raw json.RawMessage) error {
	if len(raw) == 0 {
		return nil
	}
	var tc TxnContext
	if err := json.Unmarshal(raw, &tc); err != nil {
		return invalid("malformed", "the token's tctx could not be read", err)
	}
	c.OrgID, c.OrgName = tc.OrgID, tc.OrgName
	return nil
}
