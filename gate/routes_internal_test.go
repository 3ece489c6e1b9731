package gate

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// handleEvents keeps a stream open past the server's WriteTimeout by
// moving the write deadline forward through a ResponseController on the
// statusWriter that serve wraps it in. This is the same pattern at a
// smaller time scale: the stream must outlive WriteTimeout.
func TestStatusWriterPassesWriteDeadline(t *testing.T) {
	const n = 8
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		rc := http.NewResponseController(sw)
		for i := range n {
			_ = rc.SetWriteDeadline(time.Now().Add(time.Second)) // as handleEvents does
			fmt.Fprintf(sw, "data: %d\n\n", i)
			_ = rc.Flush()
			time.Sleep(100 * time.Millisecond)
		}
	}))
	srv.Config.WriteTimeout = 300 * time.Millisecond
	srv.Start()
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			got++
		}
	}
	if got != n {
		t.Fatalf("stream carried %d of %d events before the server cut it (err %v)", got, n, sc.Err())
	}
}
