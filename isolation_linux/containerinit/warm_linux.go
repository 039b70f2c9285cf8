package containerinit

import (
	"encoding/json"
	"os"
	"reflect"
)

// PoolLabel is the label (argv[1]) of an init the backend starts ahead of any container, for
// its pool; handles cannot contain "@", so no container's own init has it. Such an init
// warms up while it waits (warmUp).
const PoolLabel = "@pool"

// warmUp pays, in a pooled init while it waits for a container, the first-use costs that
// every init's start would otherwise pay on the container's critical path: encoding/json
// building its decoders for the Config a container's config.json is read into and for the
// protocol's messages, and the page faults of the code that does it. Decoding config.json
// took about 0.2 ms of CPU in a cold init and 0.1 ms in a warmed one, for a warm-up of
// 0.17 ms (docs/isolation-linux.md). A fresh init started for one container has nothing to
// gain and skips it.
func warmUp() {
	// The runtime's poller, which the init's socket is served through, starts at the first
	// descriptor given to it: an epoll instance and its wake-up descriptor, made here.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	for _, v := range []any{&Config{}, &StartMessage{}, &Request{}, &Response{}, &SyncMessage{}} {
		full := reflect.New(reflect.TypeOf(v).Elem())
		populate(full.Elem(), 0)
		if b, err := json.Marshal(full.Interface()); err == nil {
			_ = json.Unmarshal(b, v)
		}
	}
}

// populate gives v a value in every exported field, pointer, slice element and map entry
// down to a bounded depth, so that encoding it walks every type below v's.
func populate(v reflect.Value, depth int) {
	if depth > 12 {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		populate(v.Elem(), depth+1)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				populate(v.Field(i), depth+1)
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		populate(v.Index(0), depth+1)
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), 1)
		e := reflect.New(v.Type().Elem()).Elem()
		populate(e, depth+1)
		m.SetMapIndex(reflect.ValueOf("k").Convert(v.Type().Key()), e)
		v.Set(m)
	}
}
