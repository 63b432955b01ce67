package flows

import (
	"net/http"
	"strings"
	"time"

	"github.com/authmesh/authmesh/tests/apiclient"
)

var httpClient = &http.Client{Timeout: 10 * time.Second}

// api reaches the processes TestMain starts, and devtenant in-process.
var api = &apiclient.Client{
	HTTP: httpClient,
	BaseURL: func(name string) string {
		if name == "devtenant" {
			return strings.TrimSuffix(stack.tenantURL, "/")
		}
		return "http://" + stack.services[name].addr
	},
}
