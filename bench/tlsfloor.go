// The least an admission webhook can cost on this machine: Go's net/http and crypto/tls
// answering every AdmissionReview with one fixed JSONPatch, nothing looked up or written.
// bench.storm registers it in the storm's place, behind the same balancer, to tell the
// API server's and TLS's share of a warm storm from the webhook's own.
//
// With -apiserver, the least a webhook that makes pull secrets can cost: the first review
// of each namespace creates the patch's Secrets there (one POST each, at once, as the
// webhook's ServiceAccount), and every review of that namespace is answered once they
// exist. No credential, no record, no race with another replica: one write per Secret.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// What is read of a review: its apiVersion, to echo it, and the request's uid and
// namespace.
type review struct {
	APIVersion string `json:"apiVersion"`
	Request    *struct {
		UID       string `json:"uid"`
		Namespace string `json:"namespace"`
	} `json:"request"`
}

// secretMaker creates the named Secrets in a namespace once, whoever asks.
type secretMaker struct {
	server string
	token  string
	names  []string
	client *http.Client
	mu     sync.Mutex
	made   map[string]chan struct{}
	// Secrets the API server answered 201 for: a floor that failed to write would be
	// cheaper than one that wrote, so the benchmark checks this count.
	created atomic.Int64
}

func newSecretMaker(server, caFile, tokenFile string, names []string) *secretMaker {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		log.Fatal(err)
	}
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		log.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		MaxIdleConnsPerHost: 100,
	}
	return &secretMaker{
		server: strings.TrimRight(server, "/"),
		token:  strings.TrimSpace(string(token)),
		names:  names,
		client: &http.Client{Transport: transport, Timeout: 30 * time.Second},
		made:   map[string]chan struct{}{},
	}
}

// ensure returns once the namespace's Secrets were created (by this call or another).
func (m *secretMaker) ensure(namespace string) {
	m.mu.Lock()
	done, ok := m.made[namespace]
	if !ok {
		done = make(chan struct{})
		m.made[namespace] = done
	}
	m.mu.Unlock()
	if ok {
		<-done
		return
	}
	var wg sync.WaitGroup
	for _, name := range m.names {
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			m.create(namespace, name)
		}(name)
	}
	wg.Wait()
	close(done)
}

func (m *secretMaker) create(namespace, name string) {
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"type":       "kubernetes.io/dockerconfigjson",
		"metadata": map[string]any{
			"name":   name,
			"labels": map[string]string{"app.kubernetes.io/managed-by": "pull-secret-webhook"},
		},
		"data": map[string]string{
			".dockerconfigjson": base64.StdEncoding.EncodeToString([]byte(`{"auths":{}}`)),
		},
	})
	url := fmt.Sprintf("%s/api/v1/namespaces/%s/secrets", m.server, namespace)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+m.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.client.Do(req)
	if err != nil {
		log.Printf("create %s/%s: %v", namespace, name, err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		log.Printf("create %s/%s: %s", namespace, name, resp.Status)
		return
	}
	m.created.Add(1)
}

// The webhook's own body limit (webhook/server/app.py MAX_BODY_BYTES): 7 MiB.
const maxBody = 7 << 20

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "HTTPS address of /mutate")
	health := flag.String("health", "127.0.0.1:0", "HTTP address of /readyz and /metrics")
	cert := flag.String("cert", "", "serving certificate (PEM)")
	key := flag.String("key", "", "its key (PEM)")
	patch := flag.String("patch", "[]", "the JSONPatch every review is answered with")
	apiserver := flag.String("apiserver", "", "make the Secrets first, on this API server")
	caFile := flag.String("ca", "", "its CA (PEM)")
	tokenFile := flag.String("token-file", "", "the bearer token to write them with")
	secrets := flag.String("secrets", "", "comma-separated names of the Secrets to make")
	flag.Parse()
	fixed := base64.StdEncoding.EncodeToString([]byte(*patch))
	var served atomic.Int64
	var maker *secretMaker
	if *apiserver != "" {
		maker = newSecretMaker(*apiserver, *caFile, *tokenFile, strings.Split(*secrets, ","))
	}

	mutate := http.NewServeMux()
	mutate.HandleFunc("/mutate", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		var in review
		if err != nil || json.Unmarshal(body, &in) != nil || in.Request == nil {
			http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
			return
		}
		if maker != nil {
			maker.ensure(in.Request.Namespace)
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
		if maker != nil {
			fmt.Fprintf(w, "tlsfloor_secrets_created_total %d\n", maker.created.Load())
		}
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
