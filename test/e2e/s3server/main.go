// Command s3server is an S3-compatible server (github.com/johannesboyne/gofakes3, in memory) for the e2e tests:
// it serves path-style buckets on a loopback address until it is killed. It is built and started by the tests
// (test/e2e), as they do with Prometheus; it is not part of Strata.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "s3server:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "Address to listen on (loopback).")
	buckets := flag.String("buckets", "", "Comma-separated buckets created at start.")
	slowBucket := flag.String("slow-bucket", "", "Bucket whose object reads (GET of a key) wait -get-delay before they are answered.")
	getDelay := flag.Duration("get-delay", 0, "Wait before answering a GET of an object of -slow-bucket.")
	putDelay := flag.Duration("put-delay", 0, "Wait before storing a PUT of an object of -slow-bucket (changeable at run time, see /-/delays).")
	deleteDelay := flag.Duration("delete-delay", 0, "Wait before deleting an object of -slow-bucket (changeable at run time, see /-/delays).")
	flag.Parse()

	backend := s3mem.New()
	for _, b := range strings.Split(*buckets, ",") {
		if b == "" {
			continue
		}
		if err := backend.CreateBucket(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	handler := gofakes3.New(backend, gofakes3.WithHostBucket(false)).Server()
	if *slowBucket != "" && *getDelay > 0 {
		handler = slowGets(handler, "/"+*slowBucket+"/", *getDelay)
	}
	if *slowBucket != "" {
		d := &writeDelays{}
		d.put.Store(int64(*putDelay))
		d.del.Store(int64(*deleteDelay))
		handler = d.wrap(handler, "/"+*slowBucket+"/")
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// The test waits for this line to know the address.
	fmt.Printf("listening on %s\n", l.Addr())
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(l)
}

// slowGets delays the GETs of objects (not listings) under prefix by delay, or until the client goes away.
func slowGets(next http.Handler, prefix string, delay time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, prefix) && len(r.URL.Path) > len(prefix) {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// writeDelays delays the PUTs and DELETEs of objects (not of buckets) under a prefix. The delays can be changed
// while the server runs with `POST /-/delays?put=<duration>&delete=<duration>` (no S3 bucket is named "-"), so a
// test can write its input at full speed and then slow the writes of the process it means to kill mid-way.
type writeDelays struct {
	put, del atomic.Int64 // nanoseconds
}

func (d *writeDelays) wrap(next http.Handler, prefix string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/-/delays" {
			for key, v := range map[string]*atomic.Int64{"put": &d.put, "delete": &d.del} {
				if s := r.URL.Query().Get(key); s != "" {
					dur, err := time.ParseDuration(s)
					if err != nil {
						http.Error(w, err.Error(), http.StatusBadRequest)
						return
					}
					v.Store(int64(dur))
				}
			}
			fmt.Fprintf(w, "put=%s delete=%s\n", time.Duration(d.put.Load()), time.Duration(d.del.Load()))
			return
		}
		var delay time.Duration
		if strings.HasPrefix(r.URL.Path, prefix) && len(r.URL.Path) > len(prefix) {
			switch r.Method {
			case http.MethodPut:
				delay = time.Duration(d.put.Load())
			case http.MethodDelete:
				delay = time.Duration(d.del.Load())
			}
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
