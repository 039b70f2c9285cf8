package isolationwindows

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"time"
)

// follow copies what is appended to the file at path, from offset, to w until stop is closed,
// then copies what is left up to the end of the file and closes done. A process writes its
// output to such files (they outlive the Backend); follow delivers it to ProcessIO writers.
// Errors of w end the copying (the process is unaffected).
func follow(path string, offset int64, w io.Writer, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	buf := make([]byte, 32<<10)
	drain := func() (bool, error) {
		if f == nil {
			var err error
			if f, err = os.Open(path); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return false, nil
				}
				return false, err
			}
			if _, err := f.Seek(offset, io.SeekStart); err != nil {
				return false, err
			}
		}
		progressed := false
		for {
			n, err := f.Read(buf)
			if n > 0 {
				progressed = true
				if _, werr := w.Write(buf[:n]); werr != nil {
					return progressed, werr
				}
			}
			if errors.Is(err, io.EOF) || (err == nil && n == 0) {
				return progressed, nil
			}
			if err != nil {
				return progressed, err
			}
		}
	}
	timer := time.NewTimer(outputPoll)
	defer timer.Stop()
	for {
		progressed, err := drain()
		if err != nil {
			return
		}
		if progressed {
			timer.Reset(time.Millisecond)
		} else {
			timer.Reset(outputPoll)
		}
		select {
		case <-stop:
			drain()
			return
		case <-timer.C:
		}
	}
}

// fileSize is the size of the file at path, 0 when it does not exist.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
