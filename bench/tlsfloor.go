// The least an admission webhook can cost on this machine: Go's net/http and crypto/tls
// answering every AdmissionReview with one fixed JSONPatch, nothing looked up or written.
// bench.storm registers it in the storm's place, behind the same balancer, to tell the
// API server's and TLS's share of a warm storm from the webhook's own.
package main

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"sync/atomic"
	"time"
)

// What is read of a review: its apiVersion, to echo it, and the request's uid.
type review struct {
	APIVersion string `json:"apiVersion"`
	Request    *struct {
		UID string `json:"uid"`
	} `json:"request"`
}

// The webhook's own body limit (webhook/server/app.py MAX_BODY_BYTES): 7 MiB.
const maxBody = 7 << 20

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "HTTPS address of /mutate")
	health := flag.String("health", "127.0.0.1:0", "HTTP address of /readyz and /metrics")
	cert := flag.String("cert", "", "serving certificate (PEM)")
	key := flag.String("key", "", "its key (PEM)")
	patch := flag.String("patch", "[]", "the JSONPatch every review is answered with")
	flag.Parse()
	fixed := base64.StdEncoding.EncodeToString([]byte(*patch))
	var served atomic.Int64

	mutate := http.NewServeMux()
	mutate.HandleFunc("/mutate", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		var in review
		if err != nil || json.Unmarshal(body, &in) != nil || in.Request == nil {
			http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
			return
		}
		served.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"apiVersion": in.APIVersion,
			"kind":       "AdmissionReview",
			"response": map[string]any{
				"uid": in.Request.UID, "allowed": true,
				"patchType": "JSONPatch", "patch": fixed,
			},
		})
	})
	probes := http.NewServeMux()
	probes.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	// Under the webhook's counter name, so that the stack's check that admissions reach
	// a newly registered server (devenv/stack.py, Stack.routed_to) reads it as it is.
	probes.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "pull_secret_webhook_admissions_total{outcome=\"fixed\"} %d\n", served.Load())
	})
	go func() { log.Fatal(http.ListenAndServe(*health, probes)) }()
	server := &http.Server{
		Addr:              *listen,
		Handler:           mutate,
		ReadHeaderTimeout: 10 * time.Second,
		// As the API server speaks to webhooks: HTTP/1.1 only.
		TLSConfig:    &tls.Config{NextProtos: []string{"http/1.1"}},
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		// The webhook's keep-alive (webhook/server/connections.py KEEPALIVE_TIMEOUT).
		IdleTimeout: 120 * time.Second,
	}
	log.Fatal(server.ListenAndServeTLS(*cert, *key))
}
