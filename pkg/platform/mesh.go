package platform

import (
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// OwnerJetStream returns the JetStream API through which this service reaches
// stream: its own for its own streams, else the owner's as its account
// imports it (mesh.APIPrefix), where only what the owner exports to this
// service answers (its durable's INFO and MSG.NEXT, the revocation bucket's
// INFO and direct gets).
func (a *App) OwnerJetStream(stream string) (jetstream.JetStream, error) {
	owner, ok := mesh.StreamOwner(stream)
	if !ok {
		return nil, fmt.Errorf("platform: stream %s is not in the mesh table", stream)
	}
	if owner.Name == a.Config.Service {
		return a.JetStream, nil
	}
	js, err := jetstream.NewWithAPIPrefix(a.NATS, mesh.APIPrefix(owner.Account))
	if err != nil {
		return nil, fmt.Errorf("platform: jetstream of %s: %w", owner.Name, err)
	}
	return js, nil
}
