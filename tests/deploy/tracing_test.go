package deploy

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/authmesh/authmesh/pkg/platform"
)

// TestComposeTracing: Jaeger runs only with the profile tracing, publishes
// its query API and OTLP port on the host's loopback, and builds offline;
// the services trace nothing by default and export to it when
// AUTHMESH_OTLP_ENDPOINT says so (make up TRACING=1 sets both).
func TestComposeTracing(t *testing.T) {
	t.Parallel()
	f := loadCompose(t)
	j := f.Services["jaeger"]
	if !slices.Equal(j.Profiles, []string{"tracing"}) {
		t.Errorf("jaeger profiles %v: want only tracing, so a plain `up` does not start it", j.Profiles)
	}
	if !slices.Equal(j.Ports, []string{"127.0.0.1:16686:16686", "127.0.0.1:4318:4318"}) {
		t.Errorf("jaeger ports %v: want the query API and OTLP/HTTP on the host's loopback", j.Ports)
	}
	for _, port := range []int32{4318, 16686} {
		checkDockerfile(t, filepath.Join(root, j.Build.Dockerfile), nil, port, "/httpprobe", "http://127.0.0.1:13133/status")
	}
	for name, s := range f.Services {
		if name != "jaeger" && len(s.Profiles) > 0 {
			t.Errorf("%s has profiles %v: only jaeger is optional", name, s.Profiles)
		}
	}

	on := loadComposeWith(t, map[string]string{"AUTHMESH_OTLP_ENDPOINT": "http://jaeger:4318"})
	for _, svc := range []string{"users", "orders", "billing", "tts"} {
		for _, c := range []struct {
			f    composeFile
			want string
		}{{f, ""}, {on, "http://jaeger:4318/v1/traces"}} {
			env := c.f.Services[svc].Environment
			cfg, err := platform.LoadConfig(svc, func(k string) string { return env[k] })
			if err != nil {
				t.Fatalf("%s: %v", svc, err)
			}
			if cfg.Telemetry.Endpoint != c.want {
				t.Errorf("%s exports to %q, want %q", svc, cfg.Telemetry.Endpoint, c.want)
			}
		}
	}
}
