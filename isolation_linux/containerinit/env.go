package containerinit

import "strings"

// MergeEnv returns base with each NAME=value of extra replacing base's entry of that name;
// names new to base are appended in order.
func MergeEnv(base, extra []string) []string {
	out := append([]string(nil), base...)
	index := make(map[string]int, len(out))
	for i, e := range out {
		index[envName(e)] = i
	}
	for _, e := range extra {
		n := envName(e)
		if i, ok := index[n]; ok {
			out[i] = e
			continue
		}
		index[n] = len(out)
		out = append(out, e)
	}
	return out
}

func envName(e string) string {
	if i := strings.IndexByte(e, '='); i >= 0 {
		return e[:i]
	}
	return e
}
