package s3test

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is what the Proxy does with one request.
type Fault int

// Faults.
const (
	// Pass forwards the request.
	Pass Fault = iota
	// SlowDown answers 503 SlowDown, as a throttling service does.
	SlowDown
	// Reset resets the connection before answering.
	Reset
	// ResetMidBody forwards the request, sends the answer's headers and
	// half its body, then resets the connection.
	ResetMidBody
	// Stall holds the request unanswered until Release or the end of the
	// test: a server that accepted the connection and went silent.
	Stall
)

// Request is what the Proxy tells a fault function about a request.
type Request struct {
	Method  string
	Bucket  string
	Key     string // "" for bucket requests
	List    bool   // a ListObjects(V2) request
	Range   string // the Range header
	IfMatch string // the If-Match header
}

// IsGetObject reports whether the request reads an object.
func (r Request) IsGetObject() bool { return r.Method == http.MethodGet && r.Key != "" }

// Counts are the requests a Proxy forwarded or failed, by kind.
type Counts struct {
	List, Get, Head, Other int
	// GetBytes is the bytes of object bodies sent (or being sent) to
	// clients.
	GetBytes int64
}

// Proxy is a fault-injecting HTTP proxy in front of an S3 server. It
// passes requests unchanged (the Host header included, so signatures
// still verify) unless its fault function says otherwise.
type Proxy struct {
	// URL is the proxy's endpoint, http://127.0.0.1:PORT.
	URL string

	target    *url.URL
	transport *http.Transport
	srv       *http.Server
	closed    chan struct{}

	mu      sync.Mutex
	fault   func(Request) Fault
	before  func(Request)
	counts  Counts
	release chan struct{}
}

// NewProxy starts a proxy to the server at target (an http:// URL) on a
// free port of 127.0.0.1, closed when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := StartProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// StartProxy starts a proxy for programs other than tests (benchmarks,
// which count requests with it). The caller must Close it.
func StartProxy(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		URL:       "http://" + l.Addr().String(),
		target:    u,
		transport: &http.Transport{MaxIdleConnsPerHost: 64, ResponseHeaderTimeout: 30 * time.Second},
		closed:    make(chan struct{}),
		release:   make(chan struct{}),
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(l)
	return p, nil
}

// Close stops the proxy; stalled requests end unanswered.
func (p *Proxy) Close() {
	close(p.closed)
	p.srv.Close()
	p.transport.CloseIdleConnections()
}

// SetFault sets the function deciding each request's fault; nil passes
// every request.
func (p *Proxy) SetFault(f func(Request) Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = f
}

// BeforeForward sets a function called before a request is forwarded (to
// change an object between two reads, say); nil removes it.
func (p *Proxy) BeforeForward(f func(Request)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.before = f
}

// Counts returns the requests seen since the last ResetCounts.
func (p *Proxy) Counts() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts
}

// ResetCounts sets the counts to zero.
func (p *Proxy) ResetCounts() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = Counts{}
}

// Release answers every stalled request (forwarding it) and lets later
// Stall faults through until the fault function is set again.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.release:
	default:
		close(p.release)
	}
}

func parseRequest(r *http.Request) Request {
	path := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, _ := strings.Cut(path, "/")
	q := r.URL.Query()
	return Request{
		Method:  r.Method,
		Bucket:  bucket,
		Key:     key,
		List:    r.Method == http.MethodGet && key == "" && (q.Has("list-type") || q.Has("prefix") || q.Has("delimiter")),
		Range:   r.Header.Get("Range"),
		IfMatch: r.Header.Get("If-Match"),
	}
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := parseRequest(r)
	p.mu.Lock()
	fault, before, release := Pass, p.before, p.release
	if p.fault != nil {
		fault = p.fault(req)
	}
	switch {
	case req.List:
		p.counts.List++
	case req.IsGetObject():
		p.counts.Get++
	case r.Method == http.MethodHead:
		p.counts.Head++
	default:
		p.counts.Other++
	}
	p.mu.Unlock()

	switch fault {
	case SlowDown:
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
		return
	case Reset:
		reset(w)
		return
	case Stall:
		select {
		case <-release:
		case <-r.Context().Done():
			return
		case <-p.closed:
			return
		}
	}
	if before != nil {
		before(req)
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.target.String()+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.Host = r.Host // signed: it must reach the server as the client sent it
	out.ContentLength = r.ContentLength
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	var body io.Reader = resp.Body
	if fault == ResetMidBody {
		body = io.LimitReader(resp.Body, max(resp.ContentLength/2, 0))
	}
	var dst io.Writer = w
	if req.IsGetObject() {
		dst = countingWriter{w, p}
	}
	io.Copy(dst, body)
	if fault == ResetMidBody {
		reset(w)
	}
}

// reset closes the client's connection with a TCP reset.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack() // flushes what was written
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// countingWriter counts object bytes before sending them, so that a client
// that has read them finds them counted.
type countingWriter struct {
	w io.Writer
	p *Proxy
}

func (c countingWriter) Write(b []byte) (int, error) {
	c.p.mu.Lock()
	c.p.counts.GetBytes += int64(len(b))
	c.p.mu.Unlock()
	return c.w.Write(b)
}
