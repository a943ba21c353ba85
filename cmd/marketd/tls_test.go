package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and localhost
// and its key to dir, and returns their paths and a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "marketd test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pool
}

// TestTLS runs marketd with -tls-cert/-tls-key, a token file and an origin
// allow-list: https serves the REST side, wss streams with a token and is
// refused without one (401) or from another origin (403), plain http on the
// port is refused, and HTTP/2 is not offered (a WebSocket needs HTTP/1.1).
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	const token = "wss-test-token-7f3a"
	tokFile := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokFile, []byte("# tokens\n\nother-token\n"+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := startTestService(t, "-tls-cert", certFile, "-tls-key", keyFile, "-auth-tokens-file", tokFile,
		"-allowed-origins", "https://app.example.com", "-sim-rate", "500")
	base := svc.URL("")
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("URL %q is not https", base)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}

	var symbols []string
	checkFor(t, 20*time.Second, func() error {
		resp, err := client.Get(base + "/v1/symbols")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 1 {
			t.Fatalf("protocol %s, want HTTP/1.1", resp.Proto)
		}
		if err := json.NewDecoder(resp.Body).Decode(&symbols); err != nil || len(symbols) == 0 {
			return fmt.Errorf("symbols %v: %v", symbols, err)
		}
		return nil
	})

	// Plain http on the TLS port gets no answer from the service.
	if resp, err := http.Get(strings.Replace(base, "https", "http", 1) + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain http served on the TLS port")
		}
	}

	wss := strings.Replace(base, "https", "wss", 1) + "/v1/ws"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dialWith := func(url string, h http.Header) (*websocket.Conn, *http.Response, error) {
		return websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client, HTTPHeader: h})
	}
	for _, tc := range []struct {
		name   string
		url    string
		header http.Header
		status int
	}{
		{"no token", wss, nil, 401},
		{"wrong token", wss, http.Header{"Authorization": {"Bearer nope"}}, 401},
		{"other origin", wss + "?token=" + token, http.Header{"Origin": {"https://evil.example.com"}}, 403},
	} {
		c, resp, err := dialWith(tc.url, tc.header)
		if err == nil {
			c.CloseNow()
			t.Errorf("%s: dial succeeded", tc.name)
			continue
		}
		if resp == nil || resp.StatusCode != tc.status {
			t.Errorf("%s: %v, want %d", tc.name, err, tc.status)
		}
	}

	for _, tc := range []struct {
		name   string
		url    string
		header http.Header
	}{
		{"bearer", wss, http.Header{"Authorization": {"Bearer " + token}, "Origin": {"https://app.example.com"}}},
		{"query", wss + "?token=other-token", nil},
	} {
		c, _, err := dialWith(tc.url, tc.header)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		sub := fmt.Sprintf(`{"op":"subscribe","id":1,"channel":"book","symbols":[%q],"depth":10}`, symbols[0])
		if err := c.Write(ctx, websocket.MessageText, []byte(sub)); err != nil {
			t.Fatal(err)
		}
		var got []string
		for len(got) < 2 {
			_, data, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("%s: read: %v", tc.name, err)
			}
			// Messages queued together come in one frame, '\n'-joined.
			for line := range strings.SplitSeq(string(data), "\n") {
				var m struct{ Type string }
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("%s: %q: %v", tc.name, line, err)
				}
				got = append(got, m.Type)
			}
		}
		if len(got) < 2 || got[0] != "snapshot" || got[1] != "ack" {
			t.Errorf("%s: got %v, want snapshot then ack", tc.name, got)
		}
		c.Close(websocket.StatusNormalClosure, "")
	}
}

// TestTLSBadCertificate: a missing or mismatched certificate ends the start
// with an error, before anything listens.
func TestTLSBadCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, _, _ := selfSigned(t, dir)
	_, otherKey, _ := selfSigned(t, t.TempDir())
	for _, args := range [][]string{
		{"-tls-cert", filepath.Join(dir, "missing.pem"), "-tls-key", otherKey},
		{"-tls-cert", certFile, "-tls-key", otherKey},
	} {
		cfg, err := parseConfig("marketd", append([]string{"-listen", "127.0.0.1:0", "-embedded-addr", "127.0.0.1:0"}, args...),
			func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if svc, err := startService(context.Background(), cfg, discardLogger()); err == nil {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			svc.Wait(ctx)
			t.Errorf("%v: started", args)
		} else if !strings.Contains(err.Error(), "tls") {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// TestSecurityFlags: the tokens from -auth-token (or MARKETD_AUTH_TOKEN)
// and -auth-tokens-file, and the validation of the security flags; no
// error quotes a token.
func TestSecurityFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("  t1\n# c\n\nt2\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("# none\n"), 0o600)
	spaced := filepath.Join(dir, "spaced")
	os.WriteFile(spaced, []byte("sec ret\n"), 0o600)
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	c, err := parseConfig("marketd", []string{"-auth-tokens-file", good}, env(map[string]string{"MARKETD_AUTH_TOKEN": "t0"}), io.Discard)
	if err != nil || strings.Join(c.Tokens, ",") != "t0,t1,t2" {
		t.Fatalf("tokens %q, %v", c.Tokens, err)
	}
	c, err = parseConfig("marketd", []string{"-allowed-origins", "https://a.example, http://localhost:3000", "-conn-rate", "2.5"}, env(nil), io.Discard)
	if err != nil || len(c.AllowedOrigins) != 2 || c.ConnRate != 2.5 || c.ConnBurst != defaultConnBurst || c.HandshakeTimeout != defaultHandshake || len(c.Tokens) != 0 {
		t.Fatalf("%+v, %v", c, err)
	}
	for _, args := range [][]string{
		{"-auth-tokens-file", empty},
		{"-auth-tokens-file", spaced},
		{"-auth-tokens-file", filepath.Join(dir, "missing")},
		{"-auth-token", "sec ret"},
		{"-allowed-origins", "app.example.com"},
		{"-allowed-origins", "https://app.example.com/path"},
		{"-conn-rate", "-1"},
		{"-conn-rate", "1", "-conn-burst", "0"},
		{"-handshake-timeout", "0s"},
		{"-tls-cert", "c.pem"},
		{"-tls-key", "k.pem"},
	} {
		_, err := parseConfig("marketd", args, env(nil), io.Discard)
		if err == nil {
			t.Errorf("%q: accepted", args)
		} else if strings.Contains(err.Error(), "sec ret") {
			t.Errorf("%q: the error quotes the token: %v", args, err)
		}
	}
}
