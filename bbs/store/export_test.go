package store

// LeaseStreams returns how many lease keep-alive streams s holds open, over all its clients.
func LeaseStreams(s *Store) int {
	n := 0
	for _, r := range s.renew {
		n += int(r.open.Load())
	}
	return n
}
