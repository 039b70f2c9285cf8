package logs

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseLine feeds arbitrary bytes, as a damaged log file would hold, to the line parser,
// and checks that every line the writer can produce parses back to itself.
func FuzzParseLine(f *testing.F) {
	f.Add("2025-03-04T05:06:07.000000008Z [APP/12] ERR text", "APP", 3, "hello ] [x/1] OUT")
	f.Add("garbage", "CELL", -1, "")
	f.Add("2025-03-04T05:06:07Z [/] OUT ", "HEALTH", 0, "\r")
	f.Fuzz(func(t *testing.T, raw, source string, index int, text string) {
		parseLine([]byte(raw)) // must not panic

		if validSource(source) != nil || index < NoIndex || strings.ContainsRune(text, '\n') {
			return
		}
		l := Line{Time: time.Unix(1700000000, 123).UTC(), Source: source, Index: index, Stream: StreamErr, Text: text}
		got := parseLine([]byte(l.String()))
		if !got.Time.Equal(l.Time) {
			t.Fatalf("time %v, want %v", got.Time, l.Time)
		}
		got.Time = l.Time
		if got != l {
			t.Fatalf("parse(%q) = %+v, want %+v", l.String(), got, l)
		}
	})
}
