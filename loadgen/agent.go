package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

var b64 = base64.RawURLEncoding

// agent is one client: its own P-256 key, lease and keep-alive connection.
//
// Executes go over the agent's own lean HTTP/1.1 client (execute and
// below): every microsecond of client CPU is taken from the gate the bench
// measures on the same cores, and net/http's client machinery (two
// goroutines per connection, header maps, request building) cost about as
// much as the proof signature. Leases and anything else rare use net/http.
type agent struct {
	priv    *ecdsa.PrivateKey
	hdr     string       // base64url proof header (typ, alg, jwk), fixed per key
	http    *http.Client // leases (not executes)
	socket  string
	timeout time.Duration // bounds one execute
	lease   string
	auth    string // "DPoP " + lease
	ath     string // base64url SHA-256 of the lease
	execHTU string
	body    []byte
	bh      string
	buf     bytes.Buffer

	// The execute request is reqHead + proof + reqTail, built into req.
	reqHead []byte // request line and headers up to the DPoP value (setLease)
	reqTail []byte // Content-Length, the blank line and the body
	authOK  bool   // auth is a valid header value (net/http refused others)
	req     []byte
	errBody []byte // reused body buffer of small non-200 answers

	// mu guards conn and watchDone against the context watcher (watch);
	// only the agent's goroutine writes them (holding mu) and it reads
	// them without mu.
	mu        sync.Mutex
	conn      net.Conn
	watchDone <-chan struct{} // Done of the context whose end interrupts conn

	br        *bufio.Reader // reads conn; Reset on each dial
	pre       [64]byte      // start of an answer line longer than br's buffer
	reused    bool          // conn carried an answer already
	stopWatch func() bool
}

// newAgent makes a key and an HTTP client bound to socket; timeout bounds
// one request. It does not connect.
func newAgent(socket string, timeout time.Duration) (*agent, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pub, err := priv.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, err
	}
	hdr, err := json.Marshal(map[string]any{
		"typ": "dpop+jwt", "alg": "ES256",
		"jwk": map[string]string{"kty": "EC", "crv": "P-256", "x": b64.EncodeToString(pub[1:33]), "y": b64.EncodeToString(pub[33:])},
	})
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 4, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second,
		DisableCompression: true,
	}
	body := []byte(`{"message":"bench"}`)
	sum := sha256.Sum256(body)
	tail := append([]byte("\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"), body...)
	return &agent{
		priv: priv, hdr: b64.EncodeToString(hdr),
		http:   &http.Client{Transport: tr, Timeout: timeout},
		socket: socket, timeout: timeout,
		execHTU: execHTU,
		body:    body, bh: b64.EncodeToString(sum[:]),
		reqTail: tail,
	}, nil
}

// jwk returns the agent's public JWK (for the lease request).
func (a *agent) jwk() map[string]string {
	pub, _ := a.priv.PublicKey.Bytes()
	return map[string]string{"kty": "EC", "crv": "P-256", "x": b64.EncodeToString(pub[1:33]), "y": b64.EncodeToString(pub[33:])}
}

// openLease takes a lease for agentID (TTL ttl).
func (a *agent) openLease(ctx context.Context, agentID string, ttl time.Duration) error {
	req, err := json.Marshal(map[string]any{
		"dpop_jwk": a.jwk(), "agent_id": agentID, "scopes": []string{"tools:call"},
		"ttl_seconds": int64(ttl / time.Second),
	})
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost/v1/leases", bytes.NewReader(req))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	res, err := a.http.Do(hr)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusOK {
		return fmt.Errorf("lease: HTTP %d: %s", res.StatusCode, bytes.TrimSpace(data))
	}
	var lr struct {
		LeaseJWT string `json:"lease_jwt"`
	}
	if err := json.Unmarshal(data, &lr); err != nil || lr.LeaseJWT == "" {
		return fmt.Errorf("lease: answer without lease_jwt: %s", bytes.TrimSpace(data))
	}
	a.setLease(lr.LeaseJWT)
	return nil
}

// setLease makes token the agent's lease.
func (a *agent) setLease(token string) {
	a.lease, a.auth = token, "DPoP "+token
	sum := sha256.Sum256([]byte(token))
	a.ath = b64.EncodeToString(sum[:])
	a.authOK = validHeaderValue(a.auth)
	h := append(a.reqHead[:0], "POST "+execPath+" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAuthorization: "...)
	h = append(h, a.auth...)
	a.reqHead = append(h, "\r\nDPoP: "...)
}

// proof signs a fresh DPoP proof for one execute.
func (a *agent) proof(now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	b := &a.buf
	b.Reset()
	b.WriteString(`{"jti":"`)
	b.WriteString(b64.EncodeToString(jti[:]))
	b.WriteString(`","htm":"POST","htu":"`)
	b.WriteString(a.execHTU)
	b.WriteString(`","iat":`)
	b.WriteString(strconv.FormatInt(now.Unix(), 10))
	b.WriteString(`,"ath":"`)
	b.WriteString(a.ath)
	b.WriteString(`","bh":"`)
	b.WriteString(a.bh)
	b.WriteString(`"}`)
	input := a.hdr + "." + b64.EncodeToString(b.Bytes())
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, a.priv, digest[:])
	if err != nil {
		return "", err
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64.EncodeToString(sig[:]), nil
}

// The execute request and the limits of its answer.
const (
	execPath = "/v1/actions/echo/execute"
	execHTU  = "http://localhost" + execPath
	// maxAnswerBody is how much of an answer body is read (the rest is not:
	// the connection is dropped), as the net/http client's LimitReader did.
	maxAnswerBody = 1 << 20
	// maxAnswerHead bounds the status lines and headers of an answer and
	// the informational answers before it (net/http's default
	// MaxResponseHeaderBytes).
	maxAnswerHead = 10 << 20
	// readBufSize is the connection's read buffer: an answer's header
	// lines and the chunk lines of a chunked body must fit in it.
	readBufSize = 4096
	// dialTimeout bounds one connect (also bounded by the request timeout).
	dialTimeout = 5 * time.Second
)

// errAnswer is a malformed or unsupported answer (reported as "transport").
var errAnswer = errors.New("loadgen: malformed HTTP answer")

// execute sends one echo execute and returns "" on 200, else the answer's
// JSON error code ("http_<status>" when it has none), "transport" for a
// failure without a usable answer, "canceled" when ctx ended.
//
// It keeps one HTTP/1.1 connection: the request goes out in one write and
// the answer is read to its end (Content-Length, chunked, or until close),
// so the connection can carry the next request. Any I/O or framing error,
// a "Connection: close" or a body that ends with the connection drops the
// connection, and the next execute dials a new one. It reads answers as
// net/http's client did (TestExecuteAnswers compares the two).
func (a *agent) execute(ctx context.Context) string {
	done := ctx.Done()
	if isDone(done) {
		return "canceled"
	}
	now := time.Now()
	p, err := a.proof(now)
	if err != nil {
		return "client_error"
	}
	if !a.authOK {
		return "transport" // net/http refused to send such a header
	}
	b := append(a.req[:0], a.reqHead...)
	b = append(b, p...)
	a.req = append(b, a.reqTail...)
	code, keep := a.roundTrip(ctx, done, now.Add(a.timeout))
	if !keep {
		a.dropConn()
	}
	return code
}

// roundTrip writes a.req and reads the answer by deadline. keep reports
// whether the connection can carry another request.
func (a *agent) roundTrip(ctx context.Context, done <-chan struct{}, deadline time.Time) (code string, keep bool) {
	if a.conn != nil && a.br.Buffered() > 0 {
		a.dropConn() // bytes nobody asked for: the connection is out of step
	}
	for attempt := 0; ; attempt++ {
		if a.conn == nil {
			if err := a.dial(ctx, deadline); err != nil {
				return ioCode(done), false
			}
		}
		a.watch(ctx, done)
		if err := a.conn.SetDeadline(deadline); err != nil {
			return ioCode(done), false
		}
		// Checked after SetDeadline: a watcher that fired before it had its
		// deadline overwritten, but ctx is done by then.
		if isDone(done) {
			return "canceled", true
		}
		n, err := a.conn.Write(a.req)
		if err == nil {
			break
		}
		// Like net/http: a reused connection the server closed while idle
		// fails the write before a byte went out; then (only then) the same
		// request is sent again, once, on a new connection.
		retry := n == 0 && a.reused && attempt == 0 && !errors.Is(err, os.ErrDeadlineExceeded)
		a.dropConn()
		if !retry {
			return ioCode(done), false
		}
	}
	status, body, keep, err := a.readAnswer()
	if err != nil {
		return ioCode(done), false
	}
	a.reused = true
	if status == http.StatusOK {
		return "", keep
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		return "http_" + strconv.Itoa(status), keep
	}
	return e.Error, keep
}

// ioCode is the code of an I/O failure: "canceled" once done is closed.
func ioCode(done <-chan struct{}) string {
	if isDone(done) {
		return "canceled"
	}
	return "transport"
}

// isDone reports whether done is closed (false for nil).
func isDone(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// dial connects to the gate's socket.
func (a *agent) dial(ctx context.Context, deadline time.Time) error {
	d := net.Dialer{Timeout: dialTimeout, Deadline: deadline}
	c, err := d.DialContext(ctx, "unix", a.socket)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.conn = c
	a.mu.Unlock()
	if a.br == nil {
		a.br = bufio.NewReaderSize(c, readBufSize)
	} else {
		a.br.Reset(c)
	}
	a.reused = false
	return nil
}

// dropConn closes the connection (if any).
func (a *agent) dropConn() {
	a.mu.Lock()
	c := a.conn
	a.conn = nil
	a.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// watch makes the end of ctx (whose Done is done) interrupt the agent's
// connection, by a deadline in the past. One watcher stays registered per
// context, not per execute: a bench agent runs thousands of executes under
// one context.
func (a *agent) watch(ctx context.Context, done <-chan struct{}) {
	if done == a.watchDone {
		return
	}
	if a.stopWatch != nil {
		a.stopWatch()
		a.stopWatch = nil
	}
	a.mu.Lock()
	a.watchDone = done
	a.mu.Unlock()
	if done == nil {
		return
	}
	a.stopWatch = context.AfterFunc(ctx, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		// A watcher of an earlier context may run late; it must not
		// interrupt a request made under another one.
		if a.watchDone == done && a.conn != nil {
			_ = a.conn.SetDeadline(time.Unix(1, 0)) // past: blocked I/O fails now
		}
	})
}

// close ends the agent's connections.
func (a *agent) close() {
	if a.stopWatch != nil {
		a.stopWatch()
		a.stopWatch = nil
	}
	a.dropConn()
	a.http.CloseIdleConnections()
}

// answerHead is what readHead keeps of an answer's status line and headers.
type answerHead struct {
	status  int
	length  int64 // Content-Length; -1 when absent
	chunked bool  // Transfer-Encoding: chunked
	close   bool  // the connection ends after this answer
	upgrade bool  // an Upgrade header and a Connection "upgrade" token
}

// readAnswer reads one answer to its end: its status, its body when the
// status is not 200 (at most maxAnswerBody bytes), and whether the
// connection can carry another request. An error means the connection is
// unusable.
func (a *agent) readAnswer() (status int, body []byte, keep bool, err error) {
	var h answerHead
	budget := maxAnswerHead
	for {
		if h, err = readHead(a.br, &a.pre, &budget); err != nil {
			return 0, nil, false, err
		}
		// Informational answers (but 101, which is final as in net/http)
		// have no body: the answer follows.
		if h.status < 100 || h.status > 199 || h.status == http.StatusSwitchingProtocols {
			break
		}
	}
	want := h.status != http.StatusOK // the body is only needed for its error code
	switch {
	case h.status == http.StatusSwitchingProtocols && h.upgrade:
		// The connection now speaks another protocol: net/http hands it
		// over as the body.
		body, _, err := a.readBody(a.br, want)
		return h.status, body, false, err
	case h.status == http.StatusSwitchingProtocols || h.status == http.StatusNoContent || h.status == http.StatusNotModified:
		return h.status, nil, !h.close, nil
	case h.chunked:
		// Only the chunked coding was accepted; the chunks are read by
		// net/http's own reader, then the trailer section is skipped.
		body, complete, err := a.readBody(httputil.NewChunkedReader(a.br), want)
		if err != nil {
			return 0, nil, false, err
		}
		if complete {
			if err := skipTrailer(a.br, &a.pre); err != nil {
				return 0, nil, false, err
			}
		}
		return h.status, body, complete && !h.close, nil
	case h.length < 0: // delimited by the end of the connection
		body, _, err := a.readBody(a.br, want)
		return h.status, body, false, err
	}
	n, keep := h.length, !h.close
	if n > maxAnswerBody {
		n, keep = maxAnswerBody, false
	}
	if !want {
		_, err := a.br.Discard(int(n))
		return h.status, nil, keep, err
	}
	if n <= readBufSize {
		if cap(a.errBody) < readBufSize {
			a.errBody = make([]byte, readBufSize)
		}
		body = a.errBody[:n]
	} else {
		body = make([]byte, n) // not kept: an agent holds no large buffer
	}
	if _, err := io.ReadFull(a.br, body); err != nil {
		return 0, nil, false, err
	}
	return h.status, body, keep, nil
}

// readBody reads r to its end or to maxAnswerBody bytes, whichever comes
// first: into body when want is set, else discarded. complete reports that
// r ended before the limit.
func (a *agent) readBody(r io.Reader, want bool) (body []byte, complete bool, err error) {
	lr := &io.LimitedReader{R: r, N: maxAnswerBody}
	if want {
		body, err = io.ReadAll(lr)
	} else {
		_, err = io.Copy(io.Discard, lr)
	}
	return body, lr.N > 0, err
}

// readHead reads a status line and the headers up to the blank line, at
// most *budget bytes (less what it read); pre is readLine's. The framing
// headers (Content-Length, Transfer-Encoding, Connection) are checked as
// net/http's client checks them; others are skipped.
func readHead(br *bufio.Reader, pre *[64]byte, budget *int) (answerHead, error) {
	h := answerHead{length: -1}
	line, n, err := readLine(br, pre)
	if err != nil {
		return h, err
	}
	if *budget -= n; *budget < 0 {
		return h, errAnswer
	}
	// "HTTP/" DIGIT "." DIGIT SP 3DIGIT [SP reason], as net/http reads it
	// (which takes any version and spaces before the code).
	if len(line) < 9 || string(line[:5]) != "HTTP/" || !isDigit(line[5]) || line[6] != '.' || !isDigit(line[7]) || line[8] != ' ' {
		return h, errAnswer
	}
	http10 := line[5] < '1' || line[5] == '1' && line[7] == '0' // before HTTP/1.1
	code := bytes.TrimLeft(line[9:], " ")
	if len(code) < 3 || (len(code) > 3 && code[3] != ' ') {
		return h, errAnswer
	}
	for _, c := range code[:3] {
		if !isDigit(c) {
			return h, errAnswer
		}
		h.status = h.status*10 + int(c-'0')
	}
	var te, keepAlive, upgradeToken, upgradeHeader, framing bool
	for first := true; ; first = false {
		line, n, err := readLine(br, pre)
		if err != nil {
			return h, err
		}
		if *budget -= n; *budget < 0 {
			return h, errAnswer
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold: continues the previous header.
			if first || framing {
				return h, errAnswer
			}
			continue
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || !validHeaderName(name) || !validHeaderValue(value) {
			return h, errAnswer
		}
		long := n > len(line)+2 // only the line's start is in line
		framing = true
		switch {
		case asciiEqualFold(name, "Content-Length"):
			v, ok := parseLength(trimOWS(value))
			if long || !ok || (h.length >= 0 && h.length != v) {
				return h, errAnswer
			}
			h.length = v
		case asciiEqualFold(name, "Transfer-Encoding"):
			// net/http reads HTTP/1.0 bodies without a transfer coding,
			// and knows only "chunked".
			if http10 {
				continue
			}
			if long || te || !asciiEqualFold(trimOWS(value), "chunked") {
				return h, errAnswer
			}
			te = true
		case asciiEqualFold(name, "Connection"):
			if long {
				return h, errAnswer
			}
			for tok := range bytes.SplitSeq(value, []byte{','}) {
				switch tok = trimOWS(tok); {
				case asciiEqualFold(tok, "close"):
					h.close = true
				case asciiEqualFold(tok, "keep-alive"):
					keepAlive = true
				case asciiEqualFold(tok, "upgrade"):
					upgradeToken = true
				}
			}
		case asciiEqualFold(name, "Upgrade"):
			upgradeHeader = upgradeHeader || len(trimOWS(value)) > 0
			framing = false
		default:
			framing = false
		}
	}
	if te {
		// The transfer coding wins over a Content-Length (as net/http);
		// an answer with both is suspect, so its connection is not reused.
		h.chunked = true
		if h.length >= 0 {
			h.length, h.close = -1, true
		}
	}
	if http10 && !keepAlive {
		h.close = true
	}
	h.upgrade = upgradeToken && upgradeHeader
	return h, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipTrailer reads the trailer section after a chunked body's last chunk,
// up to its blank line; pre is readLine's.
func skipTrailer(br *bufio.Reader, pre *[64]byte) error {
	budget := maxAnswerHead
	for {
		line, n, err := readLine(br, pre)
		if err != nil {
			return err
		}
		if budget -= n; budget < 0 {
			return errAnswer
		}
		if len(line) == 0 {
			return nil
		}
	}
}

// readLine reads one line and returns it without its end ("\r\n" or "\n")
// and the number of bytes consumed. A line longer than br's buffer is
// consumed whole and only its first len(pre) bytes come back (copied into
// pre). line is valid until the next read from br.
func readLine(br *bufio.Reader, pre *[64]byte) (line []byte, n int, err error) {
	line, err = br.ReadSlice('\n')
	n = len(line)
	if err == bufio.ErrBufferFull {
		line = pre[:copy(pre[:], line)]
		for err == bufio.ErrBufferFull {
			var rest []byte
			rest, err = br.ReadSlice('\n')
			n += len(rest)
		}
		if err != nil {
			return nil, n, err
		}
		return line, n, nil
	}
	if err != nil {
		if err == io.EOF && n > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, n, err
	}
	line = line[:len(line)-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, n, nil
}

// parseLength parses a Content-Length value: decimal digits only (as
// net/http: no sign, no spaces, at most 63 bits).
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// trimOWS trims spaces and tabs at both ends of v.
func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// asciiEqualFold reports whether b equals s (ASCII), ignoring case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// validHeaderName reports whether name is a header name net/http reads: a
// non-empty RFC 9110 token, or one with spaces (which net/http accepts but
// never takes for a name it knows, such as "Content-Length ").
func validHeaderName(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		ok := '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' ||
			strings.IndexByte(" !#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v is a valid header value: no control
// bytes but tab (net/http's check, sending and reading).
func validHeaderValue[T string | []byte](v T) bool {
	for i := range len(v) {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
