// Command hello-app is the example application of the trellis quickstart: a small HTTP server
// that says which instance answered. It listens on $PORT (8080 by default), answers / with a
// greeting naming its instance, /healthz with 200, /env with its environment, and stops
// gracefully on SIGTERM (or Ctrl-Break on Windows), as trellis asks instances to.
//
// `make run` builds it for Linux into a droplet (a .tgz with the binary) that the dev cluster
// serves; the Windows build stands in for a .NET app on a Windows cell.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello from trellis"
	}
	started := time.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		host, _ := os.Hostname()
		fmt.Fprintf(w, "%s: instance %s (%s) on %s, up %s\n", greeting, envOr("INSTANCE_INDEX", "?"),
			envOr("INSTANCE_GUID", "?"), host, time.Since(started).Round(time.Second))
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, _ *http.Request) {
		env := os.Environ()
		sort.Strings(env)
		fmt.Fprintln(w, strings.Join(env, "\n"))
	})
	mux.HandleFunc("POST /exit", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "exiting with status 1")
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		go func() {
			time.Sleep(100 * time.Millisecond)
			log.Printf("exiting with status 1, as asked")
			os.Exit(1)
		}()
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("hello-app listening on :%s", port)
	select {
	case err := <-errc:
		log.Fatal(err)
	case <-ctx.Done():
	}
	log.Printf("stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
